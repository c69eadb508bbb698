"""What the training loop reports as it goes, and when it stops by itself."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class StopWhen:
    """When :meth:`TrainingLoop.run` returns by itself (None: never on that bound).

    Attributes:
        max_events: After this many records were consumed.
        max_seconds: After this long.
        idle_seconds: After this long without a record (for replays, demos and benchmarks).
    """

    max_events: int | None = None
    max_seconds: float | None = None
    idle_seconds: float | None = None


@dataclass
class LoopProgress:
    """Counters since the loop started (the snapshot holds the cumulative ones)."""

    events_consumed: int = 0
    events_learned: int = 0
    events_invalid: int = 0
    steps: int = 0
    snapshot_version: int | None = None
    published_version: int | None = None
    accuracy: float | None = None
    loss: float | None = None
    lr: float | None = None
    drifts: int = 0
    adaptations: int = 0
    domain: str | None = None
    parameters: int | None = None
    prunes: dict[str, int] = field(default_factory=dict)
    invalid_by_reason: dict[str, int] = field(default_factory=dict)
