"""deploy/produce_stream.py (the compose stack's producer) against the real broker.

The script runs as the compose service does, as a subprocess; its records are read back with
confluent-kafka (an independent client) and compared with the built-in stream event by event.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer
from confluent_kafka import TopicPartition as ConfluentTopicPartition

from driftd.adapters.embedded_broker import EmbeddedBroker
from driftd.tools.streams import DriftingStream
from tests.deploy.deploy_files import DEPLOY

pytestmark = pytest.mark.integration

EVENTS, CHANGE_EVERY, INVALID_EVERY, SEED = 300, 100, 50, 11


def read_all(bootstrap: str, topic: str, partitions: int, count: int) -> list[tuple[bytes, bytes]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex})
    try:
        consumer.assign(
            [ConfluentTopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)]
        )
        records: list[tuple[bytes, bytes]] = []
        deadline = time.monotonic() + 30
        while len(records) < count and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=500, timeout=0.5):
                assert message.error() is None, message.error()
                records.append((message.key(), message.value()))
        return records
    finally:
        consumer.close()


def test_the_producer_replays_the_drifting_stream_with_malformed_records(
    broker: EmbeddedBroker, unique_topic: Callable[..., str]
) -> None:
    topic = unique_topic(partitions=2)
    started = time.time()
    result = subprocess.run(
        [
            sys.executable, str(DEPLOY / "produce_stream.py"),
            f"--bootstrap={broker.bootstrap_servers}", f"--topic={topic}",
            f"--events={EVENTS}", f"--change-every={CHANGE_EVERY}",
            f"--invalid-every={INVALID_EVERY}", f"--seed={SEED}", "--connect-timeout=20",
        ],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    malformed = EVENTS // INVALID_EVERY
    assert f"done: {EVENTS + malformed} records sent to {topic}" in result.stderr

    records = read_all(broker.bootstrap_servers, topic, 2, EVENTS + malformed)
    assert len(records) == EVENTS + malformed
    bad = [key for key, value in records if value == b"this is not an event"]
    assert sorted(bad) == sorted(f"0-{i - 1}-malformed".encode() for i in range(50, 301, 50))

    sent = {
        orjson.loads(value)["id"]: orjson.loads(value) for key, value in records if key not in bad
    }
    expected = DriftingStream(n_events=EVENTS, change_every=CHANGE_EVERY, seed=SEED).events()
    for event in expected:
        got = sent.pop(f"0-{event['id']}")
        assert (got["x"], got["y"], got["domain"]) == (event["x"], event["y"], event["domain"])
        assert started - 1 <= got["ts"] <= time.time()
    assert sent == {}
    assert len({key for key, _ in records}) == EVENTS + malformed, "every record has its own key"
