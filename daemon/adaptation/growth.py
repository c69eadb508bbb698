"""Class-incremental growth: widen the output layer for labels never seen before.

The head's last ``nn.Linear`` gets new output rows, initialised as ``nn.Linear`` would
(uniform in ``±1/sqrt(fan_in)``, drawn from the injected generator). The learned rows are copied
bit for bit, and the optimizer state of the rest (Adam moments, step counts) is kept, the new
rows' moments starting at zero. The model's ``n_outputs`` and config follow, so snapshots
describe (and rebuild) the grown architecture.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from driftd.learning.learner import OnlineLearner


def output_layer(head: nn.Module, n_outputs: int) -> tuple[str, nn.Linear]:
    """Name and module of the head's last ``nn.Linear`` producing ``n_outputs``.

    Raises:
        ValueError: The head has no such layer (e.g. a factory head ending otherwise).
    """
    found = [(name, m) for name, m in head.named_modules() if isinstance(m, nn.Linear)]
    if not found or found[-1][1].out_features != n_outputs:
        raise ValueError("class growth needs a head ending with an nn.Linear over the classes")
    return found[-1]


def grow_outputs(
    learner: OnlineLearner, n_outputs: int, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Grow the live model's output layer to ``n_outputs``.

    Returns:
        The new rows per head ``state_dict`` key (``<layer>.weight``, ``<layer>.bias``), for
        padding stored heads the same way.
    """
    model: Any = learner.model
    name, layer = output_layer(model.head, model.n_outputs)
    extra = n_outputs - layer.out_features
    if extra <= 0:
        return {}
    bound = 1.0 / math.sqrt(layer.in_features) if layer.in_features else 0.0
    prefix = f"{name}." if name else ""
    rows: dict[str, torch.Tensor] = {}
    replaced: dict[nn.Parameter, nn.Parameter] = {}
    for attr in ("weight", "bias"):
        old = getattr(layer, attr)
        if old is None:
            continue
        shape = (extra, *old.shape[1:])
        fresh = (torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1) * bound
        new_rows = fresh.to(old.device, old.dtype)
        grown = nn.Parameter(torch.cat([old.detach(), new_rows]), requires_grad=old.requires_grad)
        setattr(layer, attr, grown)
        replaced[old] = grown
        rows[prefix + attr] = new_rows
    layer.out_features = n_outputs
    _move_optimizer_state(learner.optimizer, replaced, extra)
    model.n_outputs = n_outputs
    model.config["n_outputs"] = n_outputs
    return rows


def _move_optimizer_state(
    optimizer: torch.optim.Optimizer, replaced: dict[nn.Parameter, nn.Parameter], extra: int
) -> None:
    for group in optimizer.param_groups:
        group["params"] = [replaced.get(p, p) for p in group["params"]]
    for old, new in replaced.items():
        state = optimizer.state.pop(old, None)
        if not state:
            continue
        moved: dict[str, Any] = {}
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == old.shape[0]:
                value = torch.cat([value, value.new_zeros((extra, *value.shape[1:]))])
            moved[key] = value
        optimizer.state[new] = moved
