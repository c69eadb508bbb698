"""What a :class:`~driftd.pruning.pruner.Pruner` does: criterion, scope, schedule, recovery."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from driftd.pruning.schedule import SparsitySchedule

Criterion = Literal["magnitude", "taylor", "sparse", "output_error", "entropy"]
Scope = Literal["layer", "global"]
Recovery = Literal["greedy", "random"]
CRITERIA: tuple[Criterion, ...] = ("magnitude", "taylor", "sparse", "output_error", "entropy")


@dataclass(frozen=True)
class PruningPolicy:
    """How to prune, re-adapt and recover (the settings map onto this one to one).

    Attributes:
        structured: Remove whole units and shrink the layers (True) or zero single weights
            behind masks (False).
        criterion: ``magnitude`` (L1), ``taylor`` (``|w * grad|`` over recent steps),
            ``sparse`` (an L1 / group-lasso penalty on the loss, then the magnitude cut),
            ``output_error`` (measured change of the output when removed) or ``entropy``
            (activation entropy; structured only).
        scope: ``layer`` (each layer to its part's sparsity) or ``global`` (one ranking per part).
        schedule: Cubic sparsity targets per part over the pruning events.
        recovery: Which pruned weights/units come back when the pruned model is not good
            enough: ``greedy`` (most important first) or ``random`` (drawn from the generator).
        restore_fraction: Share of the event's pruned weights/units restored per recovery.
        fine_tune_epochs: Passes over the replay window after pruning (and each recovery).
        fine_tune_batch_size: Events per fine-tuning step.
        distill_weight: Share of the distillation loss (teacher: the unpruned model); 0: off.
        temperature: Distillation temperature.
        penalty_strength: Strength of the ``sparse`` criterion's penalty.
        output_error_measure: ``output`` or ``loss`` (``output_error`` criterion, structured).
        entropy_bins: Histogram bins of the ``entropy`` criterion.
        min_units: Units each layer keeps at least (structured).
        task: ``classification`` or ``regression`` (the distillation's form).
    """

    structured: bool = False
    criterion: Criterion = "magnitude"
    scope: Scope = "layer"
    schedule: SparsitySchedule = field(default_factory=SparsitySchedule)
    recovery: Recovery = "greedy"
    restore_fraction: float = 0.5
    fine_tune_epochs: int = 1
    fine_tune_batch_size: int = 64
    distill_weight: float = 0.0
    temperature: float = 2.0
    penalty_strength: float = 1e-4
    output_error_measure: Literal["output", "loss"] = "output"
    entropy_bins: int = 16
    min_units: int = 1
    task: str = "classification"

    def __post_init__(self) -> None:
        if self.criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {CRITERIA}, got {self.criterion!r}")
        if self.criterion == "entropy" and not self.structured:
            raise ValueError("the entropy criterion scores units: it needs structured pruning")
        if self.scope not in ("layer", "global"):
            raise ValueError(f"scope must be layer or global, got {self.scope!r}")
        if self.recovery not in ("greedy", "random"):
            raise ValueError(f"recovery must be greedy or random, got {self.recovery!r}")
        if not 0.0 < self.restore_fraction <= 1.0:
            raise ValueError(f"restore_fraction must be in (0, 1], got {self.restore_fraction}")
        if not 0.0 <= self.distill_weight <= 1.0:
            raise ValueError(f"distill_weight must be in [0, 1], got {self.distill_weight}")
        if self.fine_tune_epochs < 0 or self.fine_tune_batch_size < 1 or self.min_units < 1:
            raise ValueError("fine_tune_epochs >= 0, fine_tune_batch_size >= 1, min_units >= 1")
