"""driftd's own runs for the quality bench, and the figures taken from any learner's run.

driftd runs through the real loop (:func:`driftd.app.build_trainer`: JSON decode, learn,
monitor, adapt) with the in-memory adapters, settings from :func:`load_settings` given only
facts of the stream (classes, features, a CNN's input shape) and the seed: whatever the
defaults are is what is measured. The variant ``off`` adds ``adaptation.enabled=false``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from driftd.adapters.memory import DiscardingDeadLetterSink
from driftd.adapters.memory_snapshot_store import InMemorySnapshotStore
from driftd.adapters.recording_telemetry import RecordingTelemetry
from driftd.app import build_trainer
from driftd.decode import DecodedBatch
from driftd.learning.learner import StepReport
from driftd.logs import driftd_log_level
from driftd.loop import StopWhen
from driftd.records import Record
from driftd.settings.root import load_settings
from driftd.tools.quality_sources import make_source
from driftd.tools.quality_streams import QualityStream

AFTER = 1_000  # events after a drift whose accuracy is reported
ALARM_WINDOW = 1_000  # a detection this long after a drift (past its width) is explained
PER_EVENTS = 25_000  # false alarms are counted per this many events


@dataclass
class _PositionedTelemetry(RecordingTelemetry):
    """Recording telemetry that also notes where (stream offset) each concept drift fired."""

    position: int = 0
    detections: list[int] = field(default_factory=list)

    def drift_detected(self, detector: str, signal: str, kind: str) -> None:
        super().drift_detected(detector, signal, kind)
        if kind == "drift":
            self.detections.append(self.position)


@dataclass
class DriftdRun:
    """One driftd run over one stream."""

    correct: np.ndarray
    seconds: float
    detections: list[int]
    adaptations: dict[str, int]
    step_sizes: list[int]


def driftd_settings(stream: QualityStream, *, seed: int, adaptation: bool = True) -> Any:
    """The defaults, told only the stream's facts and the seed (plus no disk, no metrics)."""
    options: dict[str, Any] = {
        "model": {
            "n_classes": stream.n_classes,
            "n_features": stream.features.shape[1],
            "seed": seed,
            **stream.model,
        },
        "snapshots": {"dir": "unused", "every_steps": 10**9, "every_seconds": 10**9},
        "metrics": {"enabled": False},
    }
    if not adaptation:
        options["adaptation"] = {"enabled": False}
    return load_settings(**options)


def records_of(stream: QualityStream) -> list[Record]:
    """The stream as the JSON records a Kafka topic would hold."""
    return [
        Record("quality", 0, index, orjson.dumps(event))
        for index, event in enumerate(stream.events())
    ]


def run_driftd(
    stream: QualityStream,
    *,
    regime: str,
    seed: int,
    adaptation: bool = True,
    rate: float = 2_000.0,
    records: list[Record] | None = None,
) -> DriftdRun:
    """Run the real loop over ``stream`` with the source of ``regime``."""
    with driftd_log_level(logging.ERROR):
        return _run_driftd(stream, regime, seed, adaptation, rate, records)


def _run_driftd(
    stream: QualityStream,
    regime: str,
    seed: int,
    adaptation: bool,
    rate: float,
    records: list[Record] | None,
) -> DriftdRun:
    records = records if records is not None else records_of(stream)
    correct = np.zeros(len(records), dtype=bool)
    telemetry = _PositionedTelemetry()
    step_sizes: list[int] = []

    def on_report(report: StepReport, batch: DecodedBatch) -> None:
        offsets = [record.offset for record in batch.records]
        correct[offsets] = report.predictions.numpy() == stream.labels[offsets]
        telemetry.position = max(offsets) + 1  # events seen when this step's detections fire
        step_sizes.append(len(offsets))

    trainer = build_trainer(
        driftd_settings(stream, seed=seed, adaptation=adaptation),
        source=make_source(regime, records, rate=rate), store=InMemorySnapshotStore(keep=1),
        telemetry=telemetry, dead_letters=DiscardingDeadLetterSink(), serve_metrics=False,
        on_report=on_report,
    )  # fmt: skip
    started = time.perf_counter()
    trainer.run(StopWhen(max_events=len(records), max_seconds=len(records) / rate + 600))
    seconds = time.perf_counter() - started
    return DriftdRun(
        correct, seconds, telemetry.detections, dict(telemetry.adaptations), step_sizes
    )


def detection_figures(
    detections: list[int], stream: QualityStream, *, alarm_window: int = ALARM_WINDOW
) -> tuple[list[int | None], int]:
    """Delay per drift (None: missed before the next drift) and the count of false alarms.

    A detection is explained when it falls within a drift's width + ``alarm_window`` events
    after the drift point; every other one is a false alarm (on a stream without change points,
    every detection).
    """
    ends = (*stream.drifts[1:], stream.n_events)[: len(stream.drifts)]
    delays = [
        next((d - t for d in sorted(detections) if t <= d < end), None)
        for t, end in zip(stream.drifts, ends, strict=True)
    ]
    explained = [
        any(
            t <= d < t + w + alarm_window for t, w in zip(stream.drifts, stream.widths, strict=True)
        )
        for d in detections
    ]
    return delays, explained.count(False)


def quiet_events(stream: QualityStream, *, alarm_window: int = ALARM_WINDOW) -> int:
    """Events where a detection would be a false alarm (outside every drift's window)."""
    covered = np.zeros(stream.n_events, dtype=bool)
    for t, w in zip(stream.drifts, stream.widths, strict=True):
        covered[t : t + w + alarm_window] = True
    return int((~covered).sum())


def recovery_to_earlier(
    correct: np.ndarray,
    stream: QualityStream,
    drift: int,
    *,
    window: int = 200,
    pre_window: int = 1_000,
    tolerance: float = 0.05,
) -> int | None:
    """Events lost after ``drift`` before accuracy is back at the concept's earlier level.

    The earlier level is the accuracy over the last ``pre_window`` events of the concept's first
    segment; "back" is the start of the first ``window``-event stretch within ``tolerance`` of
    it. None: never within the concept.
    """
    start, end = stream.first_seen(drift)
    level = float(correct[max(start, end - pre_window) : end].mean())
    following = [t for t in stream.drifts if t > drift]
    after = correct[drift : following[0] if following else stream.n_events].astype(np.float64)
    if len(after) < window:
        return None
    rolling = np.convolve(after, np.ones(window) / window, mode="valid")
    hits = np.flatnonzero(rolling >= level - tolerance)
    return int(hits[0]) if len(hits) else None


def accuracy_after(correct: np.ndarray, stream: QualityStream) -> list[float]:
    """Mean accuracy over the :data:`AFTER` events after each known drift."""
    return [float(correct[t : t + AFTER].mean()) for t in stream.drifts]
