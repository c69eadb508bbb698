"""Plain values that cross the boundary between adapters and the learning core.

Adapters turn their client's record types into these frozen dataclasses; the core never sees a
Kafka or HTTP type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


@dataclass(frozen=True, slots=True, order=True)
class TopicPartition:
    """One partition of one topic."""

    topic: str
    partition: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]"


class Record(NamedTuple):
    """One raw record as read from a source, before decoding.

    Immutable like the other values here, but a NamedTuple: a source builds one per record on
    the hot path, and that costs a third of a frozen dataclass.
    """

    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None
    timestamp_ms: int | None = None

    @property
    def topic_partition(self) -> TopicPartition:
        """The partition this record came from."""
        return TopicPartition(self.topic, self.partition)


@dataclass(frozen=True, slots=True)
class Rejection:
    """A record that could not be used, and why.

    Attributes:
        record: The raw record, kept whole so a dead-letter sink loses nothing.
        reason: A short, stable label (used as a metric label value), e.g. ``not_json``.
        detail: A human-readable explanation for logs and dead-letter headers.
    """

    record: Record
    reason: str
    detail: str
