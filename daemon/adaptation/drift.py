"""The drift monitor: river detectors on the prequential loss or error, and on the inputs.

Two kinds of signal. *Concept* signals need labels: the per-event prequential loss (for ADWIN,
Page-Hinkley, KSWIN) or the 0/1 error (for DDM, EDDM, HDDM_A, HDDM_W; ADWIN may watch it too).
*Covariate* signals need none: ADWIN on summaries of the inputs (mean feature value and root mean
square), one value per batch checked every update (``clock=1``), or with
``covariate_batch_mean=false`` one value per event (river's default ``clock=32``). ADWIN's bound
carries a term in ``1/n`` independent of the noise, so a clear shift still needs about 20 values
to show: 20 batches per batch, a few dozen events per event.

Cost: river updates are Python calls, so a concept detector fed every event costs its update
time per event (ADWIN ~0.2 µs, Page-Hinkley/DDM ~0.5 µs, HDDM ~2-3 µs, KSWIN ~200 µs: a scipy
KS test). ``every=k`` feeds one event in ``k`` (detection delay grows ``k``-fold, in events);
``batch_mean`` feeds one value per batch (continuous detectors only; the delay is then counted
in batches and small changes hide less in the noise of a mean). ``every=0`` picks 1, or 32 for
KSWIN.

A detector's flag is read right after each update: river detectors reset on the next one.
Warnings (binary detectors) are reported when they switch on, not on every update while on.
Two-sided detectors (ADWIN, KSWIN) also fire when the loss or error *falls* (the model
converging): those detections are improvements, counted in :attr:`DriftMonitor.improvements`
and not reported as drifts. A one-sided detector (HDDM_A as configured by default) fires on a
rise only, so its alarms are never read as improvements: the levels compared (the mean since
the last drift, the last few values) can mislead when it fires a few events into a change that
follows a slow start. Input signals report changes either way.

Labels outrank inputs (``confirm_inputs``): while labels flow (at least half of a step's events
carry one), an input alarm is a drift only if the concept signal warns or drifts too in that
step; alone it is reported as a warning. The inputs of a continuously moving stream shift all
the time, and a shift that leaves the model's error where it was needs no re-adaptation; on an
unlabelled stream the inputs are all there is, and their alarms stay drifts.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch

from driftd.adaptation.detectors import (
    Params,
    detector_state,
    fires_on_falls,
    is_binary,
    load_detector_state,
    make_detector,
)

Kind = Literal["warning", "drift"]
Signal = Literal["loss", "error", "input_mean", "input_rms"]
"""What a monitor watches: a concept signal (labels needed) or a covariate one (inputs only)."""
_TAIL = 32  # fed values averaged into a detection's "after" level


@dataclass(frozen=True)
class DriftDetected:
    """A detector raised a warning or a drift.

    Attributes:
        detector: Detector name (``adwin``, ``ddm``, ...).
        signal: What it watches (``loss``, ``error``, ``input_mean``, ``input_rms``).
        kind: ``warning`` or ``drift``.
        index: 0-based index of the value, among all values offered to this signal, at which
            the detector fired (river's detection index when every value is fed).
        row: Row of the batch that value came from (for its record's offset).
        before: Mean signal level since the previous drift on this signal.
        after: Mean of the latest values fed (up to 32), the new level.
        span: Offered values, up to and including this one, the detector attributes to the new
            level (ADWIN: the window it kept after the cut, times ``every``); None when the
            detector gives no such estimate. Where the change began, roughly: ADWIN cuts at
            bucket bounds, so the span may reach a bucket's worth of values before the change.
    """

    detector: str
    signal: Signal
    kind: Kind
    index: int
    row: int
    before: float
    after: float
    span: int | None = None


class Fired(NamedTuple):
    """A detection within one :meth:`SignalMonitor.update_many` call."""

    kind: Kind
    position: int  # in the values given
    before: float
    after: float
    span: int | None  # see DriftDetected.span


class SignalMonitor:
    """One river detector on one scalar signal, with its feeding policy.

    Args:
        detector: Detector name (see :data:`driftd.adaptation.detectors.DETECTORS`).
        params: Its river keyword arguments.
        signal: Name of the signal (for reports).
        every: Feed one value in ``every`` (0: automatic, see the module docstring).
        batch_mean: Feed one value per call: the mean of the values given.
    """

    def __init__(
        self, *, detector: str, params: Params, signal: Signal, every: int = 0, batch_mean: bool
    ) -> None:
        if every < 0:
            raise ValueError(f"every must be >= 0, got {every}")
        if batch_mean and is_binary(detector):
            raise ValueError(f"{detector} watches a 0/1 error: a batch mean is not one")
        self.name, self.params, self.signal = detector, dict(params), signal
        self.every = every or (32 if detector == "kswin" else 1)
        self.batch_mean = batch_mean
        self.detector = make_detector(detector, self.params)
        self.two_sided = fires_on_falls(detector, self.params)
        self._binary = is_binary(detector)
        self.seen = 0  # values offered so far
        self.dropped = 0  # non-finite values offered, never fed
        self._phase = 0  # offered values to skip before the next fed one
        self._ref_sum, self._ref_n = 0.0, 0
        self._tail: list[float] = []
        self._warning = False

    def update_many(self, values: Sequence[float]) -> list[Fired]:
        """Feed a batch of values; return what fired, where in ``values``.

        Non-finite values are offered but never fed (counted in :attr:`dropped`): one ``inf``
        in ADWIN's window, or a NaN in any detector's sums, would blind it for good.
        """
        if not all(map(math.isfinite, values)):
            kept = [i for i, value in enumerate(values) if math.isfinite(value)]
            found = self._update_finite([values[i] for i in kept])
            self.seen += len(values) - len(kept)
            self.dropped += len(values) - len(kept)
            return [fired._replace(position=kept[fired.position]) for fired in found]
        return self._update_finite(values)

    @property
    def warning_on(self) -> bool:
        """Whether a binary detector's warning is on (it switched on and no drift followed)."""
        return self._warning

    def _update_finite(self, values: Sequence[float]) -> list[Fired]:
        n = len(values)
        if n == 0:
            return []
        if self.batch_mean:
            fed, positions = [sum(values) / n], range(n - 1, n)
        elif self.every == 1:
            fed, positions = list(values), range(n)
        else:
            positions = range(self._phase, n, self.every)
            fed = [values[i] for i in positions]
            self._phase = positions[-1] + self.every - n if positions else self._phase - n
        found = self._feed(fed)
        self.seen += n
        return [fired._replace(position=positions[fired.position]) for fired in found]

    def _feed(self, fed: list[float]) -> list[Fired]:
        """Feed values one by one; positions in the result are indices into ``fed``."""
        found: list[Fired] = []
        start = 0
        for j, warning, drift in self._flags(fed):
            if drift:
                found.append(Fired("drift", j, *self._levels(fed, start, j), self._span()))
                self._ref_sum, self._ref_n, start, self._warning = 0.0, 0, j + 1, False
            elif self._binary and warning != self._warning:
                self._warning = warning
                if warning:
                    found.append(Fired("warning", j, *self._levels(fed, start, j), None))
        self._ref_sum += sum(fed[start:])
        self._ref_n += len(fed) - start
        self._tail = (self._tail + fed)[-_TAIL:]
        return found

    def _flags(self, fed: list[float]) -> Iterator[tuple[int, bool, bool]]:
        """Feed the detector; ``(index, warning, drift)`` at least wherever a flag is up."""
        detector = self.detector
        batched = getattr(detector, "update_many", None)
        if batched is not None:  # driftd's HDDM_A and ADWIN: one call up to each drift
            start = 0
            while start < len(fed):
                changes = batched(fed[start:] if start else fed)
                for j, warning, drift in changes:
                    yield start + j, warning, drift  # read the detector here: as at value j
                if not changes or not changes[-1][2]:
                    return
                start += changes[-1][0] + 1
            return
        update, binary = detector.update, self._binary
        for j, value in enumerate(fed):  # the tight loop: one river update per fed value
            update(value)
            if detector.drift_detected or (binary and detector.warning_detected != self._warning):
                yield j, binary and detector.warning_detected, detector.drift_detected

    def _span(self) -> int | None:
        """Offered values the detector attributes to the new level, right after a drift."""
        width = getattr(self.detector, "width", None)
        if width is None or self.batch_mean:
            return None
        return int(width) * self.every

    def _levels(self, fed: list[float], start: int, j: int) -> tuple[float, float]:
        count = self._ref_n + j + 1 - start
        before = (self._ref_sum + sum(fed[start : j + 1])) / count
        recent = (self._tail + fed[: j + 1])[-_TAIL:]
        return before, sum(recent) / len(recent)

    def state_dict(self) -> dict[str, Any]:
        """JSON-ready configuration, detector state and feeding position."""
        return {
            "detector": self.name,
            "params": self.params,
            "signal": self.signal,
            "state": detector_state(self.detector),
            "seen": self.seen,
            "dropped": self.dropped,
            "phase": self._phase,
            "reference": [self._ref_sum, self._ref_n],
            "tail": self._tail,
            "warning": self._warning,
        }

    def matches(self, state: dict[str, Any]) -> bool:
        """Whether ``state`` was saved with this detector, its params and this signal."""
        saved = (state["detector"], state["params"], state["signal"])
        return saved == (self.name, self.params, self.signal)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output.

        Raises:
            ValueError: It was saved with another configuration (see :meth:`matches`).
        """
        if not self.matches(state):
            raise ValueError(
                f"{self.signal} monitor state is of {state['detector']} {state['params']}, "
                f"not {self.name} {self.params}"
            )
        self.detector = make_detector(self.name, self.params)
        load_detector_state(self.detector, state["state"])
        self.seen, self._phase = int(state["seen"]), int(state["phase"])
        self.dropped = int(state.get("dropped", 0))
        self._ref_sum, self._ref_n = float(state["reference"][0]), int(state["reference"][1])
        self._tail = [float(v) for v in state["tail"]]
        self._warning = bool(state["warning"])


class DriftMonitor:
    """Concept and covariate signal monitors fed from each learning step.

    Args:
        concept: Monitor of the per-event loss or error (None: no labelled signal).
        concept_signal: ``loss`` or ``error``: what ``concept`` is fed.
        covariate: Monitors of ``input_mean`` and ``input_rms`` (per batch), possibly empty.
        confirm_inputs: While labels flow, report an input alarm the concept signal does not
            confirm as a warning (see the module docstring).

    Attributes:
        improvements: Detections of a falling loss or error (not reported as drifts).
        reset_signals: Signals whose detectors started afresh at the last
            :meth:`load_state_dict` (their configuration changed since the state was saved).
    """

    def __init__(
        self,
        *,
        concept: SignalMonitor | None,
        concept_signal: Literal["loss", "error"] = "loss",
        covariate: Sequence[SignalMonitor] = (),
        confirm_inputs: bool = False,
    ) -> None:
        self.concept = concept
        self.concept_signal = concept_signal
        self.covariate = list(covariate)
        self.confirm_inputs = confirm_inputs
        self.improvements = 0
        self.reset_signals: list[Signal] = []

    def update(
        self,
        *,
        x: torch.Tensor,
        y: torch.Tensor,
        labelled: torch.Tensor,
        event_losses: torch.Tensor,
        predictions: torch.Tensor,
    ) -> list[DriftDetected]:
        """Feed one step's signals; return what fired, in signal order."""
        found: list[DriftDetected] = []
        rows: list[int] | None = None
        labels_flow = self.concept is not None and 2 * len(event_losses) >= len(x) > 0
        if self.concept is not None and len(event_losses):
            all_labelled = bool(labelled.all())
            if self.concept_signal == "loss":
                values = event_losses.tolist()
            else:  # on the CPU, with the labels: the model's device may differ
                predictions = predictions.detach().cpu()
                wrong = predictions != y if all_labelled else predictions[labelled] != y[labelled]
                values = wrong.to(torch.float64).tolist()
            for fired in self.concept.update_many(values):
                if self.concept.two_sided and fired.after <= fired.before:
                    self.improvements += 1
                    continue
                if rows is None:
                    rows = (
                        list(range(len(x))) if all_labelled else labelled.nonzero()[:, 0].tolist()
                    )
                index = self.concept.seen - len(values) + fired.position
                found.append(self._event(self.concept, fired, index, rows[fired.position]))
        if self.covariate and len(x):
            unconfirmed = self.confirm_inputs and labels_flow and not self._concept_alarm(found)
            flat = x.reshape(len(x), -1)
            for monitor in self.covariate:
                values = _input_values(flat, monitor)
                for fired in monitor.update_many(values):
                    index = monitor.seen - len(values) + fired.position
                    row = len(x) - 1 if monitor.batch_mean else fired.position
                    if unconfirmed:
                        fired = fired._replace(kind="warning")
                    found.append(self._event(monitor, fired, index, row))
        return found

    def _concept_alarm(self, found: Sequence[DriftDetected]) -> bool:
        """Whether the concept signal drifted or warned in this step, or its warning is on."""
        concept = self.concept
        return bool(found) or (concept is not None and concept.warning_on)

    @staticmethod
    def _event(monitor: SignalMonitor, fired: Fired, index: int, row: int) -> DriftDetected:
        return DriftDetected(
            monitor.name, monitor.signal, fired.kind, index, row, fired.before, fired.after,
            fired.span,
        )  # fmt: skip

    def state_dict(self) -> dict[str, Any]:
        """JSON-ready state of every signal monitor."""
        return {
            "concept": None if self.concept is None else self.concept.state_dict(),
            "covariate": [monitor.state_dict() for monitor in self.covariate],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output.

        A signal whose detector configuration changed (or that was not saved) starts afresh
        instead; :attr:`reset_signals` names those signals until the next load.
        """
        self.reset_signals = []
        if self.concept is not None:
            self._load_monitor(self.concept, state.get("concept"))
        saved_covariate = {s["signal"]: s for s in state.get("covariate", [])}
        for monitor in self.covariate:
            self._load_monitor(monitor, saved_covariate.get(monitor.signal))

    def _load_monitor(self, monitor: SignalMonitor, saved: dict[str, Any] | None) -> None:
        if saved is not None and monitor.matches(saved):
            monitor.load_state_dict(saved)
        else:
            self.reset_signals.append(monitor.signal)


def _input_values(flat: torch.Tensor, monitor: SignalMonitor) -> list[float]:
    """The covariate signal of ``monitor``: the batch's value, or each event's (rows).

    In float64: squares of inputs finite in float32 (up to ``3.4e38``) stay finite.
    """
    flat = flat.to(torch.float64)
    if monitor.batch_mean:  # one value: over the whole batch
        whole = flat.mean() if monitor.signal == "input_mean" else flat.square().mean().sqrt()
        return [float(whole)]
    per_event = flat.mean(1) if monitor.signal == "input_mean" else flat.square().mean(1).sqrt()
    values: list[float] = per_event.tolist()
    return values
