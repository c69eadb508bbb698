"""What the re-adaptation policy is told: a frozen copy of the ``adaptation`` settings it reads.

The composition root derives it from the settings (the one place defaults and validation live),
so the policy never imports them; it has no defaults of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True, kw_only=True)
class AdaptationConfig:
    """The adaptation settings that :class:`~driftd.adaptation.policy.Adaptation` reads.

    Each field is the ``adaptation`` setting of the same name (see its description there):
    ``enabled`` (else drifts are only reported); the head LR boost (``lr_boost``,
    ``boost_steps``, ``reset_head_moments``) and LR policy restart (``policy_lr_factor``); the
    trunk's hold after a drift (``trunk_scale``, ``trunk_hold_steps``, ``trunk_resume_scale``,
    ``trunk_ramp_steps``, ``trunk_evidence``) or for good (``freeze_trunk``); the stored domains
    and the head decision (``heads``, ``max_heads``, ``new_head``, ``score_events``,
    ``fit_ratio``, ``fit_margin``, ``early_reuse``, ``early_min_events``, ``reuse_confidence``,
    ``on_covariate_drift``, ``input_fit_distance``); replay (``replay``, ``replay_size``,
    ``replay_steps``, ``replay_batch_size``); class growth (``grow_classes``, ``max_classes``).
    """

    enabled: bool
    lr_boost: float
    boost_steps: int
    reset_head_moments: bool
    policy_lr_factor: float
    trunk_scale: float
    trunk_hold_steps: int
    trunk_resume_scale: float
    trunk_ramp_steps: int
    trunk_evidence: bool
    freeze_trunk: bool
    heads: bool
    max_heads: int
    new_head: Literal["clone", "fresh"]
    score_events: int
    fit_ratio: float
    fit_margin: float
    early_reuse: bool
    early_min_events: int
    reuse_confidence: float
    on_covariate_drift: Literal["ignore", "lr_boost", "score_heads"]
    input_fit_distance: float
    replay: Literal["sliding", "reservoir"]
    replay_size: int
    replay_steps: int
    replay_batch_size: int
    grow_classes: bool
    max_classes: int
