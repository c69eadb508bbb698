"""KafkaInferenceSource resumes a returning partition at the committed offset (fake consumer)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from kafka.structs import TopicPartition as KafkaTopicPartition

from driftd.adapters import kafka_source
from driftd.adapters.kafka_inference_source import KafkaInferenceSource
from driftd.adapters.kafka_source import KafkaRecordSource
from driftd.settings.root import KafkaSettings

PARTITION = KafkaTopicPartition("events", 0)


class FakeConsumer:
    def __init__(self, **options: Any) -> None:
        self.listener: Any = None
        self.seeks: list[tuple[KafkaTopicPartition, int]] = []

    def subscribe(self, topics: list[str], listener: Any) -> None:
        self.listener = listener

    def poll(self, timeout_ms: int, max_records: int) -> dict[KafkaTopicPartition, list[Any]]:
        messages = [
            SimpleNamespace(offset=o, value=b"{}", key=None, timestamp=-1) for o in range(5)
        ]
        return {PARTITION: messages}

    def seek(self, tp: KafkaTopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))


@pytest.mark.parametrize(
    ("source_class", "seeks"),
    [(KafkaRecordSource, [(PARTITION, 5)]), (KafkaInferenceSource, [])],
)
def test_a_partition_handed_back_resumes_at_own_position_only_for_the_trainer(
    monkeypatch: pytest.MonkeyPatch, source_class: type[KafkaRecordSource], seeks: list[Any]
) -> None:
    monkeypatch.setattr(kafka_source, "KafkaConsumer", FakeConsumer)
    source = source_class(KafkaSettings(topics=["events"], assignment="group"))
    consumer = source._consumer
    consumer.listener.on_partitions_assigned([PARTITION])
    assert len(source.poll(10, 0.1)) == 5
    consumer.listener.on_partitions_revoked([PARTITION])  # another worker owns it for a while
    consumer.listener.on_partitions_assigned([PARTITION])
    assert consumer.seeks == seeks
