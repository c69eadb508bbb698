"""KafkaProcessSource: the consumer in a child process, against the real broker."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import Producer as ConfluentProducer

from driftd.adapters.embedded_broker import EmbeddedBroker
from driftd.adapters.kafka_process_source import KafkaProcessSource
from driftd.adapters.kafka_source import KafkaRecordSource
from driftd.records import PartitionShare, Record, TopicPartition
from driftd.settings.root import KafkaSettings
from tests.integration.test_kafka_adapters import by_partition, produce

pytestmark = pytest.mark.integration


@pytest.fixture
def opened() -> Iterator[list[KafkaProcessSource | KafkaRecordSource]]:
    sources: list[KafkaProcessSource | KafkaRecordSource] = []
    yield sources
    for source in sources:
        source.close()


def _read(
    source: KafkaProcessSource | KafkaRecordSource, count: int, size: int, timeout: float = 30
) -> list[Record]:
    records: list[Record] = []
    deadline = time.monotonic() + timeout
    while len(records) < count and time.monotonic() < deadline:
        batch = source.poll(size, 0.2)
        assert len(batch) <= size
        records += batch
    assert len(records) == count
    return records


def test_reads_in_order_honours_start_offsets_commits_and_closes(
    unique_topic: Callable[..., str],
    kafka_settings: Callable[..., KafkaSettings],
    opened: list[KafkaProcessSource | KafkaRecordSource],
) -> None:
    topic = unique_topic(partitions=2)
    settings = kafka_settings([topic])
    sent = produce(settings, topic, partitions=2, per_partition=300)
    p0, p1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    source = KafkaProcessSource(settings, {p1: 100}, max_records=64)
    opened.append(source)

    records = _read(source, 300 + 200, size=50)
    grouped = by_partition(records)
    assert [r.offset for r in grouped[0]] == list(range(300))
    assert [r.offset for r in grouped[1]] == list(range(100, 300))
    assert [(r.key, r.value) for r in grouped[0]] == sent[0]
    assert source.poll(50, 0.5) == []
    assert source.ready
    assert source.lag() == {p0: 0, p1: 0}

    source.commit({p0: 250, p1: 280})
    source.close()
    assert not source._process.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        source.poll(1, 0.0)

    resumed = KafkaRecordSource(settings)  # an ordinary member resumes at the commit
    opened.append(resumed)
    grouped = by_partition(_read(resumed, 50 + 20, size=500))
    assert [r.offset for r in grouped[0]] == list(range(250, 300))
    assert [r.offset for r in grouped[1]] == list(range(280, 300))


def test_the_child_reads_only_its_share_and_an_idle_rank_is_ready(
    unique_topic: Callable[..., str],
    kafka_settings: Callable[..., KafkaSettings],
    opened: list[KafkaProcessSource | KafkaRecordSource],
) -> None:
    topic = unique_topic(partitions=4)
    settings = kafka_settings([topic])
    produce(settings, topic, partitions=4, per_partition=20)
    share = PartitionShare(1, 2)
    mine = sorted(p for p in range(4) if share.owns(topic, p))
    starts = {TopicPartition(topic, p): 5 for p in range(4)}  # two of them are not its own
    # Of 8 ranks on 4 partitions, 4 own none: a rank that must still count as ready.
    idle = next(
        s
        for s in (PartitionShare(r, 8) for r in range(8))
        if not any(s.owns(topic, p) for p in range(4))
    )
    source = KafkaProcessSource(settings, starts, max_records=16, share=share)
    idler = KafkaProcessSource(settings, max_records=16, share=idle)
    opened.extend([source, idler])

    records = _read(source, 2 * 15, size=16)

    assert sorted((r.partition, r.offset) for r in records) == [
        (p, o) for p in mine for o in range(5, 20)
    ]
    assert source.poll(16, 0.3) == []
    assert source.lag() == {TopicPartition(topic, p): 0 for p in mine}
    assert source.ready
    deadline = time.monotonic() + 30
    while not idler.ready and time.monotonic() < deadline:
        assert idler.poll(16, 0.1) == []
    assert idler.ready
    assert idler.lag() == {}


def test_a_dead_consumer_process_is_an_error_not_a_silent_stall(
    unique_topic: Callable[..., str],
    kafka_settings: Callable[..., KafkaSettings],
    opened: list[KafkaProcessSource | KafkaRecordSource],
) -> None:
    topic = unique_topic(partitions=1)
    source = KafkaProcessSource(kafka_settings([topic]), max_records=10)
    opened.append(source)
    source._process.kill()
    source._process.join()
    with pytest.raises(RuntimeError, match="consumer process exited"):
        source.poll(10, 0.1)
    assert not source.ready


def test_a_readiness_hammer_never_corrupts_the_record_stream(
    broker: EmbeddedBroker,
    unique_topic: Callable[..., str],
    kafka_settings: Callable[..., KafkaSettings],
    opened: list[KafkaProcessSource | KafkaRecordSource],
) -> None:
    """Issue 12 defect 2: ``ready`` (the /readyz thread) and ``poll`` (the loop) at once.

    Large records fill the data pipe in pieces; a second reader of that pipe used to take half
    of a message and leave the loop an ``UnpicklingError``.
    """
    topic = unique_topic(partitions=2)
    count, size = 16_000, 4096
    producer = ConfluentProducer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 20})
    for index in range(count):
        producer.produce(topic, value=index.to_bytes(4, "big") * (size // 4), partition=index % 2)
        if index % 2000 == 1999:
            producer.flush(30)
    assert producer.flush(30) == 0
    del producer  # librdkafka would keep reconnecting after the session broker stops
    source = KafkaProcessSource(kafka_settings([topic]), max_records=256)
    opened.append(source)
    stop = threading.Event()
    answers: list[bool] = []

    def hammer() -> None:
        while not stop.is_set():
            answers.append(source.ready)

    thread = threading.Thread(target=hammer, daemon=True)
    thread.start()
    try:
        records = _read(source, count, size=256, timeout=120)
    finally:
        stop.set()
        thread.join(10)
    grouped = by_partition(records)
    for partition in (0, 1):
        assert [r.offset for r in grouped[partition]] == list(range(count // 2))
        expected = [(2 * o + partition).to_bytes(4, "big") * (size // 4) for o in range(count // 2)]
        assert [r.value for r in grouped[partition]] == expected
    assert source.ready
    assert True in answers
