"""KafkaRecordSource with a PartitionShare: the ranks of one trainer group on the real broker."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka import Consumer as ConfluentConsumer
from confluent_kafka import TopicPartition as ConfluentTopicPartition

from driftd.adapters.embedded_broker import EmbeddedBroker
from driftd.adapters.kafka_source import KafkaRecordSource
from driftd.records import PartitionShare, TopicPartition
from driftd.settings.root import KafkaSettings
from tests.integration.test_kafka_adapters import by_partition, poll_exactly, produce

pytestmark = pytest.mark.integration

SettingsFactory = Callable[..., KafkaSettings]
TopicFactory = Callable[..., str]
PARTITIONS = 4


def committed_offsets(broker: EmbeddedBroker, group_id: str, topic: str) -> dict[int, int]:
    """The group's committed offsets per partition, read by an independent client."""
    consumer = ConfluentConsumer(
        {"bootstrap.servers": broker.bootstrap_servers, "group.id": group_id}
    )
    try:
        wanted = [ConfluentTopicPartition(topic, p) for p in range(PARTITIONS)]
        return {tp.partition: tp.offset for tp in consumer.committed(wanted, timeout=10)}
    finally:
        consumer.close()


@pytest.fixture
def sources() -> Iterator[list[KafkaRecordSource]]:
    """Sources a test opened; closed before the broker can go away."""
    opened: list[KafkaRecordSource] = []
    yield opened
    for source in opened:
        source.close()


def owned(share: PartitionShare, topic: str) -> set[int]:
    return {p for p in range(PARTITIONS) if share.owns(topic, p)}


def test_two_ranks_split_the_partitions_then_one_rank_resumes_them_all(
    broker: EmbeddedBroker,
    unique_topic: TopicFactory,
    kafka_settings: SettingsFactory,
    sources: list[KafkaRecordSource],
) -> None:
    topic = unique_topic(partitions=PARTITIONS)
    settings = kafka_settings([topic])  # one group_id for every rank
    produce(settings, topic, partitions=PARTITIONS, per_partition=25)
    shares = PartitionShare(0, 2), PartitionShare(1, 2)
    ranks = [KafkaRecordSource(settings, share=share) for share in shares]
    sources.extend(ranks)

    read = [poll_exactly(rank, 50) for rank in ranks]  # 2 partitions of 25 each, then nothing

    for rank, share, records in zip(ranks, shares, read, strict=True):
        mine = owned(share, topic)
        assert len(mine) == 2
        assert {r.partition for r in records} == mine
        assert rank.assignment == {TopicPartition(topic, p) for p in mine}
        assert rank.lag() == {TopicPartition(topic, p): 0 for p in mine}
        assert rank.ready
        for received in by_partition(records).values():
            assert [r.offset for r in received] == list(range(25))
    everything = Counter((r.partition, r.offset) for r in read[0] + read[1])
    assert everything == Counter((p, o) for p in range(PARTITIONS) for o in range(25))

    # Each rank commits 10 + p for its own partitions and offers 1 for the others, which must
    # never reach the group (rank 0 commits last, so a leak would overwrite rank 1's).
    for index in (1, 0):
        mine = owned(shares[index], topic)
        ranks[index].commit(
            {TopicPartition(topic, p): 10 + p if p in mine else 1 for p in range(PARTITIONS)}
        )
    assert committed_offsets(broker, settings.group_id, topic) == {
        p: 10 + p for p in range(PARTITIONS)
    }
    # What each rank's snapshot would hold: the next offset of its own partitions. A stale
    # entry for a partition it does not own (here 0) is ignored.
    snapshots = [
        {TopicPartition(topic, p): 25 for p in owned(share, topic)}
        | {TopicPartition(topic, p): 0 for p in set(range(PARTITIONS)) - owned(share, topic)}
        for share in shares
    ]
    for rank in ranks:
        rank.close()

    produce(settings, topic, partitions=PARTITIONS, per_partition=5)
    starts = {tp: offset for snapshot in snapshots for tp, offset in snapshot.items() if offset}
    alone = KafkaRecordSource(settings, start_offsets=starts, share=PartitionShare(0, 1))
    sources.append(alone)
    resumed = poll_exactly(alone, PARTITIONS * 5)

    # The snapshots' offsets win over the group's 10 + p: nothing is read twice.
    assert sorted((r.partition, r.offset) for r in resumed) == [
        (p, o) for p in range(PARTITIONS) for o in range(25, 30)
    ]
    assert alone.lag() == {TopicPartition(topic, p): 0 for p in range(PARTITIONS)}


def test_a_rank_ignores_other_ranks_start_offsets(
    unique_topic: TopicFactory, kafka_settings: SettingsFactory, sources: list[KafkaRecordSource]
) -> None:
    topic = unique_topic(partitions=PARTITIONS)
    settings = kafka_settings([topic])
    produce(settings, topic, partitions=PARTITIONS, per_partition=10)
    share = PartitionShare(1, 2)
    mine = owned(share, topic)
    starts = {TopicPartition(topic, p): 6 if p in mine else 3 for p in range(PARTITIONS)}
    source = KafkaRecordSource(settings, start_offsets=starts, share=share)
    sources.append(source)

    records = poll_exactly(source, 2 * 4)

    assert sorted((r.partition, r.offset) for r in records) == [
        (p, o) for p in sorted(mine) for o in range(6, 10)
    ]


def test_a_rank_with_no_partition_is_ready_and_idle(
    unique_topic: TopicFactory, kafka_settings: SettingsFactory, sources: list[KafkaRecordSource]
) -> None:
    topic = unique_topic(partitions=1)
    settings = kafka_settings([topic])
    produce(settings, topic, partitions=1, per_partition=5)
    [idle] = [s for s in (PartitionShare(0, 2), PartitionShare(1, 2)) if not s.owns(topic, 0)]
    source = KafkaRecordSource(settings, share=idle)
    sources.append(source)

    started = time.monotonic()
    assert source.poll(10, 0.3) == []
    assert time.monotonic() - started >= 0.2  # waits, does not spin
    assert source.ready
    assert source.assignment == frozenset()
    assert source.lag() == {}
    source.commit({TopicPartition(topic, 0): 5})  # not its partition: nothing to send


def test_a_rank_on_a_missing_topic_is_not_ready(
    kafka_settings: SettingsFactory, sources: list[KafkaRecordSource]
) -> None:
    source = KafkaRecordSource(kafka_settings(["no-such-topic"]), share=PartitionShare(0, 2))
    sources.append(source)

    assert source.poll(10, 0.2) == []
    assert not source.ready


def test_a_share_with_group_assignment_is_refused() -> None:
    with pytest.raises(ValueError, match="manual assignment"):
        KafkaRecordSource(KafkaSettings(), share=PartitionShare(0, 2), assignment="group")
