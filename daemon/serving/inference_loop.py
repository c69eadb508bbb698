"""The inference loop: poll → decode → dead-letter → predict → produce → flush → commit.

Commit order (what makes a crash lose nothing): after each polled batch the prediction sink
and the dead-letter sink are flushed, and only once both acknowledged everything are the
batch's offsets committed. A crash before the commit re-reads the batch (at-least-once: its
predictions may appear twice); a clean stop or a rebalance duplicates nothing, because the
commit happens before the next poll, where a rebalance would hand partitions over. While a
delivery is failing, nothing more is read: the failed messages are retried first.

Each valid event becomes one JSON message keyed like its input record::

    {"id": ..., "prediction": 2, "probabilities": [...], "model_version": 7,
     "latency_s": 0.012, "source": {"topic": "events", "partition": 0, "offset": 41}}

``prediction`` is the class index (plus ``label`` when class names are configured) or, for
regression, the value (a list when there are several outputs; no ``probabilities`` then).
``latency_s`` is the time from the event's timestamp (its ``ts`` field, else the record's) to
the prediction, or null when the event has neither.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from threading import Event
from typing import Any

import numpy as np
import orjson

from driftd.decode import DecodedBatch
from driftd.loop_progress import StopWhen
from driftd.ports import (
    Clock,
    DeadLetterSink,
    Decoder,
    InferenceTelemetry,
    Predictions,
    PredictionSink,
    Predictor,
    RecordSource,
)
from driftd.records import Record, Rejection, TopicPartition
from driftd.triggers import EveryNStepsOrTSeconds

log = logging.getLogger("driftd.infer")


@dataclass
class InferenceProgress:
    """Counters since the worker started."""

    events_consumed: int = 0
    events_invalid: int = 0
    predictions: int = 0
    batches: int = 0
    delivery_failures: int = 0


class InferenceLoop:
    """Predicts every valid event of a record source into a prediction sink, until stopped.

    Args:
        source: Where records come from (a consumer group member).
        decoder: Turns records into feature batches (labels are not needed).
        predictor: The model, e.g. a ``HotModel``; it must be ready.
        sink: Where prediction messages go.
        dead_letters: Where rejected records go.
        telemetry: Metrics.
        clock: Time for latencies and schedules.
        batch_size: Most records per poll (and per predict call).
        poll_timeout_s: Longest wait for a first record.
        lag_schedule: When to report consumer lag.
        flush_timeout_s: Longest wait for acknowledgements per batch.
        invalid_log_every_s: At most one log line about rejected records per interval.
        id_field: The event field copied into each message's ``id``.
        labels: Class names; when given each message also carries ``label``.
    """

    def __init__(
        self,
        *,
        source: RecordSource,
        decoder: Decoder,
        predictor: Predictor,
        sink: PredictionSink,
        dead_letters: DeadLetterSink,
        telemetry: InferenceTelemetry,
        clock: Clock,
        batch_size: int,
        poll_timeout_s: float,
        lag_schedule: EveryNStepsOrTSeconds,
        flush_timeout_s: float,
        invalid_log_every_s: float,
        id_field: str = "id",
        labels: Sequence[str] = (),
    ) -> None:
        self.source, self.decoder, self.predictor = source, decoder, predictor
        self.sink, self.dead_letters, self.telemetry = sink, dead_letters, telemetry
        self.clock = clock
        self.batch_size, self.poll_timeout_s = batch_size, poll_timeout_s
        self.lag_schedule = lag_schedule
        self.id_field, self.labels = id_field, tuple(labels)
        self.flush_timeout_s = flush_timeout_s
        self.progress = InferenceProgress()
        self.last_heartbeat = clock.monotonic()
        self._stop = Event()
        self._offsets: dict[TopicPartition, int] = {}  # next offset to read, per partition
        self._latencies: list[np.ndarray] = []  # of the predictions not yet acknowledged
        self._undelivered = False
        self._failures = 0  # consecutive failed deliveries
        self._invalid_log_every_s = invalid_log_every_s
        self._invalid_logged_at = -math.inf
        self._invalid_unlogged = 0

    def request_stop(self) -> None:
        """Finish the current batch, flush and commit, then return (safe from a signal)."""
        self._stop.set()

    def run(self, stop: StopWhen | None = None) -> InferenceProgress:
        """Process batches until a stop condition or :meth:`request_stop`."""
        stop = stop or StopWhen()
        started = self.clock.monotonic()
        last_record: float | None = None  # the idle clock starts at the first record
        while not self._stop.is_set():
            now = self.last_heartbeat = self.clock.monotonic()
            consumed = self.progress.events_consumed
            if stop.reached(consumed=consumed, started=started, last_record=last_record, now=now):
                break
            if self._undelivered and not self.deliver_and_commit():
                # Back off, doubling up to 5 s; read nothing more until the output recovers.
                self._stop.wait(min(5.0, self.poll_timeout_s * 2 ** min(self._failures, 10)))
                continue
            records = self.source.poll(self._poll_size(stop), self.poll_timeout_s)
            if records:
                self.process(records)
                self.deliver_and_commit()
                last_record = self.clock.monotonic()  # predicting a batch is not idle time
            if self.lag_schedule.due(0):
                self.telemetry.consumer_lag(self.source.lag())
                self.lag_schedule.fired(0)
        if self._undelivered:
            self.deliver_and_commit()
        return self.progress

    def process(self, records: Sequence[Record]) -> None:
        """Decode, dead-letter, predict and send one polled batch (nothing is flushed yet)."""
        self.telemetry.events_consumed(len(records))
        self.progress.events_consumed += len(records)
        self.progress.batches += 1
        batch = self.decoder.decode_many(records)
        self._dead_letter(batch.rejections)
        if len(batch):
            self._predict(batch)
        newest: dict[tuple[str, int], int] = {}
        for record in records:  # hot path: plain tuples, one dict write per record
            key = (record.topic, record.partition)
            if newest.get(key, -1) < record.offset:
                newest[key] = record.offset
        for (topic, partition), offset in newest.items():
            tp = TopicPartition(topic, partition)
            self._offsets[tp] = max(self._offsets.get(tp, 0), offset + 1)  # next to read
        self._undelivered = True

    def deliver_and_commit(self) -> bool:
        """Flush predictions and dead letters, then commit; False (nothing committed) on failure."""
        try:
            self.sink.flush(self.flush_timeout_s)
            self.dead_letters.flush(self.flush_timeout_s)
        except Exception as error:
            log.error(
                "predictions not acknowledged, offsets stay uncommitted: %s", error,
                extra={"event": "delivery_failed"},
            )  # fmt: skip
            self.telemetry.delivery_failed()
            self.progress.delivery_failures += 1
            self._failures += 1
            return False
        self._failures = 0
        if self._latencies:
            latencies = np.concatenate(self._latencies)
            self.telemetry.predictions_made(latencies)
            self.progress.predictions += len(latencies)
        try:
            # Every partition's position, not just this batch's: a failed commit is covered by
            # the next one (the source skips what it already committed).
            self.source.commit(self._offsets)
        except Exception as error:
            log.warning("offset commit failed: %s", error, extra={"event": "commit_failed"})
        self._latencies, self._undelivered = [], False
        return True

    def _predict(self, batch: DecodedBatch) -> None:
        predictions = self.predictor.predict(batch.x)
        latencies = self.clock.time() - batch.timestamps
        self._latencies.append(latencies)
        for record, message in zip(
            batch.records, self._messages(batch.records, predictions, latencies), strict=True
        ):
            self.sink.send(record.key, orjson.dumps(message))

    def _messages(
        self, records: Sequence[Record], predictions: Predictions, latencies: np.ndarray
    ) -> list[dict[str, Any]]:
        version, labels = predictions.version, self.labels
        if predictions.classes is not None and predictions.probabilities is not None:
            classes = predictions.classes.tolist()
            outputs: list[dict[str, Any]] = [
                {"prediction": index, "probabilities": row}
                for index, row in zip(classes, predictions.probabilities.tolist(), strict=True)
            ]
            if labels:
                for output, index in zip(outputs, classes, strict=True):
                    output["label"] = labels[index] if index < len(labels) else None
        else:
            assert predictions.values is not None
            values = predictions.values.tolist()
            outputs = [{"prediction": row[0] if len(row) == 1 else row} for row in values]
        messages = []
        for record, output, latency in zip(records, outputs, latencies.tolist(), strict=True):
            messages.append(
                {
                    "id": _event_id(record.value, self.id_field),
                    **output,
                    "model_version": version,
                    "latency_s": round(latency, 6) if math.isfinite(latency) else None,
                    "source": {
                        "topic": record.topic,
                        "partition": record.partition,
                        "offset": record.offset,
                    },
                }
            )
        return messages

    def _dead_letter(self, rejections: Sequence[Rejection]) -> None:
        for rejection in rejections:
            self.dead_letters.send(rejection)
            self.telemetry.events_invalid(rejection.reason)
        self.progress.events_invalid += len(rejections)
        if not rejections:
            return
        now = self.clock.monotonic()
        if now - self._invalid_logged_at < self._invalid_log_every_s:
            self._invalid_unlogged += len(rejections)
            return
        first = rejections[0]
        log.warning(
            "rejected record %s[%d]@%d: %s (%s); %d more since the last report",
            first.record.topic, first.record.partition, first.record.offset, first.reason,
            first.detail, self._invalid_unlogged + len(rejections) - 1,
            extra={"event": "record_rejected", "reason": first.reason},
        )  # fmt: skip
        self._invalid_logged_at, self._invalid_unlogged = now, 0

    def _poll_size(self, stop: StopWhen) -> int:
        if stop.max_events is None:
            return self.batch_size
        return max(1, min(self.batch_size, stop.max_events - self.progress.events_consumed))


def _event_id(value: bytes | None, id_field: str) -> Any:
    """The event's id (any JSON value), or None; the record already decoded as an object."""
    try:
        event = orjson.loads(value or b"")
    except orjson.JSONDecodeError:  # e.g. NaN literals, which Python's json accepts
        try:
            event = json.loads(value or b"")
        except (ValueError, RecursionError):
            return None
    return event.get(id_field) if isinstance(event, dict) else None
