"""Regression reports MAE, RMSE and R², never an accuracy (issue 12, defect 5)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry

from driftd.adapters.memory import InMemoryDeadLetterSink
from driftd.adapters.memory_snapshot_store import InMemorySnapshotStore
from driftd.adapters.memory_source import InMemoryRecordSource
from driftd.app import Trainer, build_trainer
from driftd.loop import StopWhen
from driftd.records import Record
from driftd.settings.root import load_settings
from driftd.tools.progress_line import progress_fields
from driftd.wiring.adaptation import make_monitor
from tests.fakes import FakeClock


def _records(n: int, task: str) -> list[Record]:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(n, 4))
    values = x @ np.array([1.0, -2.0, 0.5, 1.5]) + rng.normal(scale=0.1, size=n)
    records = []
    for i in range(n):
        y: Any = float(values[i]) if task == "regression" else int(values[i] > 0)
        records.append(Record("events", 0, i, orjson.dumps({"x": x[i].tolist(), "y": y})))
    return records


def _run(tmp_path: Path, task: str) -> tuple[Trainer, CollectorRegistry, InMemorySnapshotStore]:
    model: dict[str, Any] = (
        {"task": "regression", "n_outputs": 1} if task == "regression" else {"n_classes": 2}
    )
    settings = load_settings(
        model={"seed": 1, **model},
        learner={"batch_size": 32, "optimizer": "adam", "lr": 0.01},
        snapshots={"dir": str(tmp_path), "every_steps": 1000, "every_seconds": 3600},
        metrics={"enabled": False},
    )
    registry, store = CollectorRegistry(), InMemorySnapshotStore(keep=3)
    records = _records(2_000, task)
    trainer = build_trainer(
        settings, source=InMemoryRecordSource(records), store=store, clock=FakeClock(),
        registry=registry, dead_letters=InMemoryDeadLetterSink(), serve_metrics=False,
    )  # fmt: skip
    trainer.run(StopWhen(max_events=len(records)))
    return trainer, registry, store


def _gauge(registry: CollectorRegistry, name: str) -> float:
    value = registry.get_sample_value(name)
    assert value is not None, name
    return value


def test_regression_has_no_accuracy_but_mae_rmse_and_r2_everywhere(tmp_path: Path) -> None:
    trainer, registry, store = _run(tmp_path, "regression")
    learner = trainer.loop.state.learner
    assert learner is not None
    window = learner.window
    assert window.accuracy is None
    assert window.mae is not None
    assert window.rmse is not None
    assert window.r2 is not None
    assert 0.0 < window.mae <= window.rmse
    assert window.r2 > 0.8, "a linear target is learned"
    assert window.loss is not None
    assert math.isclose(window.loss, window.rmse**2, rel_tol=1e-4), "mse loss = RMSE²"

    assert math.isnan(_gauge(registry, "driftd_prequential_accuracy")), "no accuracy: NaN"
    assert _gauge(registry, "driftd_prequential_mae") == window.mae
    assert _gauge(registry, "driftd_prequential_rmse") == window.rmse
    assert _gauge(registry, "driftd_prequential_r2") == window.r2

    snapshot = store.load_newest()
    assert snapshot is not None
    metrics = snapshot.manifest["metrics"]
    assert metrics["prequential_accuracy"] is None
    assert metrics["baseline_accuracy"] is None
    assert (metrics["prequential_mae"], metrics["prequential_rmse"], metrics["prequential_r2"]) == (
        window.mae, window.rmse, window.r2,
    )  # fmt: skip
    gate = snapshot.manifest["gate"]
    assert gate["loss"] == window.loss, "the gate judges regression on its loss"
    assert gate["baseline_loss"] > gate["loss"], "better than always predicting the mean"
    assert gate["published"]

    progress = trainer.loop.progress
    assert progress.accuracy is None
    assert (progress.mae, progress.rmse, progress.r2) == (window.mae, window.rmse, window.r2)
    quality = progress_fields(progress, rate=1.0)[1]
    assert quality == f"r2 {window.r2:.3f} mae {window.mae:.3g}"


def test_classification_reports_accuracy_and_no_regression_metrics(tmp_path: Path) -> None:
    trainer, registry, store = _run(tmp_path, "classification")
    accuracy = _gauge(registry, "driftd_prequential_accuracy")
    assert 0.8 < accuracy <= 1.0
    for name in ("mae", "rmse", "r2"):
        assert math.isnan(_gauge(registry, f"driftd_prequential_{name}"))
    snapshot = store.load_newest()
    assert snapshot is not None
    assert snapshot.manifest["metrics"]["prequential_accuracy"] == accuracy
    assert "prequential_mae" not in snapshot.manifest["metrics"]
    assert progress_fields(trainer.loop.progress, rate=1.0)[1] == f"acc {accuracy:.3f}"


def test_regression_with_the_default_detector_watches_its_loss() -> None:
    settings = load_settings(model={"task": "regression", "n_outputs": 1})
    monitor = make_monitor(settings.drift, task="regression")
    assert monitor is not None
    assert monitor.concept is not None
    assert (monitor.concept.name, monitor.concept.signal) == ("adwin", "loss")
    classification = make_monitor(settings.drift, task="classification")
    assert classification is not None
    assert classification.concept is not None
    assert classification.concept.signal == settings.drift.concept_signal


def test_an_error_detector_chosen_for_regression_is_refused() -> None:
    settings = load_settings(model={"task": "regression", "n_outputs": 1},
                             drift={"detector": "ddm"})  # fmt: skip
    with pytest.raises(ValueError, match="needs classification"):
        make_monitor(settings.drift, task="regression")
