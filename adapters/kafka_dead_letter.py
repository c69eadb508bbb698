"""``KafkaDeadLetterSink``: rejected records go to a dead-letter topic, bytes untouched."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError, RecordListTooLargeError

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
# Set (to the original value's size in bytes) when the value was too large to dead-letter.
VALUE_DROPPED_HEADER = "driftd-value-dropped"
_TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)


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


@dataclass(frozen=True, slots=True)
class _Unacknowledged:
    rejection: Rejection
    drop_value: bool = False


class KafkaDeadLetterSink:
    """Produces each rejected record's original key and value, with reason headers.

    Sends are asynchronous and batched by the producer. :meth:`flush` waits for every
    acknowledgement; a rejection whose delivery failed stays pending and is sent again by the
    next flush, so a later successful flush (after which the loop commits source offsets) always
    covers it. A value too large for the producer or broker is dropped (the key and headers
    still go, with ``driftd-value-dropped``) rather than blocking every later commit.

    Args:
        settings: Connection settings; ``settings.dead_letter_topic`` must name the topic.
        producer_factory: Builds the ``KafkaProducer`` (again after a failure, as an idempotent
            producer can stay broken after a broker restart); from ``settings`` by default.
    """

    def __init__(
        self, settings: KafkaSettings, *, producer_factory: Callable[[], Any] | None = None
    ) -> None:
        if not settings.dead_letter_topic:
            raise ValueError("kafka.dead_letter_topic is empty: use DiscardingDeadLetterSink")
        self._topic = settings.dead_letter_topic
        self._producer_factory = producer_factory or (lambda: build_producer(settings))
        self._producer: Any = None
        self._in_flight: list[tuple[_Unacknowledged, Any]] = []
        self._failed: list[_Unacknowledged] = []
        self._last_error = ""
        self._closed = False

    @property
    def topic(self) -> str:
        """The dead-letter topic."""
        return self._topic

    @property
    def pending(self) -> int:
        """Rejections not yet acknowledged (in flight, or failed and awaiting a retry)."""
        return len(self._in_flight) + len(self._failed)

    def send(self, rejection: Rejection) -> None:
        """Queue one rejection; once a delivery has failed, queue without trying (flush retries).

        Raises:
            RuntimeError: If the sink is closed.
        """
        if self._closed:
            raise RuntimeError("KafkaDeadLetterSink is closed")
        item = _Unacknowledged(rejection)
        # Once a send has failed, the producer is in trouble: leave everything to the next flush.
        if self._failed or not self._try_send(item):
            self._failed.append(item)

    def flush(self, timeout_s: float) -> None:
        """Block until every queued rejection is acknowledged by the broker.

        Raises:
            DeadLetterError: If any is not acknowledged within ``timeout_s``; those stay
                pending and are sent again by the next call.
        """
        retries, self._failed = self._failed, []
        for index, item in enumerate(retries):
            if not self._try_send(item):
                self._failed.extend(retries[index:])
                break
        if self._producer is not None and self._in_flight:
            try:
                self._producer.flush(timeout=timeout_s)
            except Exception as error:  # KafkaTimeoutError: some are still unacknowledged
                self._last_error = repr(error)
        in_flight, self._in_flight = self._in_flight, []
        for item, future in in_flight:
            if future.succeeded():
                continue
            exception = future.exception if future.failed() else None
            if exception is not None:
                self._last_error = repr(exception)
            too_large = isinstance(exception, _TOO_LARGE)
            self._failed.append(_Unacknowledged(item.rejection, item.drop_value or too_large))
        if self._failed:
            # An idempotent producer can stay broken after a broker restart: build a new one.
            self._discard_producer()
            raise DeadLetterError(
                f"{len(self._failed)} rejections not acknowledged by topic {self._topic!r}: "
                f"{self._last_error}"
            )

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

    def _try_send(self, item: _Unacknowledged) -> bool:
        """Hand ``item`` to the producer; False if that failed (it is not in flight then)."""
        try:
            future = self._produce(item)
        except _TOO_LARGE as error:
            if item.drop_value:  # even key and headers are too large: nothing more to drop
                self._last_error = repr(error)
                return False
            return self._try_send(_Unacknowledged(item.rejection, drop_value=True))
        except Exception as error:  # no broker to bootstrap from, metadata unavailable, ...
            self._last_error = repr(error)
            return False
        self._in_flight.append((item, future))
        return True

    def _produce(self, item: _Unacknowledged) -> Any:
        if self._producer is None:
            self._producer = self._producer_factory()
        record = item.rejection.record
        headers = dead_letter_headers(item.rejection)
        value = record.value
        if item.drop_value:
            headers.append((VALUE_DROPPED_HEADER, str(len(value or b"")).encode("ascii")))
            log.warning(
                "dead-lettering %s[%d]@%d without its value: too large",
                record.topic, record.partition, record.offset,
            )  # fmt: skip
            value = None
        if value is None and record.key is None:
            value = b""  # kafka-python refuses a record with neither key nor value
        return self._producer.send(self._topic, value=value, key=record.key, headers=headers)

    def _discard_producer(self, timeout_s: float = 0.0) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                close_producer(producer, timeout_s)
            except Exception:
                log.warning("closing the dead-letter producer failed", exc_info=True)


def close_producer(producer: Any, timeout_s: float) -> None:
    """Close a ``KafkaProducer``, abandoning what is still unsent after ``timeout_s``.

    kafka-python 3.0.x's ``close(timeout)`` raises its flush's ``KafkaTimeoutError`` when records
    are pending and then never stops the sender thread, leaking it and its sockets; this stops
    the sender itself (failing the pending futures) and completes the close.
    """
    try:
        producer.close(timeout=timeout_s)
        return
    except KafkaTimeoutError:
        pass
    sender = getattr(producer, "_sender", None)
    if sender is not None:
        sender.force_close()
        sender.join(5.0)
    producer.close(timeout=0)
