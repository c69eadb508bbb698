"""What a :class:`~driftd.library.Learner` saw happen: drifts, adaptations, pruning outcomes.

The learner runs the daemon's loop, which reports these through its telemetry port (what
becomes ``driftd_drift_detected_total``, ``driftd_adaptations_total`` and
``driftd_prune_total`` in the daemon). :class:`EventTelemetry` turns those reports into small
frozen values, each stamped with the step and the number of events seen when it happened.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from driftd.adapters.recording_telemetry import RecordingTelemetry

if TYPE_CHECKING:
    from driftd.ports import Telemetry


@dataclass(frozen=True)
class DriftDetected:
    """A drift detector fired (the daemon's ``drift_detected`` log line).

    Attributes:
        detector: The detector (``adwin``, ``hddm_a``, ...).
        signal: What it watches (``loss``, ``error``, ``input_mean``, ``input_rms``).
        kind: ``drift``, or ``warning`` for a detector's early warning.
        step: Gradient steps taken when it fired.
        events_seen: Events given to the learner up to the end of the step that fired it.
    """

    detector: str
    signal: str
    kind: str
    step: int
    events_seen: int


@dataclass(frozen=True)
class ModelAdapted:
    """The adaptation policy acted (the daemon's ``adapted`` log line).

    Attributes:
        kind: ``lr_boost``, ``new_head``, ``reuse_head``, ``trunk_freeze``, ... (see
            :data:`driftd.adaptation.outcomes.AdaptationKind`).
        step: Gradient steps taken when it acted.
        events_seen: Events given to the learner up to the end of that step.
    """

    kind: str
    step: int
    events_seen: int


@dataclass(frozen=True)
class ModelPruned:
    """A pruning event ended (``driftd_prune_total{outcome}``).

    Attributes:
        outcome: ``kept``, ``recovered``, ``rolled_back``, ``interrupted``, ...
        step: Gradient steps taken when it ended.
        events_seen: Events given to the learner up to the end of that step.
    """

    outcome: str
    step: int
    events_seen: int


LearnerEvent = DriftDetected | ModelAdapted | ModelPruned


@dataclass
class EventTelemetry(RecordingTelemetry):
    """Recording telemetry that also keeps drifts, adaptations and pruning outcomes as events.

    Unlike its parent it keeps no per-step history (durations, latencies): a learner that
    runs for ever must not grow with the steps it took.

    Attributes:
        events: Every event so far, oldest first.
        events_seen: Where the stream is: set by the learner after each step's report.
        step_of: Gradient steps taken so far (read when an event is stamped).
        on_event: Called with each event as it happens.
    """

    events: list[LearnerEvent] = field(default_factory=list)
    events_seen: int = 0
    step_of: Callable[[], int] = lambda: 0
    on_event: Callable[[LearnerEvent], None] | None = None

    def _emit(self, event: LearnerEvent) -> None:
        self.events.append(event)
        if self.on_event is not None:
            self.on_event(event)

    def drift_detected(self, detector: str, signal: str, kind: str) -> None:
        """Count the detection and keep it as a :class:`DriftDetected`."""
        super().drift_detected(detector, signal, kind)
        self._emit(DriftDetected(detector, signal, kind, self.step_of(), self.events_seen))

    def adapted(self, kind: str) -> None:
        """Count the adaptation and keep it as a :class:`ModelAdapted`."""
        super().adapted(kind)
        self._emit(ModelAdapted(kind, self.step_of(), self.events_seen))

    def pruned(self, outcome: str) -> None:
        """Count the outcome and keep it as a :class:`ModelPruned`."""
        super().pruned(outcome)
        self._emit(ModelPruned(outcome, self.step_of(), self.events_seen))

    def step_completed(self, seconds: float, accuracy: float | None, loss: float | None) -> None:
        """Keep the window's accuracy and loss, not the step's duration."""
        self.steps += 1
        if accuracy is not None:
            self.accuracy = accuracy
        if loss is not None:
            self.loss = loss

    def event_latencies(self, seconds: np.ndarray) -> None:
        """Ignored: a library call has no event-to-update latency worth keeping."""


if TYPE_CHECKING:
    _conforms: Telemetry = EventTelemetry()
