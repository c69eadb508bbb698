"""Plain values that cross the boundary between adapters and the learning core.

Adapters turn their client's record types into these frozen dataclasses; the core never sees a
Kafka or HTTP type.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import NamedTuple


@dataclass(frozen=True, slots=True, order=True)
class TopicPartition:
    """One partition of one topic."""

    topic: str
    partition: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]"


@dataclass(frozen=True, slots=True)
class PartitionShare:
    """The partitions one rank of a trainer group reads: a disjoint, deterministic split.

    Partition ``p`` of topic ``t`` belongs to rank ``(crc32(t) + p) % world_size``. Every rank
    computes the same split on its own, with no coordination: crc32 of the UTF-8 name is the
    same in every process and on every machine, unlike Python's ``hash()``, which is salted
    per process (``PYTHONHASHSEED``). Adding partitions to a topic never moves an existing
    one to another rank, and each topic's partitions go round-robin over the ranks from an
    offset its name picks, so topics with fewer partitions than ranks do not all land on
    rank 0.

    Attributes:
        rank: This process's rank, ``0 <= rank < world_size``.
        world_size: How many ranks share the partitions.

    Raises:
        ValueError: If ``rank`` is not in ``[0, world_size)``.
    """

    rank: int
    world_size: int

    def __post_init__(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ValueError(
                f"rank must be in [0, world_size): rank={self.rank}, world_size={self.world_size}"
            )

    def owns(self, topic: str, partition: int) -> bool:
        """Whether partition ``partition`` of ``topic`` belongs to this rank."""
        return self.owner(topic, partition) == self.rank

    def owner(self, topic: str, partition: int) -> int:
        """The rank partition ``partition`` of ``topic`` belongs to."""
        return (zlib.crc32(topic.encode()) + partition) % self.world_size


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
