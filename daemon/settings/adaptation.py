"""The ``drift`` and ``adaptation`` settings sections: detectors, and what a drift does."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from driftd.settings.section import Section

DetectorName = Literal["adwin", "page_hinkley", "kswin", "ddm", "eddm", "hddm_a", "hddm_w"]
_BINARY_DETECTORS = ("ddm", "eddm", "hddm_a", "hddm_w")


class DriftSettings(Section):
    """Drift detection (river) on the prequential loss/error and, label-free, on the inputs."""

    enabled: bool = True
    detector: DetectorName = "hddm_a"
    signal: Literal["auto", "loss", "error"] = Field(
        "auto", description="auto: the 0/1 error for ddm/eddm/hddm_*, else the per-event loss."
    )
    params: dict[str, float | int | bool | str] = Field(
        default_factory=dict, description='River keyword arguments, e.g. {"delta": 0.01}.'
    )
    every: int = Field(
        0, ge=0, description="Feed one labelled event in N to the detector (0: 1, kswin 32)."
    )
    batch_mean: bool = Field(False, description="Feed one value per batch: its mean loss.")
    covariate: bool = Field(True, description="Also watch the inputs (label-free).")
    covariate_delta: float = Field(0.002, gt=0.0, lt=1.0, description="ADWIN delta on inputs.")
    covariate_confirm: bool = Field(
        True,
        description="While labels flow, an input alarm is a drift only if the error or loss "
        "also warns or drifts; alone it is reported as a warning (false: always a drift).",
    )
    covariate_batch_mean: bool = Field(
        False, description="Inputs: one value per batch (true), or per event (detects sooner)."
    )

    @model_validator(mode="after")
    def _check_signal(self) -> DriftSettings:
        binary = self.detector in _BINARY_DETECTORS
        if binary and self.signal == "loss":
            raise ValueError(f"drift.detector={self.detector} watches the 0/1 error, not loss")
        if binary and self.batch_mean:
            raise ValueError(f"drift.batch_mean needs a continuous detector, not {self.detector}")
        return self

    @property
    def concept_signal(self) -> Literal["loss", "error"]:
        """The labelled signal the detector watches."""
        if self.signal != "auto":
            return self.signal
        return "error" if self.detector in _BINARY_DETECTORS else "loss"


class AdaptationSettings(Section):
    """Re-adaptation after drift: LR boost, trunk freeze, domain heads, replay, transfer."""

    enabled: bool = True
    lr_boost: float = Field(1.0, ge=1.0, le=100.0, description="Head LR multiplier at a drift.")
    boost_steps: int = Field(100, ge=1, description="Steps for the head boost to decay to 1x.")
    reset_head_moments: bool = Field(False, description="Clear the head's optimizer state.")
    policy_lr_factor: float = Field(
        1.0, ge=0.0, le=100.0,
        description="At a drift, raise the LR policy's rate to this x learner.lr (0: never).",
    )  # fmt: skip
    trunk_scale: float = Field(
        1.0, ge=0.0, le=1.0, description="Trunk LR multiplier after a drift (0 freezes)."
    )
    trunk_hold_steps: int = Field(20, ge=0, description="Steps the trunk stays frozen/slowed.")
    trunk_resume_scale: float = Field(
        0.3, gt=0.0, le=1.0, description="Trunk LR multiplier when it resumes, ramping to 1x."
    )
    trunk_ramp_steps: int = Field(50, ge=1, description="Steps from the resume scale to 1x.")
    trunk_evidence: bool = Field(
        True,
        description="Keep the trunk held only while it serves the new domain: after score_events "
        "post-drift events, a fresh head on the frozen trunk is compared with one on a free copy.",
    )
    freeze_trunk: bool = Field(False, description="Feature transfer: never train the trunk.")
    heads: bool = Field(True, description="Keep per-domain heads; reuse one on a recurrence.")
    max_heads: int = Field(8, ge=1, le=1_000, description="Bound of the stored domains (LRU).")
    new_head: Literal["clone", "fresh"] = Field(
        "clone", description="A new domain's head: freshly initialised, or the live one as is."
    )
    score_events: int = Field(
        128, ge=8, description="Labelled events after a drift on which heads are scored."
    )
    fit_ratio: float = Field(
        1.5, ge=1.0, description="A stored head fits if its loss <= ratio x its reference..."
    )
    fit_margin: float = Field(0.1, ge=0.0, description="... + this margin (see the docs).")
    early_reuse: bool = Field(
        True, description="Switch to a stored head as soon as it is clearly better (paired test)."
    )
    early_min_events: int = Field(
        16, ge=2, description="Post-drift labelled events before the early test may switch."
    )
    reuse_confidence: float = Field(
        2.33, gt=0.0, description="Early test: standard errors the loss gain must exceed."
    )
    on_covariate_drift: Literal["ignore", "lr_boost", "score_heads"] = Field(
        "score_heads", description="What an input (label-free) drift does: see the docs."
    )
    input_fit_distance: float = Field(
        0.5, gt=0.0, description="score_heads without labels: max input distance of a fit."
    )
    replay: Literal["sliding", "reservoir"] = "sliding"
    replay_size: int = Field(1_024, ge=8, le=1_000_000, description="Events kept for replay.")
    replay_steps: int = Field(20, ge=0, description="Extra steps after a head switch.")
    replay_batch_size: int = Field(32, ge=1)
    warm_start_dir: Path | None = Field(
        None, description="Snapshot dir whose weights start a fresh deployment."
    )
    structure_from: Path | None = Field(
        None, description="Snapshot dir whose architecture config a fresh deployment uses."
    )
    grow_classes: bool = Field(False, description="Grow the output layer for unseen labels.")
    max_classes: int = Field(100, ge=2, le=100_000, description="Bound of class growth.")

    @model_validator(mode="after")
    def _check_sizes(self) -> AdaptationSettings:
        if self.heads and self.replay_size < self.score_events:
            raise ValueError("adaptation.replay_size must be >= adaptation.score_events")
        if self.warm_start_dir is not None and self.structure_from is not None:
            raise ValueError("set adaptation.warm_start_dir or adaptation.structure_from, not both")
        return self
