"""The training loop: poll → decode → dead-letter → learn → adapt → prune → snapshot → commit.

Commit order (what makes a crash lose and double nothing): the dead-letter sink is flushed, then
the snapshot holding the model *and* the next offsets is made durable, and only then are those
offsets committed to the source. A restart resumes from the snapshot's offsets, so every event
after them is learned exactly once into the restored state.

A dead-letter outage does not stop that: rejections the sink has not acknowledged are saved in
the snapshot (and sent again by a restarted loop), and the offsets committed stop at the oldest
of them in each partition (:mod:`driftd.dead_letter_backlog`). Their number is bounded by
``max_dead_letter_backlog``: once that many wait, the loop stops polling (back-pressure) and
retries the flush every poll timeout until they are delivered; nothing is dropped.

Publishing is separate from durability: the quality gate (:mod:`driftd.serving.publish_gate`)
decides, before the save, whether the snapshot also becomes the published one (``LATEST``, what
inference follows). Either way it is saved and its offsets committed; a published one is then
announced to the notifier (best effort, never blocking the loop for long).
"""

from __future__ import annotations

import errno
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from threading import Event

from driftd.adaptation.outcomes import StepOutcome
from driftd.adaptation.reporting import report_outcome
from driftd.dead_letter_backlog import commit_offsets
from driftd.decode import DecodedBatch
from driftd.learning.granularity import StepSizeController
from driftd.learning.learner import OnlineLearner, StepReport
from driftd.learning.models import count_parameters
from driftd.loop_progress import LoopProgress, ProgressLogSchedule, StopWhen
from driftd.non_finite import split_dropped
from driftd.ports import (
    Clock,
    DeadLetterSink,
    Decoder,
    RecordSource,
    Snapshot,
    SnapshotNotifier,
    SnapshotStore,
    Telemetry,
)
from driftd.pruning import flops_per_event
from driftd.pruning.stage import report_interrupted, report_pruning
from driftd.records import Record, Rejection, TopicPartition
from driftd.serving.publish_gate import PublishDecision, PublishGate
from driftd.serving.publishing import SnapshotPublisher
from driftd.training_state import TrainingState
from driftd.triggers import EveryNStepsOrTSeconds

__all__ = ["LoopProgress", "StopWhen", "TrainingLoop"]

log = logging.getLogger("driftd.loop")


class _RateLimitedLog:
    """Logs the first bad record, then at most one summary per interval."""

    def __init__(self, every_seconds: float, clock: Clock) -> None:
        self._every = every_seconds
        self._clock = clock
        self._last = -math.inf
        self._suppressed = 0

    def rejected(self, rejection: Rejection) -> None:
        now = self._clock.monotonic()
        if now - self._last < self._every:
            self._suppressed += 1
            return
        record = rejection.record
        log.warning(
            "rejected record %s[%d]@%d: %s (%s); %d more since the last report",
            record.topic, record.partition, record.offset, rejection.reason,
            rejection.detail, self._suppressed,
            extra={"event": "record_rejected", "reason": rejection.reason},
        )  # fmt: skip
        self._last, self._suppressed = now, 0


class TrainingLoop:
    """Runs the learner against a record source until stopped.

    Everything it touches is injected: the source, decoder, training state, stores and clock.
    ``on_step`` sees the progress after each step; ``on_report`` each step's
    :class:`~driftd.learning.learner.StepReport` with the (per-domain part of the) batch it scored.
    ``gate`` decides which snapshots are published (None: all of them); ``notifier`` hears of
    each published one.
    """

    def __init__(
        self,
        *,
        source: RecordSource,
        decoder: Decoder,
        state: TrainingState,
        store: SnapshotStore,
        dead_letters: DeadLetterSink,
        telemetry: Telemetry,
        clock: Clock,
        batch_size: int,
        poll_timeout_s: float,
        snapshot_schedule: EveryNStepsOrTSeconds,
        lag_schedule: EveryNStepsOrTSeconds,
        invalid_log_every_s: float,
        flush_timeout_s: float,
        max_dead_letter_backlog: int,
        on_step: Callable[[LoopProgress], None] | None = None,
        on_report: Callable[[StepReport, DecodedBatch], None] | None = None,
        gate: PublishGate | None = None,
        notifier: SnapshotNotifier | None = None,
        progress_log: ProgressLogSchedule | None = None,
        step_sizes: StepSizeController | None = None,
    ) -> None:
        self.source = source
        self.decoder = decoder
        self.state = state
        self.store = store
        self.dead_letters = dead_letters
        self.telemetry = telemetry
        self.clock = clock
        self.batch_size = batch_size
        self.poll_timeout_s = poll_timeout_s
        self.snapshot_schedule = snapshot_schedule
        self.lag_schedule = lag_schedule
        self.flush_timeout_s = flush_timeout_s
        self.max_dead_letter_backlog = max_dead_letter_backlog
        self._consuming_paused = False
        self.progress_log = progress_log or ProgressLogSchedule()
        self.step_sizes = step_sizes
        if step_sizes is not None and state.step_size is not None:  # resume at the saved size
            step_sizes.load_state_dict({"size": state.step_size})
        self.publisher = SnapshotPublisher(
            store=store, telemetry=telemetry, gate=gate, notifier=notifier
        )
        self.progress = LoopProgress(
            snapshot_version=state.snapshot_version,
            published_version=self.publisher.published_version,
        )
        self.last_heartbeat = clock.monotonic()
        self._invalid_log = _RateLimitedLog(invalid_log_every_s, clock)
        self._on_step = on_step
        self._on_report = on_report
        self._stop = Event()
        self._dirty = False
        self._parts: int | None = None  # micro-batches per learn_many a trainer group agreed on
        self._resend(state.undelivered)

    def _resend(self, rejections: Sequence[Rejection]) -> None:
        """Queue again the dead letters the restored snapshot held undelivered."""
        for rejection in rejections:
            self.dead_letters.send(rejection)
        if rejections:
            self._dirty = True  # the next snapshot flushes them and moves the commit on
            log.warning(
                "sending again %d dead letters the snapshot held undelivered", len(rejections),
                extra={"event": "dead_letters_resent", "count": len(rejections)},
            )  # fmt: skip

    def request_stop(self) -> None:
        """Finish the current batch, snapshot, commit and return (safe from a signal handler)."""
        self._stop.set()

    def run(self, stop: StopWhen | None = None) -> LoopProgress:
        """Process batches until a stop condition or :meth:`request_stop`; snapshot at the end."""
        stop = stop or StopWhen()
        started = self.clock.monotonic()
        last_record: float | None = None  # the idle clock starts at the first record
        self.progress.stopped_by = "request"
        while not self._stop.is_set():
            now = self.clock.monotonic()
            self.last_heartbeat = now
            consumed = self.progress.events_consumed
            reason = stop.reached(
                consumed=consumed, started=started, last_record=last_record, now=now
            )
            if reason is not None:
                self.progress.stopped_by = reason
                break
            asked = self._poll_size(stop)
            records = self._poll(asked)
            if records:
                self._choose_step_size(len(records), asked)
                learning = self.clock.monotonic()
                self.process(records)
                last_record = self.clock.monotonic()  # learning a batch is not idle time
                if self.step_sizes is not None:
                    self.step_sizes.learned(len(records), last_record - learning)
            self._maybe_report_lag()
            if self._snapshot_due():
                self.snapshot_and_commit()
        if self._dirty:
            self.snapshot_and_commit()
        return self.progress

    def _choose_step_size(self, polled: int, asked: int) -> None:
        """Finer gradient steps while the consumer keeps up, coarser while a backlog grows."""
        if self.step_sizes is None:
            return
        try:
            backlog: int | None = sum(self.source.lag().values())
        except Exception:  # a source that cannot say: keep the size
            backlog = None
        self.choose_step_size(polled, backlog, asked=asked, now=self.clock.monotonic())

    def choose_step_size(
        self,
        polled: int,
        backlog: int | None,
        *,
        asked: int | None = None,
        now: float | None = None,
    ) -> None:
        """Tell ``learner.micro_batch=auto``'s controller what a poll of ``asked`` found.

        ``backlog``: what is left to read (None: unknown); ``now``: when the poll returned.
        """
        if self.step_sizes is None:
            return
        size = self.step_sizes.observe(backlog, polled, asked=asked, now=now)
        self.state.step_size = size
        if size != self.progress.step_size:
            self.telemetry.step_size(size)
        self.progress.step_size = size

    def _snapshot_due(self) -> bool:
        # Not while a pruned model is being verified: a restart could not resume the verdict.
        pruning = self.state.pruning
        if pruning is not None and pruning.busy:
            return False
        return self._dirty and self.snapshot_schedule.due(self.state.steps)

    def process(self, records: Sequence[Record]) -> None:
        """Decode, dead-letter and learn one polled batch; advance the in-memory offsets."""
        self.telemetry.events_consumed(len(records))
        self.progress.events_consumed += len(records)
        batch = self.decoder.decode_many(records)
        self._dead_letter(batch.rejections)
        if len(batch) or self._parts is not None:  # a group's ranks all take the agreed steps
            self._learn(batch)
        self.state.advance(records)
        self._dirty = self._dirty or bool(records)

    def _poll(self, size: int, timeout_s: float | None = None) -> Sequence[Record]:
        """The next batch; nothing while the dead-letter backlog is full and will not drain.

        ``timeout_s``: the longest wait for a first record (None: the poll timeout).
        """
        if self.dead_letters.pending >= self.max_dead_letter_backlog and not self._drain():
            return ()
        return self.source.poll(size, self.poll_timeout_s if timeout_s is None else timeout_s)

    def _drain(self) -> bool:
        """Back-pressure: flush the full backlog; if that fails, wait one poll timeout."""
        if self._flush_dead_letters():
            if self._consuming_paused:
                log.warning("dead letters delivered: consuming again",
                            extra={"event": "consuming_resumed"})  # fmt: skip
                self._consuming_paused = False
            return True
        if not self._consuming_paused:
            log.error(
                "dead-letter backlog full (%d of %d): consuming stops until it drains",
                self.dead_letters.pending, self.max_dead_letter_backlog,
                extra={"event": "consuming_paused", "backlog": self.dead_letters.pending},
            )  # fmt: skip
            self._consuming_paused = True
            self._report_backlog()
        self._stop.wait(self.poll_timeout_s)  # a stop request ends the wait at once
        return False

    def _flush_dead_letters(self) -> bool:
        """Flush the dead-letter sink; on failure log it (the undelivered stay queued)."""
        try:
            self.dead_letters.flush(timeout_s=self.flush_timeout_s)
        except Exception as error:
            log.error(
                "dead-letter flush failed (%d waiting; snapshots keep them, commits stop at "
                "the oldest): %s", self.dead_letters.pending, error,
                extra={"event": "dead_letter_flush_failed"},
            )  # fmt: skip
            self._report_backlog()
            return False
        self._report_backlog()
        return True

    def _report_backlog(self) -> None:
        self.telemetry.dead_letter_backlog(self.dead_letters.pending, paused=self._consuming_paused)

    def snapshot_and_commit(self) -> bool:
        """Flush dead letters, save a snapshot, then commit its offsets. True on success.

        A dead-letter outage does not stop durability: the snapshot holds the learned offsets
        and the rejections still undelivered (a restart sends them again), and the offsets
        committed to the source stop at the oldest undelivered one of each partition.
        """
        if not self.state.has_model:
            return self._commit_without_model()
        self._flush_dead_letters()
        undelivered = list(self.dead_letters.undelivered())
        self.state.undelivered = undelivered
        written = self._write_snapshot()
        if written is None:
            return False
        self._dirty = bool(undelivered)  # the next snapshot moves the commit on once delivered
        self._commit(commit_offsets(self.state.offsets, undelivered))
        self._announce(*written)
        return True

    def _write_snapshot(self) -> tuple[Snapshot, PublishDecision] | None:
        """Save the state (published if the gate says so), report it; None if the save failed."""
        started = self.clock.monotonic()
        snapshot, decision = self.publisher.decide(self.state.to_snapshot(self.clock.time()))
        try:
            saved = self.store.save(snapshot, publish=decision.published)
        except OSError as error:
            log.error("snapshot failed, training goes on: %s", error)
            self.telemetry.snapshot_failed(failure_reason(error))
            self.snapshot_schedule.fired(self.state.steps)
            return None
        self.state.snapshot_version = saved.version
        self.progress.snapshot_version = saved.version
        self.telemetry.snapshot_written(saved.version, self.clock.monotonic() - started)
        manifest = saved.manifest
        self.telemetry.model_shape(manifest["parameters"], manifest["sparsity"])
        self.snapshot_schedule.fired(self.state.steps)
        log.info(
            "snapshot %d written at step %d (%s: %s)", saved.version, self.state.steps,
            "published" if decision.published else "not published", decision.reason,
            extra={"event": "snapshot_written", "version": saved.version,
                   "published": decision.published, "reason": decision.reason,
                   "offsets": _offsets_text(self.state.offsets), "step": self.state.steps,
                   "accuracy": manifest["metrics"]["prequential_accuracy"],
                   "loss": manifest["metrics"]["prequential_loss"],
                   "lr": manifest["metrics"]["learning_rate"],
                   "parameters": manifest["parameters"], "sparsity": manifest["sparsity"]},
        )  # fmt: skip
        return saved, decision

    def _announce(self, saved: Snapshot, decision: PublishDecision) -> None:
        """Tell the notifier of a published snapshot (after its offsets were committed)."""
        if self.publisher.saved(saved, decision):
            self.progress.published_version = saved.version

    def _commit_without_model(self) -> bool:
        # Only rejected records so far: offsets move on up to the oldest undelivered one (no
        # snapshot keeps them, so a restart must read them again).
        delivered = self._flush_dead_letters()
        self._commit(commit_offsets(self.state.offsets, self.dead_letters.undelivered()))
        self._dirty = not delivered
        self.snapshot_schedule.fired(self.state.steps)
        return delivered

    def _commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        try:
            self.source.commit(offsets)
        except Exception as error:
            log.warning("offset commit failed (snapshot holds them): %s", error)

    def _learn(self, batch: DecodedBatch) -> None:
        learner = self.state.learner_for(batch)
        adaptation = self.state.adaptation
        if adaptation is None:
            report, batch = self._step(learner, batch)
            self._prune(batch, report)
            return
        parts, grown = adaptation.plan(batch)  # class growth, then one part per domain
        self._adapted(grown, batch)
        for domain, planned in parts:
            self._adapted(adaptation.activate(domain), planned)
            report, part = self._step(learner, planned)
            self._adapted(adaptation.observe(report, part), part)
            self._prune(part, report)

    def _prune(self, batch: DecodedBatch, report: StepReport) -> None:
        """Judge a pruned model on the batch, or start the next pruning event when due."""
        pruning = self.state.pruning
        if pruning is None:
            return
        outcome = pruning.after_batch(batch.x, batch.y, batch.labelled, report)
        report_pruning(outcome, pruning, self.telemetry, step=self.state.steps)
        verdict = outcome.verdict
        if verdict is not None and verdict.outcome is not None:
            prunes = self.progress.prunes
            prunes[verdict.outcome] = prunes.get(verdict.outcome, 0) + 1
        if outcome.pruned is not None or verdict is not None:
            self.progress.parameters = count_parameters(pruning.learner.model)

    def _step(self, learner: OnlineLearner, batch: DecodedBatch) -> tuple[StepReport, DecodedBatch]:
        """Learn the batch; the report and the batch it describes (non-finite rows out)."""
        size = self._micro_batch()
        if size is not None:
            learner.micro_batch = size
        started = self.clock.monotonic()
        report = learner.learn_many(batch.x, batch.y, batch.labelled, parts=self._parts)
        seconds = self.clock.monotonic() - started
        if report.dropped is not None:  # dead-lettered, never seen by what follows
            batch, rejections = split_dropped(batch, report.dropped)
            self._dead_letter(rejections)
        self._report(report, batch, learner, seconds)
        if self._on_report is not None:
            self._on_report(report, batch)
        return report, batch

    def _micro_batch(self) -> int | None:
        """Events per gradient step for the next batch (None: the learner's own setting)."""
        return None if self.step_sizes is None else self.step_sizes.size

    def _adapted(self, outcome: StepOutcome, batch: DecodedBatch) -> None:
        """Report drifts and adaptations; expose the active domain when it changed."""
        progress = self.progress
        pruning = self.state.pruning
        if outcome.adaptations and pruning is not None and pruning.adapted():
            report_interrupted(pruning, self.telemetry, step=self.state.steps)
            progress.prunes["interrupted"] = progress.prunes.get("interrupted", 0) + 1
        if outcome.drifts or outcome.adaptations:
            offsets = _offsets_text(self.state.offsets)
            report_outcome(outcome, batch.records, self.telemetry, step=self.state.steps,
                           offsets=offsets)  # fmt: skip
            drifts = [drift for drift in outcome.drifts if drift.kind == "drift"]
            if drifts:
                self.publisher.drifted()
            progress.drifts += len(drifts)
            inputs = sum(drift.signal.startswith("input_") for drift in drifts)
            progress.input_drifts += inputs
            progress.concept_drifts += len(drifts) - inputs
            progress.adaptations += len(outcome.adaptations)
        adaptation = self.state.adaptation
        if adaptation is not None and adaptation.active != progress.domain:
            self.telemetry.active_domain(adaptation.active)
            progress.domain = adaptation.active

    def _report(
        self, report: StepReport, batch: DecodedBatch, learner: OnlineLearner, seconds: float
    ) -> None:
        self.state.observe(batch)
        self.publisher.observe(batch)
        telemetry = self.telemetry
        if report.skipped is not None:
            telemetry.step_skipped(report.skipped)
            log.warning("step skipped: %s", report.skipped, extra={"event": "step_skipped"})
        window = learner.window
        telemetry.step_completed(seconds, window.accuracy, window.loss)
        if window.task == "regression":
            telemetry.regression_metrics(window.mae, window.rmse, window.r2)
        telemetry.learning_rate(learner.lr_policy.lr)
        if report.n_learned:
            telemetry.events_learned(report.n_learned)
            learned = batch.timestamps[batch.labelled.numpy()]
            telemetry.event_latencies(self.clock.time() - learned)
        progress = self.progress
        progress.events_learned += report.n_learned
        progress.steps += 1
        progress.accuracy, progress.loss = window.accuracy, window.loss
        progress.mae, progress.rmse, progress.r2 = window.mae, window.rmse, window.r2
        progress.lr = learner.lr_policy.lr
        if self.progress_log.due(progress.events_learned, self.clock.monotonic()):
            self._log_progress(learner)
        if self._on_step is not None:
            self._on_step(progress)

    def _log_progress(self, learner: OnlineLearner) -> None:
        """One ``progress`` line: the window's accuracy and loss, the LR and size, at this step."""
        progress, pruning = self.progress, self.state.pruning
        model = (pruning.learner if pruning is not None else learner).model
        progress.parameters = count_parameters(model)
        extra = {
            "event": "progress", "step": self.state.steps, "accuracy": progress.accuracy,
            "loss": progress.loss, "lr": progress.lr, "events_consumed": progress.events_consumed,
            "events_learned": progress.events_learned, "parameters": progress.parameters,
        }  # fmt: skip
        if progress.mae is not None:  # regression: no accuracy, these instead
            extra |= {"mae": progress.mae, "rmse": progress.rmse, "r2": progress.r2}
        if pruning is not None:  # structured pruning shrinks layers: FLOPs tell, sparsity not
            extra["flops"] = flops_per_event(model)["dense"]
        log.info(
            "progress: step %d, %d events learned, accuracy %s", self.state.steps,
            progress.events_learned, progress.accuracy, extra=extra,
        )  # fmt: skip

    def _dead_letter(self, rejections: Sequence[Rejection]) -> None:
        for rejection in rejections:
            self.dead_letters.send(rejection)
            self.telemetry.events_invalid(rejection.reason)
            self._invalid_log.rejected(rejection)
            by_reason = self.progress.invalid_by_reason
            by_reason[rejection.reason] = by_reason.get(rejection.reason, 0) + 1
        self.progress.events_invalid += len(rejections)
        self.state.events_rejected += len(rejections)

    def _maybe_report_lag(self) -> None:
        if self.lag_schedule.due(0):
            self.telemetry.consumer_lag(self.source.lag())
            self.lag_schedule.fired(0)

    def _poll_size(self, stop: StopWhen) -> int:
        if stop.max_events is None:
            return self.batch_size
        return max(1, min(self.batch_size, stop.max_events - self.progress.events_consumed))


def failure_reason(error: OSError) -> str:
    """A metric label for a failed save: the errno name (``ENOSPC``, ``EACCES``), else the type."""
    return errno.errorcode.get(error.errno or 0, type(error).__name__)


def _offsets_text(offsets: Mapping[TopicPartition, int]) -> str:
    return ",".join(f"{tp}={offset}" for tp, offset in sorted(offsets.items()))
