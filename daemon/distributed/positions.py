"""What each rank sends rank 0 for a coordinated snapshot, and how rank 0 combines them."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from driftd.distributed.replicas import model_digest
from driftd.records import Rejection, TopicPartition
from driftd.training_state import TrainingState


@dataclass(frozen=True)
class RankPosition:
    """One rank's part of a snapshot.

    Attributes:
        offsets: The next offset of each of its own partitions.
        undelivered: Its dead letters not yet acknowledged.
        events_learned: Its learned events (rank 0's include the restored snapshot's total).
        events_rejected: Its rejected records (idem).
        digest: Of its model: all equal, or the replicas diverged.
    """

    offsets: dict[TopicPartition, int]
    undelivered: list[Rejection]
    events_learned: int
    events_rejected: int
    digest: str


def rank_position(
    state: TrainingState,
    owns: Callable[[TopicPartition], bool],
    undelivered: Sequence[Rejection],
) -> RankPosition:
    """This rank's position: its own partitions only."""
    learner = state.learner
    assert learner is not None
    return RankPosition(
        {tp: offset for tp, offset in state.offsets.items() if owns(tp)},
        list(undelivered),
        learner.events_learned,
        state.events_rejected,
        model_digest(learner.model),
    )


@dataclass(frozen=True)
class GroupPosition:
    """The whole group's position, as rank 0's snapshot holds it."""

    offsets: dict[TopicPartition, int]
    undelivered: list[Rejection]
    events_learned: int
    events_rejected: int


def group_position(
    positions: Sequence[RankPosition], known: Mapping[TopicPartition, int]
) -> GroupPosition:
    """The group's position from every rank's.

    Offsets: every rank's over the ``known`` ones, the newest winning (offsets only move
    forward); every rank's undelivered dead letters; the counters summed.
    """
    offsets = dict(known)
    for position in positions:
        for tp, offset in position.offsets.items():
            offsets[tp] = max(offsets.get(tp, 0), offset)
    return GroupPosition(
        offsets,
        [rejection for position in positions for rejection in position.undelivered],
        sum(position.events_learned for position in positions),
        sum(position.events_rejected for position in positions),
    )
