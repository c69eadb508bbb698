"""A dead-letter outage on real brokers: the trainer keeps snapshotting, commits stop at the
oldest undelivered dead letter, and after a restart every dead letter arrives, nothing learned
twice.

The events come from the session's Tansu broker; the dead-letter topic lives on a second,
private Tansu broker that is down during the first run and back for the second (its producer
is the real ``KafkaDeadLetterSink``). Offsets are read back with confluent-kafka.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka import Producer as ConfluentProducer

from driftd.adapters.embedded_broker import EmbeddedBroker
from driftd.adapters.file_snapshot_store import FileSnapshotStore
from driftd.adapters.kafka_dead_letter import REASON_HEADER, KafkaDeadLetterSink
from driftd.app import build_trainer
from driftd.loop import StopWhen
from driftd.settings.root import KafkaSettings, load_settings
from driftd.tools.streams import DriftingStream
from tests.integration.driftd_process import committed_offsets

pytestmark = pytest.mark.integration

BAD = b"{not json"
DEAD_LETTERS = "dead-letters"


def _produce(bootstrap: str, topic: str) -> tuple[dict[int, int], list[tuple[int, int]]]:
    """120 good events and 12 bad records over 2 partitions; (ends, bad (partition, offset))."""
    producer = ConfluentProducer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    offsets, bad = [0, 0], []
    for index, event in enumerate(DriftingStream(n_events=120, change_every=60).events()):
        partition = index % 2
        producer.produce(topic, value=orjson.dumps(event), partition=partition)
        offsets[partition] += 1
        if index % 10 == 9:
            producer.produce(topic, value=BAD, key=b"k%d" % index, partition=partition)
            bad.append((partition, offsets[partition]))
            offsets[partition] += 1
    assert producer.flush(10) == 0
    return dict(enumerate(offsets)), bad


def _dead_letters_on(bootstrap: str) -> list[tuple[int, int, bytes, bytes]]:
    """Every record of the dead-letter topic: (source partition, offset, value, reason)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "audit"})
    consumer.assign([TopicPartition(DEAD_LETTERS, 0, OFFSET_BEGINNING)])  # no group join wait
    found: list[tuple[int, int, bytes, bytes]] = []
    try:
        idle = 0
        while idle < 5:
            message = consumer.poll(1.0)
            if message is None or message.error():
                idle += 1
                continue
            headers = dict(message.headers() or [])
            found.append(
                (
                    int(headers["driftd-source-partition"]),
                    int(headers["driftd-source-offset"]),
                    message.value(),
                    headers[REASON_HEADER],
                )
            )
    finally:
        consumer.close()
    return sorted(found)


@pytest.mark.filterwarnings("ignore:unclosed <socket:ResourceWarning")  # kafka-python, see below
def test_a_dead_letter_outage_keeps_durability_and_a_restart_delivers_everything_once(
    broker: EmbeddedBroker,
    start_broker: Callable[..., EmbeddedBroker],
    kafka_settings: Callable[..., KafkaSettings],
    unique_topic: Callable[..., str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # kafka-python 3.0.12 leaves refused sockets to the GC and logs each failed connection.
    caplog.set_level(logging.CRITICAL, logger="kafka")
    topic = unique_topic(partitions=2)
    ends, bad = _produce(broker.bootstrap_servers, topic)
    dead_broker = start_broker()
    dead_letter_bootstrap = dead_broker.bootstrap_servers
    dead_broker.stop()  # the dead-letter topic is unreachable from the start
    kafka = kafka_settings(
        [topic], dead_letter_topic=DEAD_LETTERS, consumer_process=False,
        dead_letter_flush_timeout_s=2.0,
    )  # fmt: skip
    settings = load_settings(
        model={"n_classes": 3, "seed": 5},
        learner={"batch_size": 12, "poll_timeout_s": 0.2},
        snapshots={"dir": str(tmp_path / "snap"), "every_steps": 3, "every_seconds": 3600},
        metrics={"enabled": False},
    ).model_copy(update={"kafka": kafka})
    dead_letter_kafka = kafka.model_copy(
        update={"bootstrap_servers": [dead_letter_bootstrap], "request_timeout_ms": 1000}
    )

    first = build_trainer(settings, dead_letters=KafkaDeadLetterSink(dead_letter_kafka))
    first.loop.run(StopWhen(max_events=sum(ends.values())))
    first.close()  # its dead-letter flush fails once more; the snapshot holds them

    store = FileSnapshotStore(tmp_path / "snap", keep=10)
    newest = store.load_newest()
    assert newest is not None
    assert newest.manifest["events_learned"] == 120
    assert {e["partition"]: e["next_offset"] for e in newest.manifest["offsets"]} == ends
    held = sorted((e["partition"], e["offset"]) for e in newest.manifest["dead_letters"])
    assert held == bad
    oldest = {p: min(o for q, o in bad if q == p) for p in {p for p, _ in bad}}
    assert committed_offsets(broker.bootstrap_servers, kafka.group_id, topic, 2) == {
        p: oldest.get(p, ends[p]) for p in (0, 1)
    }  # never past an undelivered dead letter

    dead_broker.restart()  # same port, empty (Tansu keeps data in memory)
    dead_broker.create_topics([DEAD_LETTERS], partitions=1)
    second = build_trainer(settings, dead_letters=KafkaDeadLetterSink(dead_letter_kafka))
    second.run(StopWhen(max_seconds=3))  # nothing new: the held dead letters go out

    final = store.load_newest()
    assert final is not None
    assert final.manifest["events_learned"] == 120, "nothing learned twice"
    assert final.manifest["dead_letters"] == []
    assert committed_offsets(broker.bootstrap_servers, kafka.group_id, topic, 2) == ends
    delivered = _dead_letters_on(dead_broker.bootstrap_servers)
    assert [(p, o) for p, o, _, _ in delivered] == bad  # each exactly once
    assert {(value, reason) for _, _, value, reason in delivered} == {(BAD, b"not_json")}
