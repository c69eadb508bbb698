"""What the training loop reports as it goes, and when it stops by itself."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class StopWhen:
    """When :meth:`TrainingLoop.run` returns by itself (None: never on that bound).

    Attributes:
        max_events: After this many records were consumed.
        max_seconds: After this long.
        idle_seconds: After this long without a record, counted from the first record (for
            replays, demos and benchmarks): a consumer still starting or joining its group —
            seconds on a busy machine — is not idle yet; ``max_seconds`` bounds that wait.
    """

    max_events: int | None = None
    max_seconds: float | None = None
    idle_seconds: float | None = None

    def reached(
        self, *, consumed: int, started: float, last_record: float | None, now: float
    ) -> str | None:
        """Which bound is reached (``max_events``, ``max_seconds``, ``idle``), or None.

        Args:
            consumed: Records consumed since the start.
            started: When the run started (monotonic seconds).
            last_record: When the last record arrived; None before the first one.
            now: The current monotonic time.
        """
        if self.max_events is not None and consumed >= self.max_events:
            return "max_events"
        if self.max_seconds is not None and now - started >= self.max_seconds:
            return "max_seconds"
        idle = self.idle_seconds
        if idle is not None and last_record is not None and now - last_record >= idle:
            return "idle"
        return None


@dataclass
class LoopProgress:
    """Counters since the loop started (the snapshot holds the cumulative ones)."""

    events_consumed: int = 0
    events_learned: int = 0
    events_invalid: int = 0
    steps: int = 0
    snapshot_version: int | None = None
    published_version: int | None = None
    #: Prequential window: accuracy (classification; None for regression), mean loss, and for
    #: regression the mean absolute error, root mean squared error and R².
    accuracy: float | None = None
    loss: float | None = None
    mae: float | None = None
    rmse: float | None = None
    r2: float | None = None
    lr: float | None = None
    #: Events per gradient step (the micro-batch size the loop chose last), when it chooses.
    step_size: int | None = None
    drifts: int = 0
    #: Of ``drifts``: on the loss or error (the concept changed) and on the inputs alone.
    concept_drifts: int = 0
    input_drifts: int = 0
    adaptations: int = 0
    domain: str | None = None
    parameters: int | None = None
    prunes: dict[str, int] = field(default_factory=dict)
    invalid_by_reason: dict[str, int] = field(default_factory=dict)
    #: Why the run ended: a :meth:`StopWhen.reached` bound, or ``request`` (a stop request).
    stopped_by: str | None = None


@dataclass
class ProgressLogSchedule:
    """When the loop logs a ``progress`` line: the per-step points of ``driftd report``.

    Due once ``every_events`` more events were learned *and* ``every_seconds`` passed since the
    last line; so a fast stream is not flooded and a slow one still gets a line per N events.

    Attributes:
        every_events: Events learned between lines (0: never).
        every_seconds: Least seconds between lines.
    """

    every_events: int = 0
    every_seconds: float = 0.0
    _learned_at: int = 0
    _logged_at: float = -math.inf

    def due(self, learned: int, now: float) -> bool:
        """Whether a line is due at ``learned`` events and monotonic time ``now``; if so, fire."""
        if self.every_events <= 0 or learned - self._learned_at < self.every_events:
            return False
        if now - self._logged_at < self.every_seconds:
            return False
        self._learned_at, self._logged_at = learned, now
        return True
