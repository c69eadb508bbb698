"""``KafkaPredictionSink``: prediction messages to an output topic, acknowledged on flush."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from driftd.settings.root import KafkaSettings

from .acknowledged_delivery import AcknowledgedDelivery
from .kafka_clients import build_producer

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
        self._delivery: AcknowledgedDelivery[_Message] = AcknowledgedDelivery(
            producer_factory or (lambda: build_producer(settings, linger_ms=linger_ms)),
            self._produce,
            error=PredictionDeliveryError,
            what="predictions",
            topic=topic,
        )
        self._closed = False

    @property
    def topic(self) -> str:
        """The output topic."""
        return self._topic

    @property
    def pending(self) -> int:
        """Messages not yet acknowledged (in flight, or failed and awaiting a retry)."""
        return self._delivery.pending

    def send(self, key: bytes | None, value: bytes) -> None:
        """Queue one message; once a delivery has failed, queue without trying (flush retries).

        Raises:
            RuntimeError: If the sink is closed.
        """
        if self._closed:
            raise RuntimeError("KafkaPredictionSink is closed")
        self._delivery.send((key, value))

    def flush(self, timeout_s: float) -> None:
        """Block until every queued message is acknowledged.

        Raises:
            PredictionDeliveryError: If any is not acknowledged within ``timeout_s``; those stay
                pending and are sent again by the next call.
        """
        self._delivery.flush(timeout_s)

    def close(self, timeout_s: float = 10.0) -> None:
        """Flush what is pending, then close the producer; safe to call twice.

        Raises:
            PredictionDeliveryError: If pending messages could not be flushed (the producer is
                closed anyway).
        """
        if self._closed:
            return
        self._closed = True
        self._delivery.close(timeout_s)

    def _produce(self, producer: Any, message: _Message) -> tuple[_Message, Any]:
        key, value = message
        return message, producer.send(self._topic, value=value, key=key)
