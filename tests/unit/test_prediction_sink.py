"""KafkaPredictionSink without a broker: batching, acknowledgements and retries."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError

from driftd.adapters.kafka_prediction_sink import KafkaPredictionSink, PredictionDeliveryError
from driftd.settings.root import KafkaSettings


@dataclass
class FakeFuture:
    exception: BaseException | None = None

    def succeeded(self) -> bool:
        return self.exception is None

    def failed(self) -> bool:
        return self.exception is not None


@dataclass
class FakeProducer:
    """Acknowledges everything unless told to fail."""

    fail_with: BaseException | None = None
    sent: list[tuple[str, Any, Any]] = field(default_factory=list)
    flushes: int = 0
    closed: bool = False

    def send(self, topic: str, value: Any, key: Any) -> FakeFuture:
        self.sent.append((topic, key, value))
        return FakeFuture(self.fail_with)

    def flush(self, timeout: float) -> None:
        self.flushes += 1

    def close(self, timeout: float) -> None:
        self.closed = True


def sink_with(*producers: FakeProducer) -> KafkaPredictionSink:
    pending = list(producers)
    return KafkaPredictionSink(
        KafkaSettings(), "predictions", producer_factory=lambda: pending.pop(0)
    )


def test_sends_are_batched_and_acknowledged_by_one_flush() -> None:
    producer = FakeProducer()
    sink = sink_with(producer)
    for index in range(5):
        sink.send(f"k{index}".encode(), b"{}")
    assert sink.pending == 5
    assert producer.flushes == 0
    sink.flush(1.0)
    assert (sink.pending, producer.flushes) == (0, 1)
    assert [key for _, key, _ in producer.sent] == [b"k0", b"k1", b"k2", b"k3", b"k4"]
    assert {topic for topic, _, _ in producer.sent} == {"predictions"}
    sink.close()
    assert producer.closed


def test_unacknowledged_messages_are_sent_again_by_the_next_flush_on_a_new_producer() -> None:
    broken, fresh = FakeProducer(fail_with=KafkaTimeoutError("no broker")), FakeProducer()
    sink = sink_with(broken, fresh)
    sink.send(b"a", b"1")
    sink.send(b"b", b"2")
    with pytest.raises(PredictionDeliveryError, match="2 predictions not acknowledged"):
        sink.flush(1.0)
    assert broken.closed
    assert sink.pending == 2
    sink.send(b"c", b"3")
    sink.flush(1.0)
    assert [key for _, key, _ in fresh.sent] == [b"a", b"b", b"c"]
    assert sink.pending == 0


def test_a_closed_sink_refuses_sends() -> None:
    sink = sink_with(FakeProducer())
    sink.close()
    with pytest.raises(RuntimeError, match="closed"):
        sink.send(None, b"{}")
