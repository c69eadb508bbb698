"""What the drift monitor and the adaptation did in one step: drifts and adaptations, as values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from driftd.adaptation.drift import DriftDetected

AdaptationKind = Literal[
    "lr_boost", "lr_restart", "trunk_freeze", "trunk_unfreeze", "trunk_keep", "trunk_release",
    "new_head", "reuse_head", "evict_head", "replay", "grow_classes", "score_heads", "keep_head",
]  # fmt: skip
#: Every kind, for metrics that expose each series from the start.
ADAPTATION_KINDS: tuple[AdaptationKind, ...] = get_args(AdaptationKind)


@dataclass(frozen=True)
class Adapted:
    """One adaptation made (counted in ``driftd_adaptations_total{kind}``).

    Attributes:
        kind: ``lr_boost``, ``lr_restart``, ``trunk_freeze``, ``trunk_unfreeze``,
            ``trunk_keep``/``trunk_release`` (the post-drift evidence on the held trunk),
            ``new_head``, ``reuse_head``, ``evict_head``, ``replay``, ``grow_classes``,
            ``score_heads`` (a covariate drift started looking for a stored head) or
            ``keep_head`` (it found the inputs still the active domain's).
        domain: The domain it concerns.
        detail: A human-readable explanation for the log.
    """

    kind: AdaptationKind
    domain: str
    detail: str


@dataclass
class StepOutcome:
    """What one step's monitoring and adaptation did."""

    drifts: list[DriftDetected] = field(default_factory=list)
    adaptations: list[Adapted] = field(default_factory=list)
