"""What the pruning cycle acts on (a learner-like :class:`Trainable`) and what it reports."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

Replay = Callable[[], tuple[Tensor, Tensor]]


class Trainable(Protocol):
    """What the pruner acts on (an ``OnlineLearner`` fits)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer

    def event_losses(self, outputs: Tensor, y: Tensor) -> Tensor:
        """Per-event loss of ``outputs`` against targets ``y``."""
        ...


@dataclass(frozen=True)
class PruneReport:
    """What a pruning event (or a recovery) did.

    Attributes:
        step: Learning step it happened at.
        targets: Scheduled sparsity per part.
        removed: Weights (unstructured) or units (structured) pruned by this event, net of
            those restored so far.
        parameters: Scalar parameters of the model afterwards.
        fine_tune_loss: Mean label loss of the last fine-tuning pass.
    """

    step: int
    targets: dict[str, float]
    removed: int
    parameters: int
    fine_tune_loss: float | None
