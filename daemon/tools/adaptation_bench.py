"""Evidence that re-adaptation pays: events to recover after abrupt, recurring concept changes.

:func:`measure_recovery` runs the real loop (JSON decode, learn, adapt) on a seeded
:class:`~driftd.tools.streams.DriftingStream` from an in-process source, once per variant:

- ``fixed_lr``: constant LR, no drift detection, no adaptation;
- ``adaptive_lr``: the loss-aware LR policy alone (no drift detection);
- ``drift_lr``: drift detection driving the LR only (head boost, policy restart);
- ``full``: the default adaptation (LR, trunk freeze, domain heads, replay).

For each change point ``t`` it takes the prequential accuracy of the ``pre_window`` events
before ``t`` as the level to regain, and counts the events after ``t`` until the accuracy over
the last ``window`` events (all after ``t``) is back within ``tolerance`` of it (``None``: not
within the concept). :func:`measure_monitor_cost` times each detector alone, per event.
"""

from __future__ import annotations

import logging
import statistics
import time
from typing import Any

import numpy as np
import orjson
import torch

from driftd.adaptation.detectors import DETECTORS, is_binary
from driftd.adaptation.drift import SignalMonitor
from driftd.adapters.memory import DiscardingDeadLetterSink
from driftd.adapters.memory_snapshot_store import InMemorySnapshotStore
from driftd.adapters.memory_source import InMemoryRecordSource
from driftd.adapters.recording_telemetry import RecordingTelemetry
from driftd.app import build_trainer
from driftd.decode import DecodedBatch
from driftd.learning.learner import StepReport
from driftd.logs import driftd_log_level
from driftd.loop import StopWhen
from driftd.records import Record
from driftd.settings.root import load_settings
from driftd.tools.streams import DriftingStream

VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "fixed_lr": {"lr": {"policy": "constant"}, "drift": {"enabled": False},
                 "adaptation": {"enabled": False}},
    "adaptive_lr": {"drift": {"enabled": False}, "adaptation": {"enabled": False}},
    "drift_lr": {"adaptation": {"heads": False, "trunk_hold_steps": 0, "replay_steps": 0}},
    "full": {},
}  # fmt: skip


def recovery_events(
    correct: np.ndarray, change: int, end: int, *, window: int, pre_window: int, tolerance: float
) -> int | None:
    """Events after ``change`` until the trailing accuracy is back near the old level.

    The level is the accuracy of the ``pre_window`` events before ``change``; recovered means
    the last ``window`` events (all after ``change``) within ``tolerance`` of it. None: not
    before ``end``.
    """
    level = float(correct[max(0, change - pre_window) : change].mean())
    after = correct[change:end].astype(np.float64)
    if len(after) < window:
        return None
    rolling = np.convolve(after, np.ones(window) / window, mode="valid")
    hits = np.flatnonzero(rolling >= level - tolerance)
    return int(hits[0]) + window if len(hits) else None


def _run(
    stream: DriftingStream, records: list[Record], overrides: dict[str, Any], batch_size: int
) -> tuple[np.ndarray, RecordingTelemetry, float]:
    options: dict[str, Any] = {
        "model": {"n_classes": stream.n_classes, "seed": stream.seed},
        "learner": {"batch_size": batch_size},
        "snapshots": {"dir": "unused", "every_steps": 10**9, "every_seconds": 10**9},
        "metrics": {"enabled": False},
    }
    for section, values in overrides.items():
        options[section] = {**options.get(section, {}), **values}
    settings = load_settings(**options)
    correct = np.zeros(len(records), dtype=bool)

    def on_report(report: StepReport, batch: DecodedBatch) -> None:
        offsets = [record.offset for record in batch.records]
        correct[offsets] = (report.predictions == batch.y).numpy()

    telemetry = RecordingTelemetry()
    trainer = build_trainer(
        settings, source=InMemoryRecordSource(records), store=InMemorySnapshotStore(keep=1),
        telemetry=telemetry, dead_letters=DiscardingDeadLetterSink(), serve_metrics=False,
        on_report=on_report,
    )  # fmt: skip
    started = time.perf_counter()
    trainer.run(StopWhen(max_events=len(records)))
    return correct, telemetry, time.perf_counter() - started


def measure_recovery(
    *,
    n_events: int = 60_000,
    change_every: int = 10_000,
    n_features: int = 4,
    seed: int = 7,
    batch_size: int = 32,
    window: int = 200,
    pre_window: int = 1_000,
    tolerance: float = 0.05,
    variants: tuple[str, ...] = tuple(VARIANTS),
) -> dict[str, Any]:
    """Compare the variants on one seeded stream with abrupt, recurring concept changes.

    Returns:
        ``{"stream": {...}, "changes": [...], "variants": {name: {...}}}``; each variant has
        ``accuracy`` (whole stream), ``recover_events`` per change, ``recover_mean`` over the
        changes that recovered, ``recurring_mean`` over changes back to a seen concept,
        ``accuracy_after`` (the 1,000 events after each change), detections and adaptations
        counts and ``events_per_s``.
    """
    torch.set_num_threads(1)
    stream = DriftingStream(
        n_events=n_events, n_features=n_features, change_every=change_every, seed=seed
    )
    records = [
        Record("bench", 0, index, orjson.dumps(event))
        for index, event in enumerate(stream.events())
    ]
    changes = list(range(change_every, n_events, change_every))
    recurring = [t for t in changes if t // change_every >= stream.n_concepts]
    results: dict[str, Any] = {}
    for name in variants:
        with driftd_log_level(logging.WARNING):
            correct, telemetry, seconds = _run(stream, records, VARIANTS[name], batch_size)
        recover = [
            recovery_events(correct, t, min(t + change_every, n_events), window=window,
                            pre_window=pre_window, tolerance=tolerance)
            for t in changes
        ]  # fmt: skip
        done = [r for r in recover if r is not None]
        again = [r for t, r in zip(changes, recover, strict=True) if t in recurring and r]
        results[name] = {
            "accuracy": float(correct.mean()),
            "recover_events": recover,
            "recover_mean": statistics.fmean(done) if done else None,
            "recurring_mean": statistics.fmean(again) if again else None,
            "accuracy_after": [float(correct[t : t + 1_000].mean()) for t in changes],
            "drifts": sum(telemetry.drifts.values()),
            "adaptations": dict(telemetry.adaptations),
            "domains": list(dict.fromkeys(telemetry.domains)),
            "events_per_s": n_events / seconds,
        }
    return {
        "stream": {"n_events": n_events, "change_every": change_every, "n_features": n_features,
                   "seed": seed, "batch_size": batch_size, "window": window,
                   "tolerance": tolerance},
        "changes": changes,
        "variants": results,
    }  # fmt: skip


def measure_monitor_cost(
    *, n_events: int = 200_000, batch: int = 256, seed: int = 0
) -> dict[str, float]:
    """Microseconds per event of each concept detector, alone, on 256-event batches.

    Every event is fed (KSWIN: its default one in 32); the tensor-to-list conversion counts.
    """
    generator = torch.Generator().manual_seed(seed)
    losses = torch.rand(n_events, generator=generator)
    errors = (losses < 0.3).to(torch.float64)
    costs: dict[str, float] = {}
    for name in DETECTORS:
        monitor = SignalMonitor(
            detector=name, params={}, signal="error" if is_binary(name) else "loss",
            batch_mean=False,
        )  # fmt: skip
        values = errors if is_binary(name) else losses
        started = time.perf_counter()
        for start in range(0, n_events, batch):
            monitor.update_many(values[start : start + batch].tolist())
        costs[name] = (time.perf_counter() - started) / n_events * 1e6
    return costs
