"""`driftd run` as a subprocess against the real broker: learn, dead-letter, SIGTERM, resume.

Events are produced with confluent-kafka (librdkafka), a client independent of the daemon's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer
from confluent_kafka import TopicPartition as ConfluentTopicPartition

from driftd.adapters.embedded_broker import EmbeddedBroker
from driftd.tools.streams import DriftingStream
from tests.integration.driftd_process import DriftdProcess, committed_offsets, produce, scrape

pytestmark = pytest.mark.integration

BAD_RECORDS = [b"not json", b'{"x": [1, 2]}', b'{"x": "abc", "y": 1}', b"", b'{"y": 0}']


def _good_events(n: int, seed: int) -> list[bytes]:
    stream = DriftingStream(n_events=n, change_every=max(1, n // 2), seed=seed)
    return [orjson.dumps({**event, "ts": time.time()}) for event in stream.events()]


def _manifest(snapshots: Path) -> dict[str, object] | None:
    latest = snapshots / "LATEST"
    if not latest.exists():
        return None
    manifest = json.loads((snapshots / latest.read_text().strip() / "manifest.json").read_text())
    assert isinstance(manifest, dict)
    return manifest


def _wait_for_learned(snapshots: Path, learned: int, timeout: float = 60.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    manifest = None
    while time.monotonic() < deadline:
        manifest = _manifest(snapshots)
        if manifest is not None and manifest["events_learned"] == learned:
            return manifest
        time.sleep(0.1)
    raise AssertionError(f"snapshot never reached {learned} events learned: {manifest}")


def _dead_letters(bootstrap: str, topic: str, expected: int) -> list[dict[str, bytes]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex})
    consumer.assign([ConfluentTopicPartition(topic, 0, OFFSET_BEGINNING)])  # no group join
    found: list[dict[str, bytes]] = []
    deadline = time.monotonic() + 20
    try:
        while len(found) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            found.append({**dict(message.headers() or []), "value": message.value() or b""})
    finally:
        consumer.close()
    return found


def test_learns_dead_letters_stops_cleanly_and_resumes_exactly(
    broker: EmbeddedBroker,
    unique_topic: Callable[..., str],
    start_driftd: Callable[..., DriftdProcess],
    tmp_path: Path,
) -> None:
    topic, dead = unique_topic(partitions=2), unique_topic(partitions=1, prefix="dlq")
    group, snapshots = f"driftd-{uuid.uuid4().hex[:8]}", tmp_path / "snapshots"
    env = {
        "DRIFTD_KAFKA__TOPICS": topic,
        "DRIFTD_KAFKA__GROUP_ID": group,
        "DRIFTD_KAFKA__DEAD_LETTER_TOPIC": dead,
        "DRIFTD_MODEL__N_CLASSES": "3",
        "DRIFTD_LEARNER__BATCH_SIZE": "64",
        "DRIFTD_SNAPSHOTS__DIR": str(snapshots),
        "DRIFTD_SNAPSHOTS__EVERY_SECONDS": "0.5",
    }
    payloads = _good_events(1500, seed=1)
    for index, bad in enumerate(BAD_RECORDS):
        payloads.insert(100 + 200 * index, bad)
    produce(broker.bootstrap_servers, topic, payloads)

    daemon = start_driftd("run", env)
    port = daemon.port
    manifest = _wait_for_learned(snapshots, 1500)
    assert manifest["events_rejected"] == len(BAD_RECORDS)
    metrics = scrape(port)
    assert metrics["driftd_events_learned_total"] == 1500
    assert metrics["driftd_events_consumed_total"] == 1505
    assert metrics["driftd_events_invalid_total{reason=not_json}"] == 1
    assert metrics["driftd_events_invalid_total{reason=empty}"] == 1
    assert metrics["driftd_events_invalid_total{reason=wrong_dimension}"] == 1
    assert metrics["driftd_events_invalid_total{reason=missing_x}"] == 1
    assert 0.0 <= metrics["driftd_prequential_accuracy"] <= 1.0
    assert metrics["driftd_learning_rate"] > 0
    assert metrics["driftd_snapshot_version"] >= 1
    assert metrics["driftd_event_to_update_seconds_count"] == 1500
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
        assert response.status == 200

    assert daemon.stop() == 0
    stopped = _manifest(snapshots)
    assert stopped is not None
    assert stopped["events_learned"] == 1500
    offsets = {e["partition"]: e["next_offset"] for e in stopped["offsets"]}  # type: ignore[attr-defined]
    assert sum(offsets.values()) == 1505
    assert committed_offsets(broker.bootstrap_servers, group, topic, 2) == offsets

    letters = _dead_letters(broker.bootstrap_servers, dead, len(BAD_RECORDS))
    assert sorted(letter["value"] for letter in letters) == sorted(BAD_RECORDS)
    assert {letter["driftd-source-topic"] for letter in letters} == {topic.encode()}
    assert {letter["driftd-reason"] for letter in letters} == {
        b"not_json",
        b"wrong_dimension",
        b"wrong_type",
        b"empty",
        b"missing_x",
    }

    # A second start resumes from the snapshot: only the new events are learned.
    produce(broker.bootstrap_servers, topic, _good_events(700, seed=2))
    resumed = start_driftd("run", env)
    resumed.wait_for_log("resumed")
    _wait_for_learned(snapshots, 2200)
    assert resumed.stop() == 0
    final = _manifest(snapshots)
    assert final is not None
    assert final["events_learned"] == 2200
    assert final["events_rejected"] == len(BAD_RECORDS)


def test_kill_9_then_restart_learns_each_event_exactly_once(
    broker: EmbeddedBroker,
    unique_topic: Callable[..., str],
    start_driftd: Callable[..., DriftdProcess],
    tmp_path: Path,
) -> None:
    topic, snapshots = unique_topic(partitions=3), tmp_path / "snapshots"
    env = {
        "DRIFTD_KAFKA__TOPICS": topic,
        "DRIFTD_KAFKA__GROUP_ID": f"driftd-{uuid.uuid4().hex[:8]}",
        "DRIFTD_MODEL__N_CLASSES": "3",
        "DRIFTD_LEARNER__BATCH_SIZE": "32",
        "DRIFTD_SNAPSHOTS__DIR": str(snapshots),
        "DRIFTD_SNAPSHOTS__EVERY_STEPS": "7",
        "DRIFTD_SNAPSHOTS__EVERY_SECONDS": "1",
    }
    produce(broker.bootstrap_servers, topic, _good_events(3000, seed=3))
    daemon = start_driftd("run", env)
    deadline = time.monotonic() + 60
    while (_manifest(snapshots) or {}).get("events_learned", 0) < 600:  # type: ignore[operator]
        assert time.monotonic() < deadline, "no progress before the kill"
        time.sleep(0.02)
    daemon.process.kill()  # mid-stream: some learned events are in no snapshot
    daemon.process.wait()
    crashed_at = _manifest(snapshots)
    assert crashed_at is not None

    restarted = start_driftd("run", env)
    final = _wait_for_learned(snapshots, 3000)
    assert restarted.stop() == 0
    assert final["events_learned"] == 3000
    assert not [p for p in snapshots.iterdir() if p.name.startswith(".tmp-")]


def test_invalid_configuration_fails_fast_naming_the_field(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTD_")}
    env.update(DRIFTD_LEARNER__BATCH_SIZE="0", DRIFTD_KAFKA__AUTO_OFFSET_RESET="sometimes")
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "driftd.cli", "run"],
        cwd=tmp_path, env=env, capture_output=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert b"learner.batch_size" in result.stderr
    assert b"kafka.auto_offset_reset" in result.stderr
    assert time.monotonic() - started < 30
    assert list(tmp_path.iterdir()) == [], "nothing written before the configuration is valid"
