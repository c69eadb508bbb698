"""What the ranks of a trainer group agree on at the start of every round.

A round is one poll on every rank. Before learning it, the ranks exchange a few numbers in one
small all-reduce: how many records each polled, whether any must stop, whether a snapshot is
due (rank 0's schedule decides, so the group snapshots at the same round) and the step size
rank 0's controller chose. Everything that follows in the round is then the same call sequence
on every rank.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from driftd.ports import TrainerGroup

_FLAGS = 4  # stop, snapshot due, unsaved progress, step size; then one count per rank


@dataclass(frozen=True)
class RoundAgreement:
    """The group's view of one round.

    Attributes:
        records: Records polled by each rank, in rank order.
        stop: Some rank must stop (a stop request or a stop condition): all stop now.
        snapshot_due: Rank 0's snapshot schedule fired: all take part in the snapshot.
        dirty: Some rank holds progress no snapshot has saved yet.
        step_size: Events per gradient step (rank 0's choice; 0: none chosen).
    """

    records: tuple[int, ...]
    stop: bool
    snapshot_due: bool
    dirty: bool
    step_size: int

    @property
    def total_records(self) -> int:
        """Records polled by the whole group this round."""
        return sum(self.records)

    def parts(self, step_size: int | None) -> int:
        """Micro-batches every rank takes this round (the busiest rank's count, at least 1)."""
        return steps_for(max(self.records), step_size)


def steps_for(busiest: int, step_size: int | None) -> int:
    """Micro-batches every rank takes for rows of which the busiest rank holds ``busiest``.

    ``step_size`` None: one step for all of them. Never fewer than 1, so a rank without rows
    still joins the step's all-reduce.
    """
    size = step_size or busiest or 1
    return max(1, math.ceil(busiest / size))


def agree_round(
    group: TrainerGroup,
    *,
    records: int,
    stop: bool,
    snapshot_due: bool,
    dirty: bool,
    step_size: int | None,
) -> RoundAgreement:
    """One all-reduce: this rank's numbers in, the group's agreement out."""
    leader = group.rank == 0
    votes = [0.0] * (_FLAGS + group.world_size)
    votes[0] = float(stop)
    votes[1] = float(snapshot_due and leader)
    votes[2] = float(dirty)
    votes[3] = float(step_size or 0) if leader else 0.0
    votes[_FLAGS + group.rank] = float(records)
    summed = group.sum(votes)
    return RoundAgreement(
        records=tuple(int(count) for count in summed[_FLAGS:]),
        stop=summed[0] > 0,
        snapshot_due=summed[1] > 0,
        dirty=summed[2] > 0,
        step_size=int(summed[3]),
    )
