"""The ``pruning`` settings section: when, how far and how carefully the daemon prunes itself."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from driftd.settings.section import Section


class PruningSettings(Section):
    """Periodic pruning with re-adaptation, verification and recovery (``driftd.pruning``).

    Every ``every_steps`` steps (or ``every_seconds``), once ``baseline_events`` of unpruned
    loss are known, the next step of a cubic schedule towards ``target_sparsity`` (trunk) and
    ``head_target_sparsity`` is cut, the model is fine-tuned on the last ``replay_events``
    labelled events, and its prequential loss over the next ``verify_events`` is compared with
    the unpruned model's on the same events: kept within ``tolerance``, else recovered
    (``restore_fraction`` of the cut brought back, ``max_recoveries`` times) or rolled back.
    """

    enabled: bool = False
    target_sparsity: float = Field(0.5, ge=0.0, lt=1.0, description="Final trunk sparsity.")
    head_target_sparsity: float = Field(
        0.0, ge=0.0, lt=1.0, description="Final sparsity of the head's hidden layers."
    )
    structured: bool = Field(
        False, description="Remove whole units (smaller, faster layers) instead of masking weights."
    )
    criterion: Literal["magnitude", "taylor", "sparse", "output_error", "entropy"] = "magnitude"
    scope: Literal["layer", "global"] = "layer"
    every_steps: int = Field(5_000, ge=1)
    every_seconds: float | None = Field(None, gt=0.0, description="Also prune after this long.")
    n_events: int = Field(10, ge=1, description="Pruning events to reach the target.")
    baseline_events: int = Field(512, ge=1, description="Unpruned events the reference needs.")
    verify_events: int = Field(512, ge=1, description="Events a pruned model is judged on.")
    tolerance: float = Field(0.05, ge=0.0, description="Allowed relative rise of the loss.")
    abs_tolerance: float = Field(0.01, ge=0.0, description="Allowed absolute rise on top.")
    recovery: Literal["greedy", "random"] = "greedy"
    restore_fraction: float = Field(0.5, gt=0.0, le=1.0)
    max_recoveries: int = Field(2, ge=0)
    max_consecutive_rollbacks: int = Field(3, ge=1)
    replay_events: int = Field(2_048, ge=1, description="Recent events fine-tuned on.")
    fine_tune_epochs: int = Field(1, ge=0)
    fine_tune_batch_size: int = Field(64, ge=1)
    distill_weight: float = Field(0.0, ge=0.0, le=1.0, description="0: no teacher.")
    temperature: float = Field(2.0, gt=0.0)
    penalty_strength: float = Field(1e-4, ge=0.0, description="The sparse criterion's L1.")
    min_units: int = Field(1, ge=1, description="Units each layer keeps (structured).")
    int8_export: bool = Field(
        False, description="Also write an int8 copy beside each snapshot (CPU serving)."
    )

    @model_validator(mode="after")
    def _entropy_needs_units(self) -> PruningSettings:
        if self.criterion == "entropy" and not self.structured:
            raise ValueError("criterion=entropy scores whole units: set structured=true")
        return self
