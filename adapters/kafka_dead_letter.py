"""``KafkaDeadLetterSink``: rejected records go to a dead-letter topic, bytes untouched."""

from __future__ import annotations

import logging
from typing import Any

from driftd.records import Rejection
from driftd.settings import KafkaSettings

from .kafka_clients import build_producer

log = logging.getLogger(__name__)

MAX_DETAIL_BYTES = 1024
REASON_HEADER = "driftd-reason"
DETAIL_HEADER = "driftd-detail"
SOURCE_TOPIC_HEADER = "driftd-source-topic"
SOURCE_PARTITION_HEADER = "driftd-source-partition"
SOURCE_OFFSET_HEADER = "driftd-source-offset"


class DeadLetterError(RuntimeError):
    """Some rejections could not be made durable in the dead-letter topic."""


def dead_letter_headers(rejection: Rejection) -> list[tuple[str, bytes]]:
    """The headers that say why and where from a record was rejected, as UTF-8 bytes."""
    record = rejection.record
    detail = rejection.detail.encode("utf-8")[:MAX_DETAIL_BYTES]
    return [
        (REASON_HEADER, rejection.reason.encode("utf-8")),
        # Cutting at a byte limit can split a character; drop the partial one.
        (DETAIL_HEADER, detail.decode("utf-8", "ignore").encode("utf-8")),
        (SOURCE_TOPIC_HEADER, record.topic.encode("utf-8")),
        (SOURCE_PARTITION_HEADER, str(record.partition).encode("ascii")),
        (SOURCE_OFFSET_HEADER, str(record.offset).encode("ascii")),
    ]


class KafkaDeadLetterSink:
    """Produces each rejected record's original key and value, with reason headers.

    Sends are asynchronous and batched by the producer. :meth:`flush` waits for every
    acknowledgement; a rejection whose delivery failed stays pending and is sent again by the
    next flush, so a later successful flush (after which the loop commits source offsets) always
    covers it.

    Args:
        settings: Connection settings; ``settings.dead_letter_topic`` must name the topic.
        producer: An existing ``KafkaProducer`` to use (tests); built from settings otherwise.
    """

    def __init__(self, settings: KafkaSettings, *, producer: Any = None) -> None:
        if not settings.dead_letter_topic:
            raise ValueError("kafka.dead_letter_topic is empty: use InMemoryDeadLetterSink")
        self._settings = settings
        self._topic = settings.dead_letter_topic
        self._producer: Any = producer
        self._in_flight: list[tuple[Rejection, Any]] = []
        self._failed: list[Rejection] = []
        self._closed = False

    @property
    def topic(self) -> str:
        """The dead-letter topic."""
        return self._topic

    def send(self, rejection: Rejection) -> None:
        """Queue one rejection for the dead-letter topic.

        Raises:
            RuntimeError: If the sink is closed.
        """
        if self._closed:
            raise RuntimeError("KafkaDeadLetterSink is closed")
        self._in_flight.append((rejection, self._send_now(rejection)))

    def _send_now(self, rejection: Rejection) -> Any:
        if self._producer is None:
            self._producer = build_producer(self._settings, client_id=self._settings.client_id)
        record = rejection.record
        return self._producer.send(
            self._topic,
            value=record.value,
            key=record.key,
            headers=dead_letter_headers(rejection),
        )

    def flush(self, timeout_s: float) -> None:
        """Block until every queued rejection is acknowledged by the broker.

        Raises:
            DeadLetterError: If any is not acknowledged within ``timeout_s``; those stay
                pending and are sent again by the next call.
        """
        retries, self._failed = self._failed, []
        errors: list[str] = []
        for rejection in retries:
            try:
                self.send(rejection)
            except Exception as error:  # e.g. metadata unavailable while the broker is down
                self._failed.append(rejection)
                errors.append(repr(error))
        if self._producer is not None and self._in_flight:
            try:
                self._producer.flush(timeout=timeout_s)
            except Exception as error:  # KafkaTimeoutError: some futures are still pending
                errors.append(repr(error))
        in_flight, self._in_flight = self._in_flight, []
        for rejection, future in in_flight:
            if not future.succeeded():
                self._failed.append(rejection)
                if future.failed():
                    errors.append(repr(future.exception))
        if self._failed:
            # An idempotent producer can stay broken after a broker restart: start afresh.
            self._discard_producer()
            raise DeadLetterError(
                f"{len(self._failed)} rejections not acknowledged by {self._topic!r}: "
                + "; ".join(sorted(set(errors)))[:1000]
            )

    @property
    def pending(self) -> int:
        """Rejections not yet acknowledged (queued, in flight, or failed awaiting retry)."""
        return len(self._in_flight) + len(self._failed)

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush what is pending, then close the producer; safe to call twice.

        Raises:
            DeadLetterError: If pending rejections could not be flushed (the producer is
                closed anyway).
        """
        if self._closed:
            return
        try:
            if self.pending:
                self.flush(timeout_s)
        finally:
            self._closed = True
            self._discard_producer(timeout_s)

    def _discard_producer(self, timeout_s: float = 0.0) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=timeout_s)
            except Exception:
                log.warning("closing the dead-letter producer failed", exc_info=True)
