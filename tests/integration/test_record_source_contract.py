"""The RecordSource contract, one suite over every implementation.

``InMemoryRecordSource`` (the replay and the loop tests' source), ``KafkaRecordSource`` (with
manual assignment, the trainer's default, and as a group member) and ``KafkaProcessSource``
(the same consumer in a child process) on the real broker. Each test
gets a fresh "world": a two-partition topic (or record list) and one consumer group (or shared
commit store), so reopening a source there means what restarting a trainer means. Sources opened
with a :class:`PartitionShare` are the ranks of one trainer group in that world.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import pytest

from driftd.adapters.embedded_broker import EmbeddedBroker
from driftd.adapters.kafka_clients import build_producer
from driftd.adapters.kafka_process_source import KafkaProcessSource
from driftd.adapters.kafka_source import KafkaRecordSource
from driftd.adapters.memory_source import InMemoryRecordSource
from driftd.ports import RecordSource
from driftd.records import PartitionShare, Record, TopicPartition
from driftd.settings.root import KafkaSettings
from tests.conftest import TEST_GROUP_TIMEOUTS

pytestmark = pytest.mark.integration

PARTITIONS = 2


def value(partition: int, index: int) -> bytes:
    """The payload of the ``index``-th record of ``partition``, in every world."""
    return b"%d:%d" % (partition, index)


@dataclass
class World:
    """A topic (or record list) and a group (or commit store) that sources are opened on."""

    open_source: Callable[
        [Mapping[TopicPartition, int] | None, PartitionShare | None], RecordSource
    ]
    publish_to: Callable[[int, int], None]
    topic: str
    published: Counter[int] = field(default_factory=Counter)
    opened: list[RecordSource] = field(default_factory=list)

    def publish(self, per_partition: int) -> None:
        """Append ``per_partition`` records to each partition."""
        for partition in range(PARTITIONS):
            self.publish_to(partition, per_partition)
            self.published[partition] += per_partition

    def open(
        self,
        start_offsets: Mapping[TopicPartition, int] | None = None,
        share: PartitionShare | None = None,
    ) -> RecordSource:
        """A new source in this world's group (closed at teardown)."""
        self.opened.append(self.open_source(start_offsets, share))
        return self.opened[-1]

    def tp(self, partition: int) -> TopicPartition:
        return TopicPartition(self.topic, partition)


def memory_world() -> World:
    records: list[Record] = []
    committed: dict[TopicPartition, int] = {}

    def publish_to(partition: int, count: int) -> None:
        start = sum(1 for r in records if r.partition == partition)
        records.extend(
            Record("events", partition, start + i, value(partition, start + i))
            for i in range(count)
        )

    def open_source(
        start: Mapping[TopicPartition, int] | None, share: PartitionShare | None
    ) -> RecordSource:
        return InMemoryRecordSource(
            list(records), start_offsets=start, committed=committed, share=share
        )

    return World(open_source, publish_to, "events")


def kafka_world(broker: EmbeddedBroker, kind: str) -> World:
    topic = f"contract-{uuid.uuid4().hex[:12]}"
    broker.create_topics([topic], partitions=PARTITIONS)
    settings = KafkaSettings(
        bootstrap_servers=[broker.bootstrap_servers],
        topics=[topic],
        group_id=f"group-{uuid.uuid4().hex[:12]}",
        assignment="group" if kind == "kafka_group" else "manual",
        **TEST_GROUP_TIMEOUTS,
    )
    sent: Counter[int] = Counter()

    def publish_to(partition: int, count: int) -> None:
        producer = build_producer(settings)
        try:
            for index in range(sent[partition], sent[partition] + count):
                producer.send(topic, value=value(partition, index), partition=partition)
            producer.flush(timeout=10)
        finally:
            producer.close(timeout=5)
        sent[partition] += count

    def open_source(
        start: Mapping[TopicPartition, int] | None, share: PartitionShare | None
    ) -> RecordSource:
        if kind == "kafka_process":
            return KafkaProcessSource(settings, start, max_records=64, share=share)
        return KafkaRecordSource(settings, start, share=share)  # a share overrides "group"

    return World(open_source, publish_to, topic)


@pytest.fixture(params=["memory", "kafka", "kafka_group", "kafka_process"])
def world(request: pytest.FixtureRequest) -> Iterator[World]:
    """A fresh world of each implementation; every source opened in it closed at teardown."""
    if request.param == "memory":
        made = memory_world()
    else:
        made = kafka_world(request.getfixturevalue("broker"), request.param)
    yield made
    for source in made.opened:
        source.close()


def read(source: RecordSource, count: int, max_records: int = 16) -> list[Record]:
    """Poll until ``count`` records came (each poll at most ``max_records``), then no more."""
    records: list[Record] = []
    deadline = time.monotonic() + 30
    while len(records) < count and time.monotonic() < deadline:
        batch = source.poll(min(max_records, count - len(records)), 0.2)
        assert len(batch) <= max_records
        records += batch
    assert len(records) == count, f"got {len(records)} of {count} records"
    return records


def offsets(records: Sequence[Record], partition: int) -> list[int]:
    return [r.offset for r in records if r.partition == partition]


def test_polls_every_record_once_in_partition_order(world: World) -> None:
    world.publish(50)
    source = world.open()

    records = read(source, 100)

    assert source.poll(16, 0.3) == []
    for partition in range(PARTITIONS):
        assert offsets(records, partition) == list(range(50))
        mine = [r.value for r in records if r.partition == partition]
        assert mine == [value(partition, i) for i in range(50)]
    assert {r.topic for r in records} == {world.topic}
    assert source.ready


def test_commit_then_reopen_resumes_at_the_committed_offsets(world: World) -> None:
    world.publish(30)
    first = world.open()
    read(first, 60)
    first.commit({world.tp(0): 10, world.tp(1): 25})
    first.commit({world.tp(0): 5})  # backwards: never moves the commit back
    first.close()

    resumed = read(world.open(), 20 + 5)

    assert offsets(resumed, 0) == list(range(10, 30))
    assert offsets(resumed, 1) == list(range(25, 30))


def test_start_offsets_win_over_the_committed_ones(world: World) -> None:
    world.publish(20)
    first = world.open()
    read(first, 40)
    first.commit({world.tp(0): 5, world.tp(1): 5})
    first.close()

    resumed = read(world.open({world.tp(1): 15}), 15 + 5)  # the snapshot's offset for p1

    assert offsets(resumed, 0) == list(range(5, 20))
    assert offsets(resumed, 1) == list(range(15, 20))


def test_lag_is_what_poll_has_not_handed_out_yet(world: World) -> None:
    world.publish(40)
    source = world.open()

    first = read(source, 30, max_records=10)
    lag_after_30 = dict(source.lag())
    rest = read(source, 50, max_records=10)

    # A Kafka consumer learns a partition's high watermark when it first reads from it: a
    # partition not read yet may be left out, never misreported.
    read_per_partition = Counter(r.partition for r in first)
    expected = {world.tp(p): 40 - read_per_partition[p] for p in range(PARTITIONS)}
    assert {world.tp(p) for p in read_per_partition} <= lag_after_30.keys()
    assert lag_after_30 == {tp: expected[tp] for tp in lag_after_30}
    assert len(rest) == 50
    assert dict(source.lag()) == {world.tp(p): 0 for p in range(PARTITIONS)}


def test_ready_while_open_and_close_is_idempotent(world: World) -> None:
    world.publish(5)
    source = world.open()
    read(source, 10)
    assert source.ready

    source.close()
    source.close()

    assert not source.ready
    assert dict(source.lag()) == {}
    with pytest.raises(RuntimeError, match="closed"):
        source.poll(1, 0.0)


def test_ranks_read_disjoint_shares_and_commit_only_their_own(world: World) -> None:
    world.publish(20)
    shares = PartitionShare(0, 2), PartitionShare(1, 2)
    [mine0] = [p for p in range(PARTITIONS) if shares[0].owns(world.topic, p)]
    [mine1] = [p for p in range(PARTITIONS) if shares[1].owns(world.topic, p)]
    ranks = [world.open(share=share) for share in shares]

    read0, read1 = read(ranks[0], 20), read(ranks[1], 20)

    assert {r.partition for r in read0} == {mine0}
    assert {r.partition for r in read1} == {mine1}
    assert offsets(read0, mine0) == offsets(read1, mine1) == list(range(20))
    assert ranks[0].poll(16, 0.3) == []
    assert ranks[1].poll(16, 0.3) == []
    assert dict(ranks[0].lag()) == {world.tp(mine0): 0}
    assert dict(ranks[1].lag()) == {world.tp(mine1): 0}
    assert ranks[0].ready
    assert ranks[1].ready
    # Each rank offers offsets for both partitions; only its own may reach the group (in an
    # order where taking the other rank's would show: the in-memory store never moves back).
    ranks[1].commit({world.tp(mine0): 9, world.tp(mine1): 13})
    ranks[0].commit({world.tp(mine0): 7, world.tp(mine1): 17})
    for rank in ranks:
        rank.close()

    resumed = read(world.open(), 13 + 7)

    assert offsets(resumed, mine0) == list(range(7, 20))
    assert offsets(resumed, mine1) == list(range(13, 20))


def test_a_rank_ignores_start_offsets_of_partitions_it_does_not_own(world: World) -> None:
    world.publish(10)
    share = PartitionShare(1, 2)
    [mine] = [p for p in range(PARTITIONS) if share.owns(world.topic, p)]
    other = 1 - mine

    records = read(world.open({world.tp(mine): 4, world.tp(other): 8}, share=share), 6)

    assert offsets(records, mine) == list(range(4, 10))
    assert offsets(records, other) == []
