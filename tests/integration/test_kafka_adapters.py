"""KafkaRecordSource and KafkaDeadLetterSink against the real (embedded Tansu) broker."""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import Consumer as ConfluentConsumer
from confluent_kafka import Producer as ConfluentProducer
from confluent_kafka import TopicPartition as ConfluentTopicPartition

from driftd.adapters.embedded_broker import EmbeddedBroker
from driftd.adapters.kafka_clients import build_producer
from driftd.adapters.kafka_dead_letter import DeadLetterError, KafkaDeadLetterSink
from driftd.adapters.kafka_source import KafkaRecordSource, SourceCommitError
from driftd.records import Record, Rejection, TopicPartition
from driftd.settings.root import KafkaSettings

pytestmark = pytest.mark.integration

SettingsFactory = Callable[..., KafkaSettings]
TopicFactory = Callable[..., str]


def produce(settings: KafkaSettings, topic: str, partitions: int, per_partition: int) -> dict:
    """Produce ``per_partition`` records to each partition; return them as (key, value) lists."""
    sent: dict[int, list[tuple[bytes, bytes]]] = defaultdict(list)
    producer = build_producer(settings)
    try:
        for index in range(per_partition):
            for partition in range(partitions):
                key, value = b"k%d" % (index % 7), b'{"p": %d, "i": %d}' % (partition, index)
                producer.send(topic, key=key, value=value, partition=partition)
                sent[partition].append((key, value))
        producer.flush(timeout=10)
    finally:
        producer.close(timeout=5)
    return dict(sent)


def poll_exactly(
    source: KafkaRecordSource, count: int, max_records: int = 500, *, then_nothing: bool = True
) -> list[Record]:
    """Poll until ``count`` records arrived; with ``then_nothing``, check that no more come."""
    records: list[Record] = []
    deadline = time.monotonic() + 20
    while len(records) < count and time.monotonic() < deadline:
        records += source.poll(min(max_records, count - len(records)), 0.2)
    assert len(records) == count, f"got {len(records)} of {count} records"
    if then_nothing:
        assert source.poll(max_records, 0.3) == []
    return records


def by_partition(records: list[Record]) -> dict[int, list[Record]]:
    grouped: dict[int, list[Record]] = defaultdict(list)
    for record in records:
        grouped[record.partition].append(record)
    return dict(grouped)


@pytest.fixture
def sources() -> Iterator[list[KafkaRecordSource]]:
    """Sources a test opened; closed before the broker can go away."""
    opened: list[KafkaRecordSource] = []
    yield opened
    for source in opened:
        source.close()


def test_source_reads_every_record_in_partition_order(
    unique_topic: TopicFactory, kafka_settings: SettingsFactory, sources: list
) -> None:
    topic = unique_topic(partitions=3)
    settings = kafka_settings([topic])
    sent = produce(settings, topic, partitions=3, per_partition=200)
    source = KafkaRecordSource(settings)
    sources.append(source)

    records = poll_exactly(source, 600)

    assert source.ready
    assert source.assignment == {TopicPartition(topic, p) for p in range(3)}
    for partition, received in by_partition(records).items():
        assert [r.offset for r in received] == list(range(200))
        assert [(r.key, r.value) for r in received] == sent[partition]
    assert {r.topic for r in records} == {topic}
    assert all(r.timestamp_ms is not None and r.timestamp_ms > 1_600_000_000_000 for r in records)


def test_start_offsets_win_then_a_new_member_resumes_at_the_commit(
    unique_topic: TopicFactory, kafka_settings: SettingsFactory, sources: list
) -> None:
    topic = unique_topic(partitions=2)
    settings = kafka_settings([topic])
    produce(settings, topic, partitions=2, per_partition=50)
    p0, p1 = TopicPartition(topic, 0), TopicPartition(topic, 1)

    first = KafkaRecordSource(settings, start_offsets={p0: 10, p1: 20})
    sources.append(first)
    read = by_partition(poll_exactly(first, 40 + 30))
    assert [r.offset for r in read[0]] == list(range(10, 50))
    assert [r.offset for r in read[1]] == list(range(20, 50))
    first.commit({p0: 30, p1: 40})
    first.commit({p0: 5, p1: 40})  # backwards or unchanged: never sent
    first.close()

    # p1 has a start offset (the snapshot wins); p0 resumes at the group's commit.
    second = KafkaRecordSource(settings, start_offsets={p1: 45})
    sources.append(second)
    resumed = by_partition(poll_exactly(second, 20 + 5))
    assert [r.offset for r in resumed[0]] == list(range(30, 50))
    assert [r.offset for r in resumed[1]] == list(range(45, 50))


class Member:
    """Polls one group member on its own thread, as if it were its own process.

    Each member must sit inside ``poll()`` while its rebalance completes: kafka-python 3.0.12
    drops a JoinGroup+SyncGroup result that arrives between two polls and joins again, which
    restarts the rebalance for every member. Two members polled in turn from one thread are
    each outside ``poll()`` half of the time, so the group could rebalance again and again
    (this test used to take over 60 s now and then that way).
    """

    def __init__(self, source: KafkaRecordSource) -> None:
        self.source = source
        self.records: list[Record] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.records += self.source.poll(100, 0.1)

    def stop(self) -> list[Record]:
        """Stop polling (the caller may use the source again) and return what was read."""
        self._stop.set()
        self._thread.join(10)
        assert not self._thread.is_alive()
        return self.records


def wait_for(condition: Callable[[], bool], timeout: float = 60) -> bool:
    """Whether ``condition`` became true within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def test_a_partition_handed_back_resumes_at_this_members_own_position(
    unique_topic: TopicFactory, kafka_settings: SettingsFactory, sources: list
) -> None:
    topic = unique_topic(partitions=2)
    settings = kafka_settings([topic], assignment="group")
    produce(settings, topic, partitions=2, per_partition=20)
    first = KafkaRecordSource(settings)
    sources.append(first)
    read_by_first = poll_exactly(first, 40)  # nothing committed: the snapshot would hold it

    second = KafkaRecordSource(settings)  # joining takes one partition away from the first
    sources.append(second)
    members = Member(first), Member(second)
    split = wait_for(lambda: second.ready and len(second.assignment) == len(first.assignment) == 1)
    read_by_first += members[0].stop()
    read_by_second = members[1].stop()
    assert split, "the rebalance did not finish within 60 s"
    [moved] = second.assignment
    read_by_second += second.poll(100, 0.3)
    assert [r.offset for r in read_by_second] == list(range(20))  # reset policy: earliest
    second.commit({moved: 10})  # behind where the first member had read
    second.close()

    member = Member(first)
    handed_back = wait_for(lambda: len(first.assignment) == 2)
    read_by_first += member.stop()
    assert handed_back, "the partition did not come back within 60 s"
    read_by_first += first.poll(100, 0.3)
    assert len(read_by_first) == 40  # handed back: resumed at its own 20, not the group's 10

    produce(settings, topic, partitions=2, per_partition=3)
    fresh = poll_exactly(first, 6)
    assert sorted((r.partition, r.offset) for r in fresh) == [
        (p, o) for p in (0, 1) for o in (20, 21, 22)
    ]


def test_a_member_busy_between_polls_still_gets_its_share_of_a_rebalance(
    unique_topic: TopicFactory, kafka_settings: SettingsFactory, sources: list
) -> None:
    """A loop that learns between polls must not keep its group rebalancing (kafka-python
    3.0.12 drops a join completed between polls; the source finishes joins inside poll)."""
    topic = unique_topic(partitions=2)
    settings = kafka_settings([topic], assignment="group")
    produce(settings, topic, partitions=2, per_partition=10)
    busy = KafkaRecordSource(settings)
    sources.append(busy)
    poll_exactly(busy, 20)
    joining = KafkaRecordSource(settings)
    sources.append(joining)
    member = Member(joining)

    def busy_loop_turn() -> bool:
        busy.poll(100, 0.2)
        time.sleep(0.5)  # learning a batch
        return len(busy.assignment) == len(joining.assignment) == 1

    split = wait_for_turns(busy_loop_turn, timeout=60)
    member.stop()
    assert split, f"still rebalancing after 60 s: {busy.assignment}, {joining.assignment}"


def wait_for_turns(turn: Callable[[], bool], timeout: float) -> bool:
    """Call ``turn`` until it returns True or ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if turn():
            return True
    return False


def test_lag_is_highwater_minus_position(
    unique_topic: TopicFactory, kafka_settings: SettingsFactory, sources: list
) -> None:
    topic = unique_topic(partitions=1)
    settings = kafka_settings([topic])
    produce(settings, topic, partitions=1, per_partition=100)  # batched: end_offsets is wrong
    source = KafkaRecordSource(settings)
    sources.append(source)

    poll_exactly(source, 40, max_records=10, then_nothing=False)
    assert source.lag() == {TopicPartition(topic, 0): 60}
    poll_exactly(source, 60)
    assert source.lag() == {TopicPartition(topic, 0): 0}


def test_dead_letters_keep_bytes_and_carry_reason_headers(
    broker: EmbeddedBroker, unique_topic: TopicFactory, kafka_settings: SettingsFactory
) -> None:
    dead_letter_topic = unique_topic(partitions=1, prefix="dlq")
    long_detail = "x" + "é" * 1000  # 2001 bytes: cut at 1 KiB without splitting a character
    rejections = [
        Rejection(Record("events", 2, 17, b'{"x": oops', b"key-1", 123), "not_json", "bad"),
        Rejection(Record("events", 0, 5, None, b"key-2"), "empty_value", "no value"),
        Rejection(Record("events", 1, 9, b"\x00\xff", None), "not_utf8", long_detail),
    ]
    sink = KafkaDeadLetterSink(kafka_settings(["events"], dead_letter_topic=dead_letter_topic))
    try:
        for rejection in rejections:
            sink.send(rejection)
        sink.flush(timeout_s=10)
        assert sink.pending == 0
    finally:
        sink.close()

    consumer = ConfluentConsumer(
        {"bootstrap.servers": broker.bootstrap_servers, "group.id": "dlq-reader"}
    )
    try:
        consumer.assign([ConfluentTopicPartition(dead_letter_topic, 0, 0)])
        messages = []
        deadline = time.monotonic() + 10
        while len(messages) < 3 and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                messages.append(message)
    finally:
        consumer.close()

    assert [(m.key(), m.value()) for m in messages] == [
        (b"key-1", b'{"x": oops'),
        (b"key-2", None),
        (None, b"\x00\xff"),
    ]
    headers = [dict(m.headers()) for m in messages]
    assert headers[0] == {
        "driftd-reason": b"not_json",
        "driftd-detail": b"bad",
        "driftd-source-topic": b"events",
        "driftd-source-partition": b"2",
        "driftd-source-offset": b"17",
    }
    assert headers[1]["driftd-reason"] == b"empty_value"
    assert headers[2]["driftd-detail"] == ("x" + "é" * 511).encode()
    assert headers[2]["driftd-source-offset"] == b"9"


def test_records_from_an_independent_client_arrive_intact(
    broker: EmbeddedBroker,
    unique_topic: TopicFactory,
    kafka_settings: SettingsFactory,
    sources: list,
) -> None:
    topic = unique_topic(partitions=2)
    sent: dict[int, list[tuple[bytes | None, bytes | None]]] = defaultdict(list)
    producer = ConfluentProducer({"bootstrap.servers": broker.bootstrap_servers, "linger.ms": 5})
    for index in range(150):
        partition = index % 2
        key = None if index % 5 == 0 else bytes([index, 0, 255]) + b"key"
        value = None if index == 7 else bytes(range(index % 256)) + "ünï".encode()
        producer.produce(topic, value=value, key=key, partition=partition)
        sent[partition].append((key, value))
    assert producer.flush(10) == 0

    source = KafkaRecordSource(kafka_settings([topic]))
    sources.append(source)
    received = by_partition(poll_exactly(source, 150))

    for partition in (0, 1):
        assert [(r.key, r.value) for r in received[partition]] == sent[partition]


# kafka-python 3.0.12 leaves the sockets of refused connection attempts to the garbage collector
# (ResourceWarning "unclosed socket"): a library defect; they are collected inside this test.
@pytest.mark.filterwarnings("ignore:unclosed <socket:ResourceWarning")
def test_source_and_sink_survive_the_broker_going_away(
    start_broker: Callable[..., EmbeddedBroker],
    kafka_settings: SettingsFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Its disconnect errors are expected here; their captured tracebacks would keep the
    # leaked sockets alive past this test.
    caplog.set_level(logging.CRITICAL, logger="kafka")
    doomed = start_broker()
    doomed.create_topics(["events", "dead-letters"], partitions=1)
    settings = kafka_settings(
        ["events"],
        bootstrap_servers=[doomed.bootstrap_servers],
        dead_letter_topic="dead-letters",
        request_timeout_ms=1000,
        commit_timeout_s=1.0,
    )
    produce(settings, "events", partitions=1, per_partition=10)
    source = KafkaRecordSource(settings)
    sink = KafkaDeadLetterSink(settings)
    try:
        lose_the_broker(doomed, source, sink)
    finally:
        source.close()
        with contextlib.suppress(DeadLetterError):
            sink.close(timeout_s=0)
    del source, sink
    gc.collect()


def lose_the_broker(
    doomed: EmbeddedBroker, source: KafkaRecordSource, sink: KafkaDeadLetterSink
) -> None:
    records = poll_exactly(source, 10)
    sink.send(Rejection(records[0], "not_json", "bad"))
    sink.flush(timeout_s=5)
    assert source.ready

    doomed.kill()
    started = time.monotonic()
    while source.ready and time.monotonic() - started < 10:
        polled_at = time.monotonic()
        assert source.poll(100, 0.2) == []
        assert time.monotonic() - polled_at >= 0.1  # waits, does not spin
    assert not source.ready

    started = time.monotonic()
    with pytest.raises(SourceCommitError):
        source.commit({TopicPartition("events", 0): 10})
    assert time.monotonic() - started < 5

    sink.send(Rejection(records[1], "not_json", "bad"))
    with pytest.raises(DeadLetterError):
        sink.flush(timeout_s=1)
    assert sink.pending == 1
    with pytest.raises(DeadLetterError):  # a new producer cannot bootstrap either
        sink.flush(timeout_s=1)
    assert sink.pending == 1
    with pytest.raises(DeadLetterError):  # close still flushes, and says it could not
        sink.close(timeout_s=1)
