"""PartitionShare: each partition has exactly one rank, the same one everywhere, for good."""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest

from driftd.records import PartitionShare

TOPICS = ("events", "clicks", "a", "", "événements", "orders-eu-west-1")


def owner(topic: str, partition: int, world_size: int) -> int:
    """The one rank of ``world_size`` that owns the partition (asserting there is one)."""
    [rank] = [r for r in range(world_size) if PartitionShare(r, world_size).owns(topic, partition)]
    return rank


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 7, 16])
def test_every_partition_belongs_to_exactly_one_rank(world_size: int) -> None:
    shares = [PartitionShare(rank, world_size) for rank in range(world_size)]
    for topic in TOPICS:
        for partition in range(40):
            owners = [s.rank for s in shares if s.owns(topic, partition)]
            assert len(owners) == 1, (topic, partition, owners)


@pytest.mark.parametrize("world_size", [2, 3, 5])
def test_a_topics_partitions_go_round_robin(world_size: int) -> None:
    for topic in TOPICS:
        ranks = [owner(topic, p, world_size) for p in range(4 * world_size)]
        assert all(b == (a + 1) % world_size for a, b in itertools.pairwise(ranks))
        assert sorted(ranks) == sorted(list(range(world_size)) * 4)  # an even spread


def test_the_split_is_a_fixed_function_of_the_names() -> None:
    # crc32(b"events") = 1401378634, crc32(b"clicks") = 551164161: a literal regression check.
    assert [owner("events", p, 3) for p in range(6)] == [1, 2, 0, 1, 2, 0]
    assert [owner("clicks", p, 3) for p in range(6)] == [0, 1, 2, 0, 1, 2]
    assert [owner("events", p, 2) for p in range(4)] == [0, 1, 0, 1]
    assert [owner("clicks", p, 2) for p in range(4)] == [1, 0, 1, 0]


def test_another_process_with_another_hash_seed_splits_the_same_way() -> None:
    code = (
        "from driftd.records import PartitionShare as S;"
        "print([[r for r in range(3) if S(r, 3).owns(t, p)][0] for t in ('events', 'x') "
        "for p in range(5)])"
    )
    expected = str([owner(t, p, 3) for t in ("events", "x") for p in range(5)])
    for seed in ("1", "2"):
        result = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed},
        )
        assert result.stdout.strip() == expected


def test_adding_partitions_moves_no_existing_one() -> None:
    for world_size in (2, 3, 4):
        for topic in TOPICS:
            before = [owner(topic, p, world_size) for p in range(4)]
            after = [owner(topic, p, world_size) for p in range(12)]
            assert after[:4] == before


def test_share_is_frozen_and_comparable() -> None:
    share = PartitionShare(1, 2)
    assert share == PartitionShare(1, 2)
    with pytest.raises(AttributeError):
        share.rank = 0  # type: ignore[misc]


@pytest.mark.parametrize(("rank", "world_size"), [(-1, 2), (2, 2), (5, 2), (0, 0), (0, -1)])
def test_a_rank_outside_the_world_is_refused(rank: int, world_size: int) -> None:
    with pytest.raises(ValueError, match=rf"rank={rank}, world_size={world_size}"):
        PartitionShare(rank, world_size)
