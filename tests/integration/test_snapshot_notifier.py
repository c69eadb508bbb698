"""Publish notifications on the real (embedded Tansu) broker: adapter, wiring and failures."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer as ConfluentConsumer
from confluent_kafka import TopicPartition as ConfluentTopicPartition

from driftd.adapters.embedded_broker import EmbeddedBroker
from driftd.adapters.kafka_snapshot_notifier import KafkaSnapshotNotifier
from driftd.adapters.memory_snapshot_store import InMemorySnapshotStore
from driftd.adapters.memory_source import InMemoryRecordSource
from driftd.adapters.recording_telemetry import RecordingTelemetry
from driftd.app import build_trainer
from driftd.loop import StopWhen
from driftd.ports import SnapshotPublished
from driftd.records import Record
from driftd.settings.root import KafkaSettings, load_settings
from driftd.tools.streams import DriftingStream
from tests.fakes import FakeClock

pytestmark = pytest.mark.integration


def read_all(broker: EmbeddedBroker, topic: str, count: int) -> list[tuple[bytes, dict]]:
    consumer = ConfluentConsumer(
        {"bootstrap.servers": broker.bootstrap_servers, "group.id": "notification-reader"}
    )
    messages = []
    try:
        consumer.assign([ConfluentTopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + 10
        while len(messages) < count and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                messages.append((message.key(), json.loads(message.value())))
        extra = consumer.poll(0.3)
        assert extra is None or extra.error() is not None, "more notifications than expected"
    finally:
        consumer.close()
    return messages


def test_each_published_snapshot_is_announced(
    broker: EmbeddedBroker,
    unique_topic: Callable[..., str],
    kafka_settings: Callable[..., KafkaSettings],
) -> None:
    topic = unique_topic()
    failures: list[str] = []
    notifier = KafkaSnapshotNotifier(kafka_settings([topic]), topic, on_failure=failures.append)
    events = [
        SnapshotPublished(1, "/snap/0000000001", 1_700_000_000.5, {"prequential_loss": 0.4}, None),
        SnapshotPublished(2, "/snap/0000000002", 1_700_000_060.0, {"prequential_loss": 0.3}, 9.5),
    ]
    try:
        for event in events:
            notifier.published(event)
    finally:
        notifier.close()
    notifier.close()  # idempotent
    assert failures == []
    assert read_all(broker, topic, 2) == [
        (
            b"1",
            {
                "version": 1,
                "path": "/snap/0000000001",
                "created_at": 1_700_000_000.5,
                "metrics": {"prequential_loss": 0.4},
                "watermark": None,
            },
        ),
        (
            b"2",
            {
                "version": 2,
                "path": "/snap/0000000002",
                "created_at": 1_700_000_060.0,
                "metrics": {"prequential_loss": 0.3},
                "watermark": 9.5,
            },
        ),
    ]


def test_the_trainer_announces_published_snapshots_only(
    tmp_path: Path, broker: EmbeddedBroker, unique_topic: Callable[..., str]
) -> None:
    topic = unique_topic()
    stream = DriftingStream(n_events=640, change_every=10**6, seed=3)
    records = [
        Record("events", 0, index, orjson.dumps(event))
        for index, event in enumerate(stream.events())
    ]
    settings = load_settings(
        kafka={"bootstrap_servers": [broker.bootstrap_servers]},
        model={"n_classes": 3, "seed": 5},
        learner={"batch_size": 32},
        snapshots={
            "dir": str(tmp_path),
            "every_steps": 5,
            "every_seconds": 3600,
            "notify_topic": topic,
        },
        metrics={"enabled": False},
    )
    store = InMemorySnapshotStore(keep=10)
    telemetry = RecordingTelemetry()
    trainer = build_trainer(
        settings,
        source=InMemoryRecordSource(records),
        store=store,
        clock=FakeClock(),
        telemetry=telemetry,
        serve_metrics=False,
    )
    trainer.run(StopWhen(max_events=640))  # closes (flushes) the notifier
    published = [
        version for version in store.versions() if store.load(version).manifest["published"] is True
    ]
    assert published, f"nothing passed the gate: {telemetry.unpublished}"
    assert len(published) + sum(telemetry.unpublished.values()) == len(store.versions())
    messages = read_all(broker, topic, len(published))
    assert [value["version"] for _, value in messages] == published
    for _, value in messages:
        manifest = store.load(value["version"]).manifest
        assert value == {
            "version": manifest["version"],
            "path": f"memory://{value['version']:010d}",
            "created_at": manifest["created_at"],
            "metrics": manifest["metrics"],
            "watermark": manifest["watermark"],
        }
    assert telemetry.notification_failures == {}
