"""`driftd run` + two `driftd infer` workers in one group, as subprocesses on the real broker.

Events go to a 2-partition topic in waves. After each wave the test waits until every event
has its prediction, the trainer has a snapshot that learned the wave, and both workers serve
it; so the next wave is predicted by a newer model, and versions must move forward.
Predictions are read back with confluent-kafka using assign() (no group join).
"""

from __future__ import annotations

import json
import math
import signal
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer
from confluent_kafka import TopicPartition as ConfluentTopicPartition

from driftd.adapters.embedded_broker import EmbeddedBroker
from driftd.tools.streams import DriftingStream
from tests.integration.driftd_process import DriftdProcess, committed_offsets, scrape

pytestmark = pytest.mark.integration

WAVES, EVENTS_PER_WAVE = 4, 300
BAD_RECORDS = [b"not json", b'{"x": [1, 2]}']


def _wave(wave: int) -> list[bytes]:
    stream = DriftingStream(n_events=EVENTS_PER_WAVE, change_every=10_000, seed=wave)
    return [
        orjson.dumps({**event, "id": f"w{wave}-{index}", "ts": time.time()})
        for index, event in enumerate(stream.events())
    ]


class Topic:
    """Produces to explicit partitions (round robin) and remembers what went where."""

    def __init__(self, bootstrap: str, name: str) -> None:
        self.name = name
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        self.ends = [0, 0]
        self.ids: dict[tuple[int, int], str] = {}
        self.keys: dict[tuple[int, int], bytes] = {}
        self.wave_of: dict[tuple[int, int], int] = {}

    def produce(self, payloads: list[bytes], wave: int) -> None:
        for payload in payloads:
            partition = sum(self.ends) % 2
            position = (partition, self.ends[partition])
            key = f"key-{position}".encode()
            self.producer.produce(self.name, value=payload, key=key, partition=partition)
            self.ends[partition] += 1
            self.keys[position] = key
            if payload not in BAD_RECORDS:
                self.ids[position] = orjson.loads(payload)["id"]
                self.wave_of[position] = wave
        assert self.producer.flush(15) == 0


class Output:
    """Reads the predictions topic from the beginning with assign(): no group join."""

    def __init__(self, bootstrap: str, name: str) -> None:
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex})
        self.consumer.assign([ConfluentTopicPartition(name, p, OFFSET_BEGINNING) for p in (0, 1)])
        self.messages: list[dict[str, Any]] = []

    def read_until(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count:
            assert time.monotonic() < deadline, f"{len(self.messages)} of {count} predictions"
            message = self.consumer.poll(0.2)
            if message is not None and not message.error():
                self.messages.append({**orjson.loads(message.value()), "key": message.key()})


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return response.status == 200
    except urllib.error.HTTPError:
        return False


def _wait(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _learned_version(snapshots: Path, learned: int) -> int | None:
    try:
        name = (snapshots / "LATEST").read_text().strip()
        manifest = json.loads((snapshots / name / "manifest.json").read_text())
    except (FileNotFoundError, ValueError):
        return None
    return int(manifest["version"]) if manifest["events_learned"] >= learned else None


def _wait_for_learned(snapshots: Path, learned: int, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while (version := _learned_version(snapshots, learned)) is None:
        assert time.monotonic() < deadline, f"no snapshot learned {learned} events"
        time.sleep(0.05)
    return version


def _all_serving(workers: list[DriftdProcess], version: int) -> bool:
    return all(scrape(worker.port)["driftd_model_version"] >= version for worker in workers)


def test_two_workers_predict_each_event_once_with_versions_moving_forward(
    broker: EmbeddedBroker,
    unique_topic: Callable[..., str],
    start_driftd: Callable[..., DriftdProcess],
    tmp_path: Path,
) -> None:
    bootstrap, snapshots = broker.bootstrap_servers, tmp_path / "snapshots"
    events, predictions = unique_topic(partitions=2), unique_topic(partitions=2, prefix="out")
    dead, infer_group = unique_topic(prefix="dlq"), f"infer-{uuid.uuid4().hex[:8]}"
    start_driftd(
        "run",
        {
            "DRIFTD_KAFKA__TOPICS": events,
            "DRIFTD_KAFKA__GROUP_ID": f"trainer-{uuid.uuid4().hex[:8]}",
            "DRIFTD_MODEL__N_CLASSES": "3",
            "DRIFTD_LEARNER__BATCH_SIZE": "64",
            "DRIFTD_SNAPSHOTS__DIR": str(snapshots),
            "DRIFTD_SNAPSHOTS__EVERY_SECONDS": "0.3",
        },
    )
    worker_env = {
        "DRIFTD_INFER__INPUT_TOPICS": events,
        "DRIFTD_INFER__OUTPUT_TOPIC": predictions,
        "DRIFTD_INFER__GROUP_ID": infer_group,
        "DRIFTD_KAFKA__DEAD_LETTER_TOPIC": dead,
        "DRIFTD_SNAPSHOTS__DIR": str(snapshots),
    }
    workers = [start_driftd("infer", worker_env) for _ in range(2)]
    topic, output = Topic(bootstrap, events), Output(bootstrap, predictions)
    for worker in workers:
        worker.wait_for_log("waiting_for_snapshot")
        assert not _ready(worker.port)

    for wave in range(WAVES):
        topic.produce(_wave(wave) + (BAD_RECORDS if wave == 0 else []), wave)
        learned = (wave + 1) * EVENTS_PER_WAVE
        if wave == 0:
            _wait(lambda: all(_ready(w.port) for w in workers), "both workers ready")
        output.read_until(learned)
        version = _wait_for_learned(snapshots, learned)
        _wait(partial(_all_serving, workers, version), f"both workers serving version {version}")

    metrics = [scrape(worker.port) for worker in workers]
    total = WAVES * EVENTS_PER_WAVE
    assert sum(m["driftd_predictions_total"] for m in metrics) == total
    assert sum(m["driftd_events_consumed_total"] for m in metrics) == total + len(BAD_RECORDS)
    assert sum(m.get("driftd_events_invalid_total{reason=not_json}", 0) for m in metrics) == 1
    assert (
        sum(m.get("driftd_events_invalid_total{reason=wrong_dimension}", 0) for m in metrics) == 1
    )
    for worker_metrics in metrics:
        assert worker_metrics["driftd_predictions_total"] > 0, "the workers did not share"
        assert worker_metrics["driftd_model_reloads_total"] >= WAVES - 1
        assert worker_metrics["driftd_event_to_serving_seconds_count"] >= WAVES
        assert 0 <= worker_metrics["driftd_model_age_seconds"] < 60
        assert worker_metrics["driftd_prediction_latency_seconds_count"] > 0

    for worker in workers:
        worker.process.send_signal(signal.SIGTERM)
    assert [worker.process.wait(timeout=30) for worker in workers] == [0, 0]
    for worker in workers:
        worker.close()  # waits for the log reader to drain
        assert any(entry.get("event") == "stopped" for entry in worker.logs)
        assert not [e for e in worker.logs if e.get("level") in ("error", "critical")], worker.logs
    output.read_until(total)
    time.sleep(0.5)  # anything produced twice would arrive by now
    output.read_until(total)
    output.consumer.close()

    by_source = {(m["source"]["partition"], m["source"]["offset"]): m for m in output.messages}
    assert len(output.messages) == len(by_source) == total, "an event predicted twice"
    assert {position: m["id"] for position, m in by_source.items()} == topic.ids
    assert all(m["key"] == topic.keys[position] for position, m in by_source.items())
    for message in output.messages:
        assert message["source"]["topic"] == events
        assert len(message["probabilities"]) == 3
        assert message["prediction"] in (0, 1, 2)
        assert math.isfinite(message["latency_s"])
    for partition in (0, 1):
        in_order = sorted(
            (o, m["model_version"]) for (p, o), m in by_source.items() if p == partition
        )
        versions = [version for _, version in in_order]
        assert versions == sorted(versions), (
            f"model_version went backwards in partition {partition}"
        )
    first_wave = [m["model_version"] for p, m in by_source.items() if topic.wave_of[p] == 0]
    last_wave = [m["model_version"] for p, m in by_source.items() if topic.wave_of[p] == WAVES - 1]
    assert min(last_wave) > max(first_wave)
    assert list(committed_offsets(bootstrap, infer_group, events, 2).values()) == topic.ends
