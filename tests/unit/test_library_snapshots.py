"""``Learner.save`` / ``Learner.load``: the daemon's snapshot format, served and resumed."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import torch

from driftd import HotModel
from driftd.adapters.file_snapshot_store import FileSnapshotStore
from driftd.adapters.memory import DiscardingDeadLetterSink
from driftd.adapters.memory_source import InMemoryRecordSource
from driftd.adapters.recording_telemetry import RecordingTelemetry
from driftd.app import build_trainer
from driftd.library import Learner, ModelPruned
from driftd.loop import StopWhen
from driftd.records import Record
from driftd.settings.root import load_settings
from driftd.tools.streams import DriftingStream

BATCH = 50
OPTIONS: dict[str, Any] = {
    "model": {"n_classes": 3, "seed": 4, "hidden": [16]},
    "learner": {"batch_size": BATCH, "micro_batch": 10},
}


def _arrays() -> tuple[np.ndarray, np.ndarray]:
    events = list(DriftingStream(n_events=600, n_features=5, change_every=10**6, seed=9).events())
    return np.array([e["x"] for e in events]), np.array([e["y"] for e in events])


def _trained(x: np.ndarray, y: np.ndarray, *, until: int = 400) -> Learner:
    learner = Learner(**OPTIONS)
    for start in range(0, until, BATCH):
        learner.learn_many(x[start : start + BATCH], y[start : start + BATCH])
    return learner


def _weights(model: torch.nn.Module | None) -> dict[str, torch.Tensor]:
    assert model is not None
    return model.state_dict()


def _assert_same_weights(first: torch.nn.Module | None, second: torch.nn.Module | None) -> None:
    a, b = _weights(first), _weights(second)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_hot_model_serves_a_saved_learner_with_identical_predictions(tmp_path: Path) -> None:
    x, y = _arrays()
    learner = _trained(x, y)

    version = learner.save(tmp_path)

    served = HotModel(tmp_path, start=False)
    predictions = served.predict(x[400:])
    assert served.version == version == 1
    assert predictions.classes is not None
    assert predictions.probabilities is not None
    np.testing.assert_array_equal(predictions.classes, learner.predict_many(x[400:]))
    np.testing.assert_array_equal(predictions.probabilities, learner.predict_proba_many(x[400:]))
    manifest = json.loads((tmp_path / "0000000001" / "manifest.json").read_text())
    assert manifest["offsets"] == []
    assert manifest["library"]["settings"]["model"]["n_classes"] == 3
    assert learner.save(tmp_path) == 2  # numbered past what the directory holds


def test_the_daemon_resumes_from_a_saved_learner_as_a_warm_start(tmp_path: Path) -> None:
    x, y = _arrays()
    learner = _trained(x, y)
    learner.save(tmp_path)
    records = [
        Record("events", 0, i, orjson.dumps({"x": row, "y": int(label)}))
        for i, (row, label) in enumerate(zip(x[400:].tolist(), y[400:], strict=True))
    ]
    settings = load_settings(
        **OPTIONS,
        snapshots={"dir": str(tmp_path), "every_steps": 10**6},
        metrics={"enabled": False},
    )
    trainer = build_trainer(
        settings,
        source=InMemoryRecordSource(records),
        store=FileSnapshotStore(tmp_path, keep=5),
        telemetry=RecordingTelemetry(),
        dead_letters=DiscardingDeadLetterSink(),
        serve_metrics=False,
    )
    state = trainer.loop.state
    assert state.steps == learner.steps == 8
    assert state.offsets == {}  # a warm start: the consumer starts where Kafka says
    _assert_same_weights(state.learner.model if state.learner else None, learner.model)

    trainer.run(StopWhen(max_events=len(records)))
    for start in range(400, 600, BATCH):  # the learner goes on with the same polls
        learner.learn_many(x[start : start + BATCH], y[start : start + BATCH])

    assert trainer.store.versions() == [1, 2]
    _assert_same_weights(state.learner.model if state.learner else None, learner.model)


def test_load_restores_everything_learning_goes_on_from(tmp_path: Path) -> None:
    x, y = _arrays()
    names = [f"f{i}" for i in range(x.shape[1])]
    learner = Learner(**OPTIONS)
    for row, label in zip(x[:120], y[:120], strict=True):  # river's protocol, names and labels
        learner.learn_one(dict(zip(names, row, strict=True)), ["a", "b", "c"][label])
    learner.save(tmp_path)

    loaded = Learner.load(tmp_path)

    assert loaded.feature_names == names
    assert loaded.steps == learner.steps == 120
    assert loaded.settings.model.hidden == [16]
    event = dict(zip(names, x[500], strict=True))
    assert loaded.predict_proba_one(event) == learner.predict_proba_one(event)
    assert loaded.predict_one(event) in {"a", "b", "c"}
    for start in range(120, 300, BATCH):  # both go on identically: optimizer, LR policy, window
        labels = [["a", "b", "c"][label] for label in y[start : start + BATCH]]
        np.testing.assert_array_equal(
            loaded.learn_many(x[start : start + BATCH], labels),
            learner.learn_many(x[start : start + BATCH], labels),
        )
    _assert_same_weights(loaded.model, learner.model)
    assert loaded.metrics == learner.metrics
    assert Learner.load(tmp_path).save(tmp_path / "again") == 1  # a loaded learner saves as is


def test_saving_before_learning_and_loading_nothing_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="nothing learnt yet"):
        Learner(**OPTIONS).save(tmp_path)
    with pytest.raises(FileNotFoundError, match="no readable driftd snapshot"):
        Learner.load(tmp_path)


def test_load_reads_a_snapshot_the_daemon_wrote(tmp_path: Path) -> None:
    x, y = _arrays()
    records = [
        Record("events", 0, i, orjson.dumps({"x": row, "y": int(label)}))
        for i, (row, label) in enumerate(zip(x.tolist(), y, strict=True))
    ]
    settings = load_settings(
        **OPTIONS, snapshots={"dir": str(tmp_path)}, metrics={"enabled": False}
    )
    trainer = build_trainer(
        settings,
        source=InMemoryRecordSource(records),
        telemetry=RecordingTelemetry(),
        dead_letters=DiscardingDeadLetterSink(),
        serve_metrics=False,
    )
    trainer.run(StopWhen(max_events=len(records)))

    loaded = Learner.load(tmp_path, **OPTIONS)

    state = trainer.loop.state
    assert loaded.steps == state.steps == 12
    _assert_same_weights(loaded.model, state.learner.model if state.learner else None)
    served = HotModel(tmp_path, start=False).predict(x[:50])
    np.testing.assert_array_equal(served.probabilities, loaded.predict_proba_many(x[:50]))


def test_a_pruned_learner_reports_pruning_and_serves_what_it_predicts(tmp_path: Path) -> None:
    x, y = _arrays()
    pruning = {"enabled": True, "every_steps": 3, "baseline_events": 64, "verify_events": 64}
    learner = Learner(**OPTIONS, pruning=pruning | {"replay_events": 128})
    for start in range(0, 600, BATCH):
        learner.learn_many(x[start : start + BATCH], y[start : start + BATCH])

    outcomes = [e.outcome for e in learner.events if isinstance(e, ModelPruned)]
    assert outcomes
    assert set(outcomes) <= {"kept", "recovered", "rolled_back", "interrupted"}
    learner.save(tmp_path)
    served = HotModel(tmp_path, start=False).predict(x[:100])
    np.testing.assert_array_equal(served.probabilities, learner.predict_proba_many(x[:100]))


def test_a_pickled_or_deep_copied_learner_goes_on_exactly_as_the_original() -> None:
    """river's estimator checks pickle and copy learners: the copy is a saved snapshot."""
    x, y = _arrays()
    learner = Learner(**OPTIONS)
    learner.learn_many(x[:200], y[:200])
    fresh = pickle.loads(pickle.dumps(Learner(**OPTIONS)))
    assert fresh.steps == 0
    assert fresh.settings == learner.settings
    for copy_ in (pickle.loads(pickle.dumps(learner)), copy.deepcopy(learner)):
        assert type(copy_) is type(learner)
        assert (copy_.steps, copy_.events) == (learner.steps, learner.events)
        _assert_same_weights(copy_.model, learner.model)
    copied = copy.deepcopy(learner)
    for start in range(200, 400, BATCH):
        np.testing.assert_array_equal(
            copied.learn_many(x[start : start + BATCH], y[start : start + BATCH]),
            learner.learn_many(x[start : start + BATCH], y[start : start + BATCH]),
        )
    _assert_same_weights(copied.model, learner.model)
    assert copied.metrics == learner.metrics
