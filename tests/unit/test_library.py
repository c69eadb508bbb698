"""``driftd.Learner``: the daemon's loop as a library, checked against the daemon itself."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson
import pytest
import torch

import driftd
from driftd.adapters.memory import DiscardingDeadLetterSink
from driftd.adapters.memory_snapshot_store import InMemorySnapshotStore
from driftd.adapters.memory_source import InMemoryRecordSource
from driftd.adapters.recording_telemetry import RecordingTelemetry
from driftd.app import build_trainer
from driftd.decode import DecodedBatch
from driftd.learning.learner import StepReport
from driftd.library import DriftDetected, Learner, ModelAdapted
from driftd.loop import StopWhen
from driftd.records import Record, TopicPartition
from driftd.settings.root import ConfigurationError, load_settings
from driftd.tools.streams import DriftingStream

BATCH = 50
STREAM = DriftingStream(n_events=1_500, n_features=6, change_every=750, seed=3)


def _options(micro_batch: int | str = 10) -> dict[str, Any]:
    return {
        "model": {"n_classes": 3, "seed": 11, "hidden": [16, 16]},
        "learner": {"batch_size": BATCH, "micro_batch": micro_batch, "max_micro_batch": 32},
        "snapshots": {"dir": "unused", "every_steps": 10**6, "every_seconds": 10**6},
        "metrics": {"enabled": False},
    }


def _arrays(stream: DriftingStream = STREAM) -> tuple[np.ndarray, np.ndarray]:
    events = list(stream.events())
    return np.array([e["x"] for e in events]), np.array([e["y"] for e in events])


class _LiveSource(InMemoryRecordSource):
    """Replays the records as a live stream would arrive: nothing ever waits behind a poll."""

    def lag(self) -> Mapping[TopicPartition, int]:
        return {}


def _daemon_run(
    options: dict[str, Any], x: np.ndarray, y: np.ndarray
) -> tuple[torch.nn.Module, np.ndarray, RecordingTelemetry]:
    """The daemon's loop (build_trainer) over the same events, polled ``BATCH`` at a time."""
    records = [
        Record("events", 0, i, orjson.dumps({"x": row, "y": int(label)}))
        for i, (row, label) in enumerate(zip(x.tolist(), y, strict=True))
    ]
    predicted = np.full(len(records), -1)

    def on_report(report: StepReport, batch: DecodedBatch) -> None:
        predicted[[r.offset for r in batch.records]] = report.predictions.numpy()

    telemetry = RecordingTelemetry()
    trainer = build_trainer(
        load_settings(**options), source=_LiveSource(records), store=InMemorySnapshotStore(keep=1),
        telemetry=telemetry, dead_letters=DiscardingDeadLetterSink(), serve_metrics=False,
        on_report=on_report,
    )  # fmt: skip
    trainer.run(StopWhen(max_events=len(records)))
    learner = trainer.loop.state.learner
    assert learner is not None
    return learner.model, predicted, telemetry


def _learner_run(
    options: dict[str, Any], x: np.ndarray, y: np.ndarray
) -> tuple[Learner, np.ndarray]:
    learner = Learner(**options)
    predicted = [
        learner.learn_many(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)
    ]
    return learner, np.concatenate(predicted)


def _assert_same_tensors(
    first: Mapping[str, torch.Tensor], second: Mapping[str, torch.Tensor]
) -> None:
    assert first.keys() == second.keys()
    for name, tensor in first.items():
        assert torch.equal(tensor, second[name]), name


@pytest.mark.parametrize("micro_batch", [10, "auto"])
def test_learn_many_is_the_daemons_loop_bit_for_bit(micro_batch: int | str) -> None:
    options = _options(micro_batch)
    x, y = _arrays()
    daemon_model, daemon_predicted, telemetry = _daemon_run(options, x, y)
    learner, predicted = _learner_run(options, x, y)

    assert learner.model is not None
    _assert_same_tensors(daemon_model.state_dict(), learner.model.state_dict())
    np.testing.assert_array_equal(predicted, daemon_predicted)
    # The concept change at 750 was seen, and acted on, identically by both.
    assert sum(telemetry.drifts.values()) >= 1
    drifts = [e for e in learner.events if isinstance(e, DriftDetected) and e.kind == "drift"]
    adaptations = [e.kind for e in learner.events if isinstance(e, ModelAdapted)]
    assert len(drifts) == sum(telemetry.drifts.values())
    assert sorted(adaptations) == sorted(telemetry.adaptations.elements())
    assert all(e.events_seen > 750 for e in drifts)


def test_the_prediction_returned_is_the_one_made_before_learning() -> None:
    x, y = _arrays()
    learner = Learner(**_options())
    learner.learn_many(x[:200], y[:200])
    before = learner.predict_many(x[200:210])
    probabilities = learner.predict_proba_many(x[200:210])

    prequential = learner.learn_many(x[200:210], y[200:210])

    np.testing.assert_array_equal(prequential, before)  # one micro-batch: predicted, then learnt
    np.testing.assert_array_equal(probabilities.argmax(axis=1), before)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    assert learner.steps == 2  # like the daemon's step counter: one per poll (learn_many call)
    assert not np.array_equal(learner.predict_proba_many(x[200:210]), probabilities)
    assert learner.metrics["accuracy"] is not None


def test_events_reach_the_list_and_the_callback_as_frozen_values() -> None:
    seen: list[driftd.library.LearnerEvent] = []
    x, y = _arrays()
    learner = Learner(on_event=seen.append, **_options())
    for start in range(0, len(x), BATCH):
        learner.learn_many(x[start : start + BATCH], y[start : start + BATCH])

    assert seen == learner.events
    assert any(isinstance(e, DriftDetected) for e in seen)
    with pytest.raises(dataclasses.FrozenInstanceError):
        seen[0].step = 0  # type: ignore[misc]
    assert [e.events_seen for e in seen] == sorted(e.events_seen for e in seen)


def test_unlabelled_events_are_predicted_and_not_learnt() -> None:
    x, y = _arrays()
    learner = Learner(**_options())
    learner.learn_many(x[:100], y[:100])
    assert learner.model is not None
    before = [p.detach().clone() for p in learner.model.parameters()]

    predicted = learner.learn_many(x[100:110], [None] * 10)

    np.testing.assert_array_equal(predicted, learner.predict_many(x[100:110]))
    assert all(torch.equal(a, b) for a, b in zip(before, learner.model.parameters(), strict=True))
    assert learner.steps == 1  # no gradient step: nothing labelled


def test_domains_are_the_events_domain_field() -> None:
    x, y = _arrays()
    learner = Learner(**_options())
    learner.learn_many(x[:50], y[:50], domains="plant-a")
    learner.learn_many(x[50:100], y[50:100], domains=["plant-a", "plant-b"] * 25)

    # A head per domain, as the daemon's adaptation makes for events with a "domain" field.
    assert [(e.kind, e.events_seen) for e in learner.events if isinstance(e, ModelAdapted)] == [
        ("new_head", 0),
        ("new_head", 99),
    ]
    with pytest.raises(ValueError, match="3 domains for 2 rows"):
        learner.learn_many(x[:2], y[:2], domains=["a", "b", "c"])


class _Frame:
    """Just enough of a pandas DataFrame: named columns and ``to_numpy``."""

    def __init__(self, columns: Sequence[str], values: np.ndarray) -> None:
        self.columns = list(columns)
        self._values = values

    def to_numpy(self) -> np.ndarray:
        return self._values


def test_dataframe_columns_are_remembered_and_tensors_accepted() -> None:
    x, y = _arrays()
    names = [f"f{i}" for i in range(x.shape[1])]
    learner = Learner(**_options())
    learner.learn_many(_Frame(names, x[:100]), y[:100])
    shuffled = names[::-1]

    reordered = learner.predict_many(_Frame(shuffled, x[100:120][:, ::-1]))

    assert learner.feature_names == names
    np.testing.assert_array_equal(reordered, learner.predict_many(x[100:120]))
    np.testing.assert_array_equal(
        learner.predict_many(torch.from_numpy(x[100:120])), learner.predict_many(x[100:120])
    )
    with pytest.raises(ValueError, match=r"columns missing from the DataFrame: \['f5'\]"):
        learner.predict_many(_Frame(names[:5], x[:3, :5]))


def test_real_pandas_dataframe() -> None:
    import pandas

    x, y = _arrays()
    learner = Learner(**_options())
    frame = pandas.DataFrame(x[:100], columns=[f"f{i}" for i in range(x.shape[1])])
    learner.learn_many(frame, pandas.Series(y[:100]))
    np.testing.assert_array_equal(
        learner.predict_many(frame[frame.columns[::-1]]), learner.predict_many(x[:100])
    )


def test_bad_input_is_refused_with_the_row_and_the_reason() -> None:
    x, y = _arrays()
    learner = Learner(**_options())
    learner.learn_many(x[:50], y[:50])
    steps = learner.steps
    with_nan = x[50:60].copy()
    with_nan[3, 2] = np.nan

    with pytest.raises(ValueError, match="5 features, expected 6"):
        learner.learn_many(x[50:60, :5], y[50:60])
    with pytest.raises(
        ValueError, match=r"row 3, feature 2: nan is not a finite float32 \(1 such rows\)"
    ):
        learner.learn_many(with_nan, y[50:60])
    with pytest.raises(ValueError, match=r"row 1: label 7 is beyond model.n_classes=3"):
        learner.learn_many(x[50:52], [0, 7])
    with pytest.raises(ValueError, match="2 labels for 3 rows"):
        learner.learn_many(x[50:53], [0, 1])
    with pytest.raises(ValueError, match="expected a 2-D batch"):
        learner.predict_many(x[0])
    assert learner.steps == steps  # nothing half-learnt


def test_labels_may_be_indices_booleans_or_names() -> None:
    x, y = _arrays()
    names = ["low", "mid", "high"]
    named = Learner(**_options(), event={"labels": names})

    predicted = named.learn_many(x[:50], [names[label] for label in y[:50]])
    named.learn_many(x[50:60], y[50:60])  # configured names: indices too, as the daemon's events

    assert set(predicted) <= set(names)
    assert set(named.predict_proba_one(dict(enumerate(x[0])))) == set(names)
    booleans = Learner(model={"seed": 1}, learner={"micro_batch": 8})
    assert booleans.learn_many(x[:20], x[:20, 0] > 0).dtype == bool
    with pytest.raises(ValueError, match="row 1: label True is a bool, earlier ones were int"):
        Learner(**_options()).learn_many(x[:2], [0, True])
    with pytest.raises(ValueError, match=r"row 0: label 'd' is beyond model\.n_classes=3"):
        named.learn_many(x[:1], ["d"])


def test_invalid_settings_name_the_field() -> None:
    with pytest.raises(ConfigurationError, match=r"learner\.batch_size"):
        Learner(learner={"batch_size": 0})
    with pytest.raises(ConfigurationError, match=r"model\.nclasses"):
        Learner(model={"nclasses": 3})


def test_regression_predicts_values() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 4))
    target = x @ np.array([1.0, -2.0, 0.5, 0.0]) + 3.0
    learner = Learner(model={"task": "regression", "seed": 1}, learner={"micro_batch": 8})
    first = learner.learn_many(x[:200], target[:200])
    for start in range(200, 400, 50):
        learner.learn_many(x[start : start + 50], target[start : start + 50])

    later = learner.predict_many(x[:200])
    assert first.shape == later.shape == (200,)
    assert np.abs(later - target[:200]).mean() < np.abs(first - target[:200]).mean() / 2
    assert learner.metrics["mae"] is not None
    with pytest.raises(TypeError, match="classification"):
        learner.predict_proba_many(x[:2])


def test_the_public_api_is_pinned() -> None:
    assert driftd.__all__ == [
        "DriftDetected", "HotModel", "Learner", "ModelAdapted", "ModelNotReadyError",
        "ModelPruned", "Predictions", "SnapshotError", "__version__",
    ]  # fmt: skip
    for name in driftd.__all__:
        assert getattr(driftd, name) is not None
    assert driftd.Learner is Learner
