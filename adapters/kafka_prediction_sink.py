"""``KafkaPredictionSink``: prediction messages to an output topic, acknowledged on flush."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from driftd.settings import KafkaSettings

from .kafka_clients import build_producer
from .kafka_dead_letter import close_producer

log = logging.getLogger(__name__)

_Message = tuple[bytes | None, bytes]


class PredictionDeliveryError(RuntimeError):
    """Some predictions were not acknowledged by the output topic."""


class KafkaPredictionSink:
    """Produces prediction messages, batched by the producer (``linger_ms``), never one flush each.

    :meth:`flush` waits for every acknowledgement. A message whose delivery failed stays pending
    and is sent again by the next flush, so a later successful flush (after which the worker
    commits input offsets) always covers it.

    Args:
        settings: Connection and security settings.
        topic: The output topic.
        linger_ms: How long the producer waits to fill a batch.
        producer_factory: Builds the ``KafkaProducer`` (again after a failure, as an idempotent
            producer can stay broken after a broker restart); from ``settings`` by default.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        topic: str,
        *,
        linger_ms: int = 20,
        producer_factory: Callable[[], Any] | None = None,
    ) -> None:
        if not topic:
            raise ValueError("the output topic must be named")
        self._topic = topic
        self._producer_factory = producer_factory or (
            lambda: build_producer(settings, linger_ms=linger_ms)
        )
        self._producer: Any = None
        self._in_flight: list[tuple[_Message, Any]] = []
        self._failed: list[_Message] = []
        self._last_error = ""
        self._closed = False

    @property
    def topic(self) -> str:
        """The output topic."""
        return self._topic

    @property
    def pending(self) -> int:
        """Messages not yet acknowledged (in flight, or failed and awaiting a retry)."""
        return len(self._in_flight) + len(self._failed)

    def send(self, key: bytes | None, value: bytes) -> None:
        """Queue one message; once a delivery has failed, queue without trying (flush retries).

        Raises:
            RuntimeError: If the sink is closed.
        """
        if self._closed:
            raise RuntimeError("KafkaPredictionSink is closed")
        message = (key, value)
        if self._failed or not self._try_send(message):
            self._failed.append(message)

    def flush(self, timeout_s: float) -> None:
        """Block until every queued message is acknowledged.

        Raises:
            PredictionDeliveryError: If any is not acknowledged within ``timeout_s``; those stay
                pending and are sent again by the next call.
        """
        retries, self._failed = self._failed, []
        for index, message in enumerate(retries):
            if not self._try_send(message):
                self._failed.extend(retries[index:])
                break
        if self._producer is not None and self._in_flight:
            try:
                self._producer.flush(timeout=timeout_s)
            except Exception as error:  # KafkaTimeoutError: some are still unacknowledged
                self._last_error = repr(error)
        in_flight, self._in_flight = self._in_flight, []
        for message, future in in_flight:
            if future.succeeded():
                continue
            if future.failed():
                self._last_error = repr(future.exception)
            self._failed.append(message)
        if self._failed:
            self._discard_producer()
            raise PredictionDeliveryError(
                f"{len(self._failed)} predictions not acknowledged by topic {self._topic!r}: "
                f"{self._last_error}"
            )

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush what is pending, then close the producer; safe to call twice.

        Raises:
            PredictionDeliveryError: If pending messages could not be flushed (the producer is
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

    def _try_send(self, message: _Message) -> bool:
        """Hand ``message`` to the producer; False if that failed (it is not in flight then)."""
        try:
            if self._producer is None:
                self._producer = self._producer_factory()
            key, value = message
            future = self._producer.send(self._topic, value=value, key=key)
        except Exception as error:  # no broker to bootstrap from, metadata unavailable, ...
            self._last_error = repr(error)
            return False
        self._in_flight.append((message, future))
        return True

    def _discard_producer(self, timeout_s: float = 0.0) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                close_producer(producer, timeout_s)
            except Exception:
                log.warning("closing the prediction producer failed", exc_info=True)
