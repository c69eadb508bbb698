"""Dead-letter sinks without a broker: headers, retries, oversized values, in-memory sinks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

from driftd.adapters.kafka_dead_letter import (
    DeadLetterError,
    KafkaDeadLetterSink,
    dead_letter_headers,
)
from driftd.adapters.memory import DiscardingDeadLetterSink, InMemoryDeadLetterSink
from driftd.records import Record, Rejection
from driftd.settings.root import KafkaSettings

SETTINGS = KafkaSettings(dead_letter_topic="dead-letters")


def rejection(offset: int, value: bytes | None = b"{bad", key: bytes | None = b"k") -> Rejection:
    return Rejection(Record("events", 3, offset, value, key), "not_json", f"bad at {offset}")


@dataclass
class FakeFuture:
    exception: BaseException | None = None
    done: bool = True

    def succeeded(self) -> bool:
        return self.done and self.exception is None

    def failed(self) -> bool:
        return self.done and self.exception is not None


@dataclass
class FakeProducer:
    """Acknowledges everything unless told to fail; refuses values over ``max_value``."""

    fail_with: BaseException | None = None
    max_value: int = 1_000
    sent: list[dict[str, Any]] = field(default_factory=list)
    closed: bool = False

    def send(self, topic: str, value: Any, key: Any, headers: Any) -> FakeFuture:
        if value is not None and len(value) > self.max_value:
            raise MessageSizeTooLargeError("too large")
        self.sent.append({"topic": topic, "value": value, "key": key, "headers": dict(headers)})
        return FakeFuture(self.fail_with)

    def flush(self, timeout: float) -> None:
        pass

    def close(self, timeout: float) -> None:
        self.closed = True


class Producers:
    """A producer factory that hands out the given fakes in turn."""

    def __init__(self, *producers: FakeProducer) -> None:
        self.pending = list(producers)
        self.built: list[FakeProducer] = []

    def __call__(self) -> FakeProducer:
        self.built.append(self.pending.pop(0))
        return self.built[-1]


def test_headers_name_reason_and_source_and_cut_detail_at_a_character() -> None:
    record = Record("events", 3, 42, b"v")
    headers = dict(dead_letter_headers(Rejection(record, "not_json", "é" * 600)))
    assert headers == {
        "driftd-reason": b"not_json",
        "driftd-detail": ("é" * 512).encode(),
        "driftd-source-topic": b"events",
        "driftd-source-partition": b"3",
        "driftd-source-offset": b"42",
    }


def test_sends_original_bytes_and_flush_clears_pending() -> None:
    producers = Producers(FakeProducer())
    sink = KafkaDeadLetterSink(SETTINGS, producer_factory=producers)
    sink.send(rejection(1))
    sink.send(rejection(2, value=None, key=None))
    assert sink.pending == 2
    sink.flush(timeout_s=1)
    assert sink.pending == 0
    sent = producers.built[0].sent
    assert [(s["topic"], s["key"], s["value"]) for s in sent] == [
        ("dead-letters", b"k", b"{bad"),
        ("dead-letters", None, b""),  # kafka-python needs a key or a value
    ]
    assert sent[0]["headers"]["driftd-source-offset"] == b"1"


def test_failed_deliveries_are_retried_on_a_new_producer_by_the_next_flush() -> None:
    broken = FakeProducer(fail_with=KafkaTimeoutError("broker gone"))
    producers = Producers(broken, FakeProducer())
    sink = KafkaDeadLetterSink(SETTINGS, producer_factory=producers)
    sink.send(rejection(1))
    with pytest.raises(DeadLetterError, match="1 rejections not acknowledged"):
        sink.flush(timeout_s=1)
    assert broken.closed
    assert sink.pending == 1
    sink.send(rejection(2))  # queued behind the failure, not sent to a broken producer
    sink.flush(timeout_s=1)
    assert sink.pending == 0
    assert [s["headers"]["driftd-source-offset"] for s in producers.built[1].sent] == [b"1", b"2"]


def test_an_oversized_value_is_dropped_rather_than_blocking_every_commit() -> None:
    producers = Producers(FakeProducer(max_value=10))
    sink = KafkaDeadLetterSink(SETTINGS, producer_factory=producers)
    sink.send(rejection(7, value=b"x" * 11))
    sink.flush(timeout_s=1)
    [sent] = producers.built[0].sent
    assert sent["value"] is None
    assert sent["key"] == b"k"
    assert sent["headers"]["driftd-value-dropped"] == b"11"


def test_close_is_idempotent_and_refuses_later_sends() -> None:
    producers = Producers(FakeProducer())
    sink = KafkaDeadLetterSink(SETTINGS, producer_factory=producers)
    sink.send(rejection(1))
    sink.close()
    sink.close()
    assert producers.built[0].closed
    assert len(producers.built[0].sent) == 1
    with pytest.raises(RuntimeError, match="closed"):
        sink.send(rejection(2))


def test_an_empty_topic_is_refused() -> None:
    with pytest.raises(ValueError, match="dead_letter_topic is empty"):
        KafkaDeadLetterSink(KafkaSettings())


def test_in_memory_sinks_keep_or_count() -> None:
    kept, counted = InMemoryDeadLetterSink(), DiscardingDeadLetterSink()
    for sink in (kept, counted):
        sink.send(rejection(1))
        sink.send(rejection(2))
        sink.flush(timeout_s=0)
        sink.close()
    assert [r.record.offset for r in kept.rejections] == [1, 2]
    assert counted.discarded == 2
    with pytest.raises(RuntimeError):
        kept.send(rejection(3))


def test_undelivered_lists_failed_and_unacknowledged_rejections_with_their_bytes() -> None:
    producers = Producers(FakeProducer(fail_with=KafkaTimeoutError("down")), FakeProducer())
    sink = KafkaDeadLetterSink(SETTINGS, producer_factory=producers)
    sink.send(rejection(9, value=b"\x00raw"))
    sink.send(rejection(4))
    both = [rejection(4), rejection(9, value=b"\x00raw")]  # by offset, bytes untouched
    assert sink.undelivered() == both  # in flight, their futures failed
    with pytest.raises(DeadLetterError):
        sink.flush(timeout_s=1)
    assert sink.undelivered() == both  # failed, awaiting the retry
    sink.flush(timeout_s=1)  # the second producer delivers them
    assert sink.undelivered() == []
    assert sink.pending == 0
