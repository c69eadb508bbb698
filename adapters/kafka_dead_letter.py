"""``KafkaDeadLetterSink``: rejected records go to a dead-letter topic, bytes untouched."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kafka.errors import MessageSizeTooLargeError, RecordListTooLargeError

from driftd.records import Rejection
from driftd.settings.root import KafkaSettings

from .acknowledged_delivery import AcknowledgedDelivery
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
        self._delivery: AcknowledgedDelivery[_Unacknowledged] = AcknowledgedDelivery(
            producer_factory or (lambda: build_producer(settings)),
            self._produce,
            error=DeadLetterError,
            what="rejections",
            topic=self._topic,
            requeue=_drop_value_if_too_large,
        )
        self._closed = False

    @property
    def topic(self) -> str:
        """The dead-letter topic."""
        return self._topic

    @property
    def pending(self) -> int:
        """Rejections not yet acknowledged (in flight, or failed and awaiting a retry)."""
        return self._delivery.pending

    def undelivered(self) -> list[Rejection]:
        """The rejections not yet acknowledged, by partition and offset (a snapshot keeps them)."""
        rejections = [item.rejection for item in self._delivery.unacknowledged()]
        return sorted(
            rejections, key=lambda r: (r.record.topic, r.record.partition, r.record.offset)
        )

    def send(self, rejection: Rejection) -> None:
        """Queue one rejection; once a delivery has failed, queue without trying (flush retries).

        Raises:
            RuntimeError: If the sink is closed.
        """
        if self._closed:
            raise RuntimeError("KafkaDeadLetterSink is closed")
        self._delivery.send(_Unacknowledged(rejection))

    def flush(self, timeout_s: float) -> None:
        """Block until every queued rejection is acknowledged by the broker.

        Raises:
            DeadLetterError: If any is not acknowledged within ``timeout_s``; those stay
                pending and are sent again by the next call.
        """
        self._delivery.flush(timeout_s)

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush what is pending, then close the producer; safe to call twice.

        Raises:
            DeadLetterError: If pending rejections could not be flushed (the producer is
                closed anyway).
        """
        if self._closed:
            return
        self._closed = True
        self._delivery.close(timeout_s)

    def _produce(self, producer: Any, item: _Unacknowledged) -> tuple[_Unacknowledged, Any]:
        """Send ``item``; a value too large to send is dropped (key and headers still go)."""
        try:
            return item, self._send_record(producer, item)
        except _TOO_LARGE:
            if item.drop_value:  # even key and headers are too large: nothing more to drop
                raise
            dropped = _Unacknowledged(item.rejection, drop_value=True)
            return dropped, self._send_record(producer, dropped)

    def _send_record(self, producer: Any, item: _Unacknowledged) -> Any:
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
        return producer.send(self._topic, value=value, key=record.key, headers=headers)


def _drop_value_if_too_large(
    item: _Unacknowledged, exception: BaseException | None
) -> _Unacknowledged:
    """The retry of a failed delivery: without its value if the broker found it too large."""
    too_large = isinstance(exception, _TOO_LARGE)
    return _Unacknowledged(item.rejection, item.drop_value or too_large)
