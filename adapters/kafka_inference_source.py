"""``KafkaInferenceSource``: a ``KafkaRecordSource`` that resumes from committed offsets only."""

from __future__ import annotations

from collections.abc import Iterable

from kafka.structs import TopicPartition as KafkaTopicPartition

from driftd.settings.root import KafkaSettings

from .kafka_source import KafkaRecordSource


class KafkaInferenceSource(KafkaRecordSource):
    """A record source whose (re)assigned partitions start at the group's committed offset.

    Unlike :class:`KafkaRecordSource`, never at this source's own earlier position. The
    trainer's source prefers its own position: its model already holds those events. An
    inference worker holds no state, and while another worker owned the partition the committed
    offset may have moved past that position; resuming there would predict events twice.
    Workers share their partitions through the consumer group, whatever ``kafka.assignment``.
    """

    def __init__(self, settings: KafkaSettings) -> None:
        super().__init__(settings, assignment="group")

    def _take_assignment(self, assigned: Iterable[KafkaTopicPartition]) -> None:
        partitions = frozenset(assigned)
        for kafka_tp in partitions:
            self._positions.pop(kafka_tp, None)  # no seek: the consumer uses the committed offset
        super()._take_assignment(partitions)
