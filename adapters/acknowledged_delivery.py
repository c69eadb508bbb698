"""At-least-once delivery to one Kafka topic: items stay pending until the broker acknowledges.

Shared by the dead-letter sink and the prediction sink: sends are asynchronous and batched by
the producer; :meth:`AcknowledgedDelivery.flush` waits for every acknowledgement, and an item
whose delivery failed stays pending and is sent again by the next flush, so a later successful
flush (after which the caller commits its source offsets) always covers it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from kafka.errors import KafkaTimeoutError

log = logging.getLogger(__name__)

Item = TypeVar("Item")


class AcknowledgedDelivery(Generic[Item]):
    """Items in flight until acknowledged; failed ones retried by the next flush.

    Args:
        producer_factory: Builds the ``KafkaProducer`` (again after a failure: an idempotent
            producer can stay broken after a broker restart).
        produce: Hands one item to a producer; returns the item actually sent (it may have
            been changed to fit) and the send's future. May raise; the item then waits.
        error: Raised by :meth:`flush` when some items were not acknowledged.
        what: Plural noun for messages and logs (``"rejections"``, ``"predictions"``).
        topic: The topic, for messages.
        requeue: The item to retry after its delivery failed with an exception (or None).
    """

    def __init__(
        self,
        producer_factory: Callable[[], Any],
        produce: Callable[[Any, Item], tuple[Item, Any]],
        *,
        error: type[RuntimeError],
        what: str,
        topic: str,
        requeue: Callable[[Item, BaseException | None], Item] | None = None,
    ) -> None:
        self._producer_factory = producer_factory
        self._produce = produce
        self._error = error
        self._what = what
        self._topic = topic
        self._requeue = requeue or (lambda item, _: item)
        self._producer: Any = None
        self._in_flight: list[tuple[Item, Any]] = []
        self._failed: list[Item] = []
        self._last_error = ""

    @property
    def pending(self) -> int:
        """Items not yet acknowledged (in flight, or failed and awaiting a retry)."""
        return len(self._in_flight) + len(self._failed)

    def unacknowledged(self) -> list[Item]:
        """The pending items not known to be acknowledged: failed ones, then those in flight."""
        in_flight = [item for item, future in self._in_flight if not future.succeeded()]
        return [*self._failed, *in_flight]

    def send(self, item: Item) -> None:
        """Queue one item; once a delivery has failed, queue without trying (flush retries)."""
        if self._failed or not self._try_send(item):
            self._failed.append(item)

    def flush(self, timeout_s: float) -> None:
        """Block until every pending item is acknowledged; else raise, keeping them pending."""
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
            self._failed.append(self._requeue(item, exception))
        if self._failed:
            self._discard_producer()
            raise self._error(
                f"{len(self._failed)} {self._what} not acknowledged by topic {self._topic!r}: "
                f"{self._last_error}"
            )

    def close(self, timeout_s: float) -> None:
        """Flush what is pending, then close the producer (even if the flush raised)."""
        try:
            if self.pending:
                self.flush(timeout_s)
        finally:
            self._discard_producer(timeout_s)

    def _try_send(self, item: Item) -> bool:
        """Hand ``item`` to the producer; False if that failed (it is not in flight then)."""
        try:
            if self._producer is None:
                self._producer = self._producer_factory()
            sent, future = self._produce(self._producer, item)
        except Exception as error:  # no broker to bootstrap from, metadata unavailable, ...
            self._last_error = repr(error)
            return False
        self._in_flight.append((sent, future))
        return True

    def _discard_producer(self, timeout_s: float = 0.0) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                close_producer(producer, timeout_s)
            except Exception:
                log.warning("closing the %s producer failed", self._what, exc_info=True)


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
