"""One event that overflows the model: dead-lettered whole, the rest of the stream unharmed.

Issue 12, defect 1: a record finite in float32 (``3e38``) overflowed the model; its NaN loss
stayed in the prequential window for good, blinded the drift detector and kept every later
snapshot from being published. Here, at small scale, a stream with a concept flip and one such
record early on.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import torch

from driftd.adapters.memory import InMemoryDeadLetterSink
from driftd.adapters.memory_snapshot_store import InMemorySnapshotStore
from driftd.adapters.memory_source import InMemoryRecordSource
from driftd.adapters.recording_telemetry import RecordingTelemetry
from driftd.app import build_trainer
from driftd.learning.learner import OnlineLearner
from driftd.loop import StopWhen
from driftd.loop_progress import LoopProgress
from driftd.records import Record
from driftd.settings.root import load_settings
from driftd.tools.streams import DriftingStream
from tests.fakes import FakeClock, tiny_learner

POISON_AT = 600  # events before the poison record
CLASSIFICATION_POISON = orjson.dumps({"x": [3e38] * 10, "y": 0})
REGRESSION_POISON = orjson.dumps({"x": [0.5] * 4, "y": 3e38})


def _records(events: list[dict[str, Any]], poison: bytes | None) -> list[Record]:
    records: list[Record] = []
    for index, event in enumerate(events):
        if index == POISON_AT and poison is not None:
            records.append(Record("events", 0, len(records), poison))
        records.append(Record("events", 0, len(records), orjson.dumps(event)))
    return records


def _classification_events() -> list[dict[str, Any]]:
    return list(DriftingStream(n_events=4_000, change_every=2_000).events())


def _regression_events() -> list[dict[str, Any]]:
    """``y = w·x + noise``; ``w`` flips sign at event 2,000 (a concept drift)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4_000, 4))
    w = np.array([1.0, -2.0, 0.5, 1.5])
    sign = np.where(np.arange(4_000) < 2_000, 1.0, -1.0)
    y = sign * (x @ w) + rng.normal(scale=0.1, size=4_000)
    return [{"x": row.round(5).tolist(), "y": float(t)} for row, t in zip(x, y, strict=True)]


def _run(
    tmp_path: Path, records: list[Record], model: dict[str, Any]
) -> tuple[LoopProgress, InMemorySnapshotStore, RecordingTelemetry, InMemoryDeadLetterSink]:
    settings = load_settings(
        model={"seed": 5, **model},
        learner={"batch_size": 50, "optimizer": "adam"},
        snapshots={"dir": str(tmp_path), "every_steps": 20, "every_seconds": 3600},
        metrics={"enabled": False},
    )
    store, telemetry, dead = (
        InMemorySnapshotStore(keep=100),
        RecordingTelemetry(),
        InMemoryDeadLetterSink(),
    )
    trainer = build_trainer(
        settings, source=InMemoryRecordSource(records), store=store, clock=FakeClock(),
        telemetry=telemetry, dead_letters=dead, serve_metrics=False,
    )  # fmt: skip
    progress = trainer.run(StopWhen(max_events=len(records)))
    return progress, store, telemetry, dead


def _assert_unharmed(
    progress: LoopProgress,
    store: InMemorySnapshotStore,
    telemetry: RecordingTelemetry,
    dead: InMemoryDeadLetterSink,
    poison: bytes,
) -> None:
    assert [(r.reason, r.record.offset, r.record.value) for r in dead.rejections] == [
        ("non_finite_loss", POISON_AT, poison)
    ], "the poison record is dead-lettered with its original bytes"
    assert telemetry.invalid == {"non_finite_loss": 1}
    assert progress.events_learned == 4_000, "every other event of its batch is learned"
    assert progress.drifts >= 1, "the concept flip at event 2,000 is still detected"
    assert math.isfinite(progress.loss if progress.loss is not None else math.nan)
    assert telemetry.unpublished == {}, "no snapshot is refused as non-finite"
    versions = store.versions()
    assert len(versions) >= 4
    assert store.latest_version() == versions[-1], "the newest snapshot is published"
    newest = store.load_newest()
    assert newest is not None
    assert newest.manifest["events_rejected"] == 1
    assert all(torch.isfinite(t).all() for t in newest.weights.values() if t.is_floating_point())


def test_an_overflowing_record_leaves_classification_drift_detection_intact(
    tmp_path: Path,
) -> None:
    model = {"n_classes": 3, "standardize": False}  # raw inputs: 3e38 overflows the model
    result = _run(tmp_path, _records(_classification_events(), CLASSIFICATION_POISON), model)
    _assert_unharmed(*result, CLASSIFICATION_POISON)
    assert (result[0].accuracy or 0.0) > 0.8


def test_an_overflowing_target_leaves_regression_drift_detection_intact(tmp_path: Path) -> None:
    model = {"task": "regression", "n_outputs": 1}
    result = _run(tmp_path, _records(_regression_events(), REGRESSION_POISON), model)
    _assert_unharmed(*result, REGRESSION_POISON)


def _learner(task: str = "classification") -> OnlineLearner:
    n_outputs = 3 if task == "classification" else 2
    return tiny_learner(task=task, n_features=4, n_outputs=n_outputs, hidden=8)


def test_the_learner_drops_only_the_rows_whose_loss_is_not_finite() -> None:
    learner = _learner()
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    x[2] = math.inf  # what an overflow in the first layer amounts to
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    labelled = torch.tensor([True, True, True, False, True, True])
    report = learner.learn_many(x, y, labelled)
    assert report.dropped is not None
    assert report.dropped.tolist() == [False, False, True, False, False, False]
    assert (report.n_events, report.n_learned, len(report.event_losses)) == (5, 4, 4)
    assert len(report.predictions) == 5
    assert report.skipped is None
    assert math.isfinite(report.loss if report.loss is not None else math.nan)
    assert learner.window.count == 4
    assert math.isfinite(learner.window.loss if learner.window.loss is not None else math.nan)
    assert all(torch.isfinite(p).all() for p in learner.model.parameters())
    assert learner.steps == 1


def test_a_batch_of_only_overflowing_rows_skips_the_step() -> None:
    learner = _learner("regression")
    x = torch.zeros(3, 4)
    y = torch.full((3, 2), 3e38)
    report = learner.learn_many(x, y, torch.ones(3, dtype=torch.bool))
    assert report.dropped is not None
    assert report.dropped.tolist() == [True, True, True]
    assert (report.n_events, report.n_learned, report.skipped) == (0, 0, "non_finite_loss")
    assert report.predictions.shape == (0, 2)
    assert (learner.steps, learner.window.count) == (0, 0)


def test_a_clean_batch_reports_nothing_dropped() -> None:
    learner = _learner()
    report = learner.learn_many(torch.zeros(4, 4), torch.zeros(4, dtype=torch.int64),
                                torch.ones(4, dtype=torch.bool))  # fmt: skip
    assert report.dropped is None
    assert report.n_events == 4


def test_a_huge_but_finite_loss_without_standardisation_passes_through_the_window() -> None:
    """Raw values of ±1e30 with ``model.standardize = false``: the loss is finite, so the rows
    are learned, not dead-lettered. Adam's normalised step keeps the weights finite and small,
    learning goes on, and the windowed loss recovers once the row leaves the window."""
    from driftd.library import Learner

    rng = np.random.default_rng(0)
    x = rng.normal(size=(4_000, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    learner = Learner(
        model={"standardize": False}, learner={"metrics_window": 500}, drift={"enabled": False}
    )
    learner.learn_many(x[:1_000], y[:1_000])
    outlier, labels = x[1_000:1_100].copy(), y[1_000:1_100].copy()
    outlier[5], outlier[6], labels[5:7] = 1e30, -1e30, 1  # opposite logits: one of them is wrong
    learner.learn_many(outlier, labels)
    learner.learn_many(x[1_100:1_300], y[1_100:1_300])
    assert learner.metrics["loss"] is not None
    assert 1e20 < learner.metrics["loss"] < math.inf  # the one row dominates the window's mean
    learner.learn_many(x[1_300:3_000], y[1_300:3_000])
    weights = torch.cat([p.detach().flatten() for p in learner.model.parameters()])  # type: ignore[union-attr]
    assert bool(torch.isfinite(weights).all())
    assert float(weights.abs().max()) < 10.0
    assert learner.metrics["loss"] < 0.5  # the row left the 500-event window
    assert float((learner.predict_many(x[3_000:]) == y[3_000:]).mean()) > 0.9
    assert not [event for event in learner.events if "non_finite" in repr(event)]
