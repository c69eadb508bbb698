"""The inference worker over in-memory adapters: one message per event, flush before commit."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import torch
from prometheus_client import CollectorRegistry

from driftd.adapters.file_snapshot_store import FileSnapshotStore
from driftd.adapters.memory import InMemoryDeadLetterSink
from driftd.adapters.memory_source import InMemoryRecordSource
from driftd.infer import InferenceWorker, build_inference_worker
from driftd.learning.models import build_model
from driftd.loop import StopWhen
from driftd.ports import Snapshot
from driftd.records import Record, TopicPartition
from driftd.settings.root import ModelSettings, Settings, load_settings
from driftd.wiring.learning import model_config_from_settings
from tests.fakes import FakeClock

CONFIG = model_config_from_settings(ModelSettings(n_classes=3, hidden=[8]), 4)
NOW = FakeClock().time()


class ListSink:
    """A prediction sink that keeps acknowledged messages; ``failing`` makes flush raise."""

    def __init__(self) -> None:
        self.queued: list[tuple[bytes | None, bytes]] = []
        self.acknowledged: list[tuple[bytes | None, dict[str, Any]]] = []
        self.failing = False

    def send(self, key: bytes | None, value: bytes) -> None:
        self.queued.append((key, value))

    def flush(self, timeout_s: float) -> None:
        if self.failing:
            raise RuntimeError("broker unreachable")
        self.acknowledged += [(key, orjson.loads(value)) for key, value in self.queued]
        self.queued = []

    def close(self) -> None:
        pass


def events(partition: int, n: int, *, start: int = 0) -> list[Record]:
    records = []
    for index in range(n):
        event = {"x": [index, 1.0, -1.0, 0.5], "y": "not-a-class", "id": f"e{partition}-{index}"}
        event["ts"] = NOW - 2.0
        key = f"k{index}".encode()
        records.append(Record("events", partition, start + index, orjson.dumps(event), key))
    return records


def settings(tmp_path: Path, **sections: Any) -> Settings:
    return load_settings(
        snapshots={"dir": str(tmp_path / "snapshots")},
        metrics={"enabled": False},
        learner={"batch_size": 16, "poll_timeout_s": 0.01},
        **sections,
    )


def publish(tmp_path: Path, version: int, config: dict[str, Any] = CONFIG) -> None:
    model = build_model(config, torch.Generator().manual_seed(version))
    manifest = {"model": config, "watermark": NOW - 30.0, "created_at": NOW - 10.0}
    store = FileSnapshotStore(tmp_path / "snapshots", keep=3)
    store.save(Snapshot(version, model.state_dict(), {}, manifest))


def worker(
    tmp_path: Path,
    records: list[Record],
    sink: ListSink,
    dead: InMemoryDeadLetterSink,
    **sections: Any,
) -> tuple[InferenceWorker, InMemoryRecordSource, CollectorRegistry]:
    source = InMemoryRecordSource(records)
    registry = CollectorRegistry()
    built = build_inference_worker(
        settings(tmp_path, **sections),
        clock=FakeClock(),
        registry=registry,
        source=lambda: source,
        sink=lambda: sink,
        dead_letters=lambda: dead,
    )
    return built, source, registry


def test_every_valid_event_gets_one_keyed_prediction_then_offsets_are_committed(
    tmp_path: Path,
) -> None:
    publish(tmp_path, 1)
    records = [*events(0, 20), Record("events", 0, 20, b"{oops", b"bad"), *events(1, 7)]
    sink, dead = ListSink(), InMemoryDeadLetterSink()
    built, source, registry = worker(tmp_path, records, sink, dead)
    progress = built.run(StopWhen(max_events=len(records)))

    assert (progress.events_consumed, progress.predictions, progress.events_invalid) == (28, 27, 1)
    assert [r.reason for r in dead.rejections] == ["not_json"]
    by_source = {
        (m["source"]["partition"], m["source"]["offset"]): (k, m) for k, m in sink.acknowledged
    }
    assert len(by_source) == len(sink.acknowledged) == 27
    key, message = by_source[(1, 6)]
    assert key == b"k6"
    assert message["id"] == "e1-6"
    assert message["model_version"] == 1
    assert message["source"] == {"topic": "events", "partition": 1, "offset": 6}
    assert message["prediction"] in (0, 1, 2)
    assert len(message["probabilities"]) == 3
    assert math.isclose(sum(message["probabilities"]), 1.0, rel_tol=1e-5)
    assert message["prediction"] == max(range(3), key=message["probabilities"].__getitem__)
    assert message["latency_s"] == pytest.approx(2.0)
    assert source.committed == {TopicPartition("events", 0): 21, TopicPartition("events", 1): 7}

    sample = registry.get_sample_value
    assert sample("driftd_predictions_total") == 27
    assert sample("driftd_events_consumed_total") == 28
    assert sample("driftd_events_invalid_total", {"reason": "not_json"}) == 1
    assert sample("driftd_prediction_latency_seconds_count") == 27
    assert sample("driftd_model_version") == 1
    assert sample("driftd_model_age_seconds") == pytest.approx(10.0)
    assert sample("driftd_event_to_serving_seconds_sum") == pytest.approx(30.0)
    assert sample("driftd_model_reloads_total") == 0


def test_nothing_is_committed_or_read_while_predictions_are_not_acknowledged(
    tmp_path: Path,
) -> None:
    publish(tmp_path, 1)
    sink, dead = ListSink(), InMemoryDeadLetterSink()
    built, source, registry = worker(tmp_path, events(0, 40), sink, dead)
    sink.failing = True
    unread_at_failures: list[int] = []

    def fail_then_recover(*_: Any) -> None:
        unread_at_failures.append(source.lag()[TopicPartition("events", 0)])
        if len(unread_at_failures) == 3:
            sink.failing = False

    built.telemetry.delivery_failed = fail_then_recover  # type: ignore[method-assign]
    progress = built.run(StopWhen(max_events=40))
    assert unread_at_failures == [24, 24, 24]  # one batch of 16 read, then nothing until acked
    assert registry.get_sample_value("driftd_predictions_total") == 40
    assert [m["source"]["offset"] for _, m in sink.acknowledged] == list(range(40))
    assert source.committed == {TopicPartition("events", 0): 40}
    assert progress.predictions == 40


def test_labels_and_regression_outputs(tmp_path: Path) -> None:
    publish(tmp_path, 1)
    sink, dead = ListSink(), InMemoryDeadLetterSink()
    labelled, _, _ = worker(
        tmp_path, events(0, 3), sink, dead, event={"labels": ["cat", "dog", "eel"]}
    )
    labelled.run(StopWhen(max_events=3))
    names = ["cat", "dog", "eel"]
    assert all(m["label"] == names[m["prediction"]] for _, m in sink.acknowledged)

    regression_dir = tmp_path / "regression"
    config = model_config_from_settings(ModelSettings(task="regression", hidden=[8]), 4)
    publish(regression_dir, 1, config)
    sink = ListSink()
    regressor, _, _ = worker(regression_dir, events(0, 3), sink, dead)
    regressor.run(StopWhen(max_events=3))
    assert all(isinstance(m["prediction"], float) for _, m in sink.acknowledged)
    assert all("probabilities" not in m for _, m in sink.acknowledged)


def test_waits_for_a_first_snapshot_and_can_be_stopped_while_waiting(tmp_path: Path) -> None:
    sink, dead = ListSink(), InMemoryDeadLetterSink()
    built, source, _ = worker(tmp_path, events(0, 3), sink, dead)
    assert built.readiness() == (False, f"no snapshot served yet from {tmp_path / 'snapshots'}")
    assert built.health()[0]
    timer = threading.Timer(0.3, built.request_stop)
    timer.start()
    progress = built.run()
    timer.join()
    assert progress.events_consumed == 0
    assert not source.committed


def test_a_broker_that_does_not_answer_yet_is_retried_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Creating the Kafka clients fails while the broker is down: retried with backoff."""
    monkeypatch.setattr("driftd.connect.BACKOFF_S", (0.001, 0.004))
    publish(tmp_path, 1)
    records = events(0, 5)
    source, sink, dead = InMemoryRecordSource(records), ListSink(), InMemoryDeadLetterSink()
    attempts = {"source": 0, "sink": 0}

    def flaky(name: str, client: Any, failures: int) -> Callable[[], Any]:
        def make() -> Any:
            attempts[name] += 1
            if attempts[name] <= failures:
                raise TimeoutError(f"{name}: no broker answers")
            return client

        return make

    built = build_inference_worker(
        settings(tmp_path), clock=FakeClock(), registry=CollectorRegistry(),
        source=flaky("source", source, 3), sink=flaky("sink", sink, 2), dead_letters=lambda: dead,
    )  # fmt: skip
    progress = built.run(StopWhen(max_events=len(records)))
    assert attempts == {"source": 4, "sink": 3}
    assert progress.predictions == len(records)


def test_a_stop_while_the_broker_is_unreachable_returns_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("driftd.connect.BACKOFF_S", (0.001, 0.004))
    publish(tmp_path, 1)
    built: InferenceWorker | None = None

    def never() -> Any:
        assert built is not None
        built.request_stop()  # the operator gives up: SIGTERM during the outage
        raise TimeoutError("no broker answers")

    built = build_inference_worker(
        settings(tmp_path), clock=FakeClock(), registry=CollectorRegistry(), source=never,
        sink=ListSink, dead_letters=InMemoryDeadLetterSink,
    )  # fmt: skip
    assert built.run().predictions == 0
    assert built.loop is None
