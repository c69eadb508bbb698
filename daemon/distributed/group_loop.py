"""The training loop of one rank in a trainer group: rounds in lockstep, one model, one snapshot.

Every round, each rank polls its own partitions, then the ranks agree (one small all-reduce,
:mod:`driftd.distributed.rounds`) on whether to stop or snapshot and how many steps to take;
then each learns its records:

* ``average``: from its own records alone; every ``average_every`` rounds that learned
  something, the parameters are averaged and the input statistics merged;
* ``allreduce``: every rank takes the same number of micro-batch steps (empty ones where it has
  fewer records), each step applying the group's event-weighted mean gradient; the input
  statistics are merged at the end of the round. The replicas are then identical at every
  step, and drift, adaptation and pruning decide on the whole group's rows and step reports
  (:mod:`driftd.distributed.decisions`): every rank takes the same decision at the same step.

Coordinated snapshot (commit order as in :mod:`driftd.loop`, made group-wide): the replicas are
made one; every rank flushes its own dead letters and sends rank 0 its next offsets, its
undelivered rejections and its counters; rank 0 saves one snapshot with all of them; the ranks
learn whether it is durable, and only then does each commit its own partitions' offsets. A
restart, with any number of ranks, resumes every partition from that snapshot.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

from driftd.adaptation.routing import select_rows
from driftd.dead_letter_backlog import commit_offsets
from driftd.decode import DecodedBatch
from driftd.distributed.decisions import gather_batch, gather_report
from driftd.distributed.positions import RankPosition, group_position, rank_position
from driftd.distributed.replicas import (
    AllReducedGradients,
    average_replicas,
    broadcast_model,
    merge_standardizers,
)
from driftd.distributed.rounds import RoundAgreement, agree_round, steps_for
from driftd.learning.learner import OnlineLearner, StepReport
from driftd.learning.standardize import standardizer_of
from driftd.loop import TrainingLoop
from driftd.loop_progress import LoopProgress, StopWhen
from driftd.non_finite import split_dropped
from driftd.ports import Snapshot, TrainerGroup
from driftd.records import PartitionShare, Record, Rejection, TopicPartition
from driftd.serving.publish_gate import PublishDecision

log = logging.getLogger("driftd.distributed")

SyncMode = Literal["average", "allreduce"]


class GroupTrainingLoop(TrainingLoop):
    """:class:`~driftd.loop.TrainingLoop` for one rank of a trainer group.

    Args:
        group: The collectives of the group (every rank runs this loop).
        sync: ``average`` or ``allreduce`` (see the module docstring).
        average_every: Rounds that learned something between two averages (``average``).
        share: The partitions this rank reads (it commits and resends only those).
        **loop: Everything :class:`~driftd.loop.TrainingLoop` takes.
    """

    def __init__(
        self,
        *,
        group: TrainerGroup,
        sync: SyncMode,
        average_every: int,
        share: PartitionShare,
        **loop: Any,
    ) -> None:
        self.group = group
        self.sync = sync
        self.average_every = average_every
        self.share = share
        self._agreed_size: int | None = None
        self._rounds_unsynced = 0
        super().__init__(**loop)
        learner = self.state.learner
        if learner is None:
            raise ValueError("a trainer group needs its model before the first round")
        self._gradients: AllReducedGradients | None = None
        if sync == "allreduce":
            self._gradients = AllReducedGradients(group, self.clock.monotonic)
            learner.gradient_sync = self._gradients
        adaptation, pruning = self.state.adaptation, self.state.pruning
        decides = (adaptation is not None and adaptation.enabled) or pruning is not None
        if decides and self._gradients is None:
            raise ValueError("adaptation or pruning in a trainer group needs sync=allreduce")
        # Decisions that change the model are taken on the group's rows; a drift monitor whose
        # alarms change nothing (adaptation off) watches each rank's own rows, as with average.
        self._decides_together = self._gradients is not None and decides
        if group.rank != 0:  # the snapshot's counters are the group's: rank 0 carries them
            learner.events_learned = 0
            self.state.events_rejected = 0
        self.telemetry.trainer_ranks(group.world_size)

    def _resend(self, rejections: Sequence[Rejection]) -> None:
        """Resend only this rank's partitions' undelivered dead letters (each rank its own)."""
        own = [
            r for r in rejections if self.owns(TopicPartition(r.record.topic, r.record.partition))
        ]
        super()._resend(own)

    def run(self, stop: StopWhen | None = None) -> LoopProgress:
        """Rounds until some rank stops (all stop at the same round); a final snapshot."""
        stop = stop or StopWhen()
        started = self.clock.monotonic()
        last_record: float | None = None  # the group's: any rank's records keep all busy
        consumed = 0  # the group's records, for max_events
        busy = False  # the last round had records somewhere: poll without waiting
        self.progress.stopped_by = "request"
        while True:
            now = self.clock.monotonic()
            self.last_heartbeat = now
            reason = stop.reached(
                consumed=consumed, started=started, last_record=last_record, now=now
            )
            stopping = self._stop.is_set() or reason is not None
            records: Sequence[Record] = ()
            if not stopping:
                asked = self.batch_size
                records = self._poll(asked, 0.0 if busy else self.poll_timeout_s)
                if records:
                    self._choose_step_size(len(records), asked)
            agreement = agree_round(
                self.group,
                records=len(records),
                stop=stopping,
                snapshot_due=self.snapshot_schedule.due(self.state.steps),
                dirty=self._dirty,
                step_size=self._step_size(),
            )
            busy = agreement.total_records > 0
            if busy:
                consumed += agreement.total_records
                learning = self.clock.monotonic()
                self._learn_round(records, agreement)
                last_record = self.clock.monotonic()
                if self.step_sizes is not None and records:
                    self.step_sizes.learned(len(records), last_record - learning)
            self._maybe_report_lag()
            if agreement.snapshot_due and agreement.dirty:
                self.snapshot_and_commit()
            if agreement.stop:
                self.progress.stopped_by = reason or ("request" if stopping else "group")
                break
        final = agree_round(
            self.group, records=0, stop=True, snapshot_due=False, dirty=self._dirty,
            step_size=None,
        )  # fmt: skip
        if final.dirty:
            self.snapshot_and_commit()
        return self.progress

    def _learn_round(self, records: Sequence[Record], agreement: RoundAgreement) -> None:
        """Learn this rank's records the way the sync mode needs (see the module docstring)."""
        if self._gradients is not None:
            self._agreed_size = agreement.step_size or None
            self._parts = agreement.parts(self._agreed_size)
            before = self._gradients.seconds
            self.process(records)  # every rank: the same steps, each one all-reduced
            started = self.clock.monotonic()
            self._merge_inputs()
            spent = self._gradients.seconds - before + self.clock.monotonic() - started
            self.telemetry.model_synced("allreduce", spent)
            return
        if records:
            self.process(records)
        self._rounds_unsynced += 1
        if self._rounds_unsynced >= self.average_every:
            self.average()

    def owns(self, tp: TopicPartition) -> bool:
        """Whether ``tp`` is one of this rank's partitions."""
        return self.share.owns(tp.topic, tp.partition)

    def _learn(self, batch: DecodedBatch) -> None:
        """Learn this rank's rows; decide on the group's (see the module docstring)."""
        if self._decides_together:
            batch = gather_batch(self.group, batch)  # planned and decided alike everywhere
        super()._learn(batch)

    def _step(self, learner: OnlineLearner, batch: DecodedBatch) -> tuple[StepReport, DecodedBatch]:
        """Learn ``batch``; deciding together, this rank's rows of the group's ``batch``.

        Returns the group's report and kept rows then, for the decisions that follow.
        """
        if not self._decides_together:
            return super()._step(learner, batch)
        owners = [self.share.owner(r.topic, r.partition) for r in batch.records]
        rows = [row for row, owner in enumerate(owners) if owner == self.group.rank]
        busiest = max((owners.count(rank) for rank in range(self.group.world_size)), default=0)
        self._parts = steps_for(busiest, self._agreed_size)
        local = batch if len(rows) == len(owners) else select_rows(batch, rows)
        report, _ = super()._step(learner, local)
        report = gather_report(self.group, report, len(rows))
        if report.dropped is not None:  # the owners dead-lettered them
            batch, _ = split_dropped(batch, report.dropped)
        return report, batch

    def _step_size(self) -> int | None:
        """Events per step this rank proposes: its controller's, else the fixed setting's."""
        learner = self.state.learner
        return self.progress.step_size or (None if learner is None else learner.micro_batch)

    def _micro_batch(self) -> int | None:
        if self.sync == "allreduce":
            return self._agreed_size
        return super()._micro_batch()

    def _merge_inputs(self) -> None:
        learner = self.state.learner
        assert learner is not None
        standardizer = standardizer_of(learner.model)
        if standardizer is not None:
            merge_standardizers(self.group, standardizer)

    def average(self) -> None:
        """Average the replicas now (a collective: every rank calls it at the same round)."""
        learner = self.state.learner
        assert learner is not None
        started = self.clock.monotonic()
        average_replicas(self.group, learner.model)
        self._rounds_unsynced = 0
        self.telemetry.model_synced("average", self.clock.monotonic() - started)

    def snapshot_and_commit(self) -> bool:
        """The coordinated snapshot (see the module docstring); True once it is durable."""
        if self.sync == "average" and self._rounds_unsynced:
            self.average()
        self._flush_dead_letters()
        undelivered = list(self.dead_letters.undelivered())
        position = rank_position(self.state, self.owns, undelivered)
        gathered = self.group.gather(position)
        self._check_replicas(gathered)
        written = None if gathered is None else self._save_for_group(gathered)  # rank 0
        outcome = self.group.broadcast(
            None if written is None else (written[0].version, written[1].published)
        )
        if outcome is None:
            self.snapshot_schedule.fired(self.state.steps)
            return False
        version, published = outcome
        self.state.snapshot_version = version
        self.progress.snapshot_version = version
        if published:
            self.progress.published_version = version
        self.snapshot_schedule.fired(self.state.steps)
        self._dirty = bool(undelivered)
        self._commit(commit_offsets(position.offsets, undelivered))
        log.info(
            "group snapshot %d durable: rank %d committed its %d partitions", version,
            self.group.rank, len(position.offsets),
            extra={"event": "group_snapshot", "version": version, "rank": self.group.rank,
                   "digest": position.digest, "offsets": position.offsets and {
                       str(tp): offset for tp, offset in position.offsets.items()}},
        )  # fmt: skip
        if written is not None:
            self._announce(*written)
        return True

    def _check_replicas(self, positions: list[RankPosition] | None) -> None:
        """Rank 0 compares the replicas' digests; if they differ, all take rank 0's model.

        They cannot differ on deterministic kernels; nondeterministic ones (some CUDA
        reductions) can drift apart by rounding, which this repairs at every snapshot.
        """
        digests = None if positions is None else {p.digest for p in positions}
        diverged = self.group.broadcast(digests is not None and len(digests) > 1)
        if not diverged:
            return
        log.warning(
            "the replicas differed at step %d: every rank takes rank 0's model",
            self.state.steps, extra={"event": "replicas_diverged", "step": self.state.steps},
        )  # fmt: skip
        learner = self.state.learner
        assert learner is not None
        broadcast_model(self.group, learner.model)

    def _save_for_group(
        self, positions: list[RankPosition]
    ) -> tuple[Snapshot, PublishDecision] | None:
        """Rank 0: one snapshot holding every rank's offsets, rejections and counters."""
        state, learner = self.state, self.state.learner
        assert learner is not None
        group = group_position(positions, state.offsets)
        state.offsets, state.undelivered = group.offsets, group.undelivered
        own_learned, own_rejected = learner.events_learned, state.events_rejected
        learner.events_learned, state.events_rejected = group.events_learned, group.events_rejected
        try:
            return self._write_snapshot()
        finally:
            learner.events_learned, state.events_rejected = own_learned, own_rejected
