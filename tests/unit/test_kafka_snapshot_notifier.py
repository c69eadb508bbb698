"""KafkaSnapshotNotifier's failure handling, with a fake producer (the broker case is in
tests/integration/test_snapshot_notifier.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from driftd.adapters.kafka_snapshot_notifier import KafkaSnapshotNotifier
from driftd.ports import SnapshotPublished
from driftd.settings.root import KafkaSettings

EVENT = SnapshotPublished(4, "/snap/0000000004", 12.5, {"prequential_loss": 0.2}, 11.0)


class FakeFuture:
    def __init__(self) -> None:
        self.errbacks: list[Callable[[BaseException], Any]] = []

    def add_errback(self, callback: Callable[[BaseException], Any]) -> None:
        self.errbacks.append(callback)


class FakeProducer:
    def __init__(self, *, fail_send: bool = False, fail_flush: bool = False) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.futures: list[FakeFuture] = []
        self.fail_send, self.fail_flush = fail_send, fail_flush
        self.closed = 0

    def send(self, topic: str, *, key: bytes, value: bytes) -> FakeFuture:
        if self.fail_send:
            raise TimeoutError("metadata not available")
        self.sent.append((topic, key, value))
        self.futures.append(FakeFuture())
        return self.futures[-1]

    def flush(self, timeout: float) -> None:
        if self.fail_flush:
            raise TimeoutError("flush timed out")

    def close(self, timeout: float) -> None:
        self.closed += 1


def notifier(producers: list[Any], failures: list[str]) -> KafkaSnapshotNotifier:
    def factory() -> Any:
        producer = producers.pop(0)
        if isinstance(producer, BaseException):
            raise producer
        return producer

    return KafkaSnapshotNotifier(
        KafkaSettings(), "snapshots", on_failure=failures.append, producer_factory=factory
    )


def test_sends_the_event_as_json_keyed_by_version() -> None:
    producer, failures = FakeProducer(), []
    sink = notifier([producer], failures)
    sink.published(EVENT)
    sink.close()
    assert producer.sent == [("snapshots", b"4", orjson.dumps(EVENT.to_dict()))]
    assert orjson.loads(producer.sent[0][2]) == {
        "version": 4,
        "path": "/snap/0000000004",
        "created_at": 12.5,
        "metrics": {"prequential_loss": 0.2},
        "watermark": 11.0,
    }
    assert producer.closed == 1
    assert failures == []


def test_a_producer_that_cannot_be_built_is_counted_and_retried_next_time() -> None:
    producer, failures = FakeProducer(), []
    sink = notifier([ConnectionError("no broker"), producer], failures)
    sink.published(EVENT)  # must not raise
    assert failures == ["ConnectionError"]
    sink.published(EVENT)
    assert len(producer.sent) == 1
    sink.close()


def test_failed_sends_and_deliveries_are_counted(caplog: pytest.LogCaptureFixture) -> None:
    broken, healthy, failures = FakeProducer(fail_send=True), FakeProducer(), []
    sink = notifier([broken, healthy], failures)
    sink.published(EVENT)
    assert broken.closed == 1, "a producer that failed is replaced"
    sink.published(EVENT)
    healthy.futures[0].errbacks[0](RuntimeError("not delivered"))  # the async failure
    assert failures == ["TimeoutError", "RuntimeError"]
    assert "could not announce snapshot 4" in caplog.text
    sink.close()


def test_close_counts_what_could_not_be_flushed_and_is_idempotent() -> None:
    producer, failures = FakeProducer(fail_flush=True), []
    sink = notifier([producer], failures)
    sink.published(EVENT)
    sink.close()
    sink.close()
    assert failures == ["TimeoutError"]
    assert producer.closed == 1
