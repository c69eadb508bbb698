"""``SnapshotNotifier`` on a Kafka topic: one JSON message per published snapshot.

The message is ``{"version", "path", "created_at", "metrics", "watermark"}`` keyed by the
version (as text), for consumers that prefer push over watching ``LATEST``. Sending is
asynchronous and best effort: a failure (broker down, topic missing, send timeout) is logged
and counted through ``on_failure``, and never raised into the training loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import orjson

from driftd.adapters.kafka_clients import build_producer
from driftd.ports import SnapshotPublished
from driftd.settings.root import KafkaSettings

log = logging.getLogger(__name__)

#: How long a send may block for metadata or buffer space: bounds the loop's worst case.
MAX_BLOCK_MS = 2_000


class KafkaSnapshotNotifier:
    """Produces a message to ``topic`` for each published snapshot.

    The producer is created on the first notification (a broker that is down at start-up does
    not stop the daemon), and re-created after a failure.

    Args:
        settings: Connection and security settings.
        topic: The notification topic.
        on_failure: Called with a short reason for each notification that was not sent.
        producer_factory: Builds the producer (tests inject one); kafka-python's by default.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        topic: str,
        *,
        on_failure: Callable[[str], None] | None = None,
        producer_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.topic = topic
        self._on_failure = on_failure or (lambda reason: None)
        self._factory = producer_factory or (
            lambda: build_producer(
                settings, max_block_ms=MAX_BLOCK_MS, bootstrap_timeout_ms=MAX_BLOCK_MS
            )
        )
        self._producer: Any = None

    def published(self, event: SnapshotPublished) -> None:
        """Send ``event`` asynchronously; failures are logged and counted, never raised."""
        try:
            if self._producer is None:
                self._producer = self._factory()
            future = self._producer.send(
                self.topic, key=str(event.version).encode(), value=orjson.dumps(event.to_dict())
            )
        except Exception as error:
            self._failed(event.version, error)
            self._discard_producer()
            return
        future.add_errback(lambda error: self._failed(event.version, error))

    def _failed(self, version: int, error: BaseException) -> None:
        log.warning(
            "could not announce snapshot %d on %s: %s", version, self.topic, error,
            extra={"event": "snapshot_notification_failed", "version": version},
        )  # fmt: skip
        self._on_failure(type(error).__name__)

    def _discard_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=1)
            except Exception as error:
                log.debug("closing the notification producer failed: %s", error)

    def close(self) -> None:
        """Flush pending notifications (bounded wait) and close the producer; idempotent."""
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            producer.flush(timeout=5)
        except Exception as error:
            log.warning("pending snapshot notifications were not sent: %s", error)
            self._on_failure(type(error).__name__)
        finally:
            producer.close(timeout=5)
