"""Warm start: pay the one-off costs of the first step before the daemon says it is ready.

The first optimizer step imports ``torch._dynamo`` (seconds on a busy machine) and the drift
monitor imports river lazily; without this, both land inside the first event's latency.
"""

from __future__ import annotations

import importlib
import time

import torch
from torch import nn


def warm_up(device: torch.device | str = "cpu") -> float:
    """One throwaway forward, backward and Adam step on ``device``, plus the river import.

    Returns the seconds it took. Touches no global RNG state and no model of the daemon's.
    """
    started = time.perf_counter()
    importlib.import_module("river.drift")
    generator = torch.Generator().manual_seed(0)
    layer = nn.Linear(4, 2).to(device)
    optimizer = torch.optim.Adam(layer.parameters(), lr=1e-3)
    x = torch.randn(8, 4, generator=generator).to(device)
    y = torch.zeros(8, dtype=torch.long, device=device)
    nn.functional.cross_entropy(layer(x), y).backward()  # type: ignore[no-untyped-call]
    optimizer.step()
    return time.perf_counter() - started
