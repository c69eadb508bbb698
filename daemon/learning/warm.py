"""Warm start: pay the one-off costs of the first step before the daemon says it is ready.

The first optimizer step imports ``torch._dynamo`` (seconds on a busy machine); without this, it
lands inside the first event's latency. (river's detectors are imported with the modules that
build the drift monitor, before this runs.)
"""

from __future__ import annotations

import time

import torch
from torch import nn


def warm_up(device: torch.device | str = "cpu") -> float:
    """One throwaway forward, backward and Adam step on ``device``.

    Returns the seconds it took. Touches no global RNG state and no model of the daemon's.
    """
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(0)
    layer = nn.Linear(4, 2).to(device)
    optimizer = torch.optim.Adam(layer.parameters(), lr=1e-3)
    x = torch.randn(8, 4, generator=generator).to(device)
    y = torch.zeros(8, dtype=torch.long, device=device)
    nn.functional.cross_entropy(layer(x), y).backward()  # type: ignore[no-untyped-call]
    optimizer.step()
    return time.perf_counter() - started
