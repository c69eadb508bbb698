"""Does the shared trunk still serve the new domain? Decided on the events after a drift.

Freezing the trunk after a drift assumes the change is in the head. When the change moves the
signal to other input columns, the first layers must relearn, and a frozen trunk only delays
that. :func:`trunk_still_serves` asks the post-drift events: two fresh heads are fitted on the
first part of them, one over the frozen trunk's features and one with a copy of the trunk free
to learn; both are scored on the rest, against a constant predictor (the class prior, or the
mean target). The trunk serves if the frozen candidate gains at least ``1 - tolerance`` of what
the free one gains over that constant: then the change is in the head. If neither gains, nothing
argues for releasing it. The live model is left untouched.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class TrunkEvidence:
    """The comparison behind a verdict (losses on the held-out post-drift events)."""

    serves: bool
    frozen_loss: float
    free_loss: float
    constant_loss: float
    events: int

    def describe(self) -> str:
        """One line for the log."""
        verdict = "serves" if self.serves else "does not serve"
        return (
            f"trunk {verdict} the new domain: held-out loss with it frozen {self.frozen_loss:.3f}, "
            f"free {self.free_loss:.3f}, constant {self.constant_loss:.3f}, on {self.events} events"
        )


def trunk_still_serves(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    loss_fn: LossFn,
    generator: torch.Generator,
    tolerance: float = 0.25,
    epochs: int = 8,
    lr: float = 1e-2,
    batch_size: int = 32,
) -> TrunkEvidence:
    """Compare a fresh head on the frozen trunk with one on a free copy of it (see the module).

    Args:
        model: A split model (``inputs`` optional, ``shared``, ``new_head(generator)``).
        x: Post-drift inputs, oldest first; the last third is held out.
        y: Their targets.
        loss_fn: Per-event loss of outputs against targets.
        generator: Random source of the candidate heads and the shuffles.
        tolerance: Share of the free trunk's gain the frozen one may miss and still serve.
        epochs: Passes over the fitting part.
        lr: Adam's rate for the candidates.
        batch_size: Events per candidate step.
    """
    split = max(1, (2 * len(x)) // 3)
    inputs: nn.Module = getattr(model, "inputs", None) or nn.Identity()
    with torch.no_grad():
        standardized = inputs(x)
    fit_x, fit_y = standardized[:split], y[:split]
    held_x, held_y = standardized[split:], y[split:]
    trunk: nn.Module = model.shared  # type: ignore[assignment]
    with torch.no_grad():
        features = trunk(standardized)
    frozen_head = model.new_head(generator)  # type: ignore[operator]
    _fit(frozen_head, features[:split], fit_y, loss_fn, generator, epochs, lr, batch_size)
    free_trunk = copy.deepcopy(trunk)
    free_trunk.requires_grad_(True)
    free = nn.Sequential(free_trunk, model.new_head(generator))  # type: ignore[operator]
    _fit(free, fit_x, fit_y, loss_fn, generator, epochs, lr, batch_size)
    with torch.no_grad():
        frozen_loss = float(loss_fn(frozen_head(features[split:]), held_y).mean())
        free_loss = float(loss_fn(free(held_x), held_y).mean())
        constant = _constant_outputs(fit_y, int(getattr(model, "n_outputs", 1)))
        constant_loss = float(loss_fn(constant.expand(len(held_y), -1), held_y).mean())
    free_gain, frozen_gain = constant_loss - free_loss, constant_loss - frozen_loss
    serves = free_gain <= 0 or frozen_gain >= (1.0 - tolerance) * free_gain
    return TrunkEvidence(serves, frozen_loss, free_loss, constant_loss, len(x))


def _constant_outputs(y: Tensor, n_outputs: int) -> Tensor:
    """The best constant output on ``y``: log class frequencies, or the mean target."""
    if y.dtype in (torch.int64, torch.int32):
        counts = torch.bincount(y, minlength=n_outputs).to(torch.float32) + 0.5
        return (counts / counts.sum()).log().unsqueeze(0)
    return y.float().mean(dim=0, keepdim=True)


def _fit(
    module: nn.Module,
    x: Tensor,
    y: Tensor,
    loss_fn: LossFn,
    generator: torch.Generator,
    epochs: int,
    lr: float,
    batch_size: int,
) -> None:
    module.train()
    optimizer = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=lr)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            rows = order[start : start + batch_size].to(x.device)
            optimizer.zero_grad(set_to_none=True)
            loss_fn(module(x[rows]), y[rows]).mean().backward()  # type: ignore[no-untyped-call]
            optimizer.step()
    module.eval()
