"""The record ports: where records come from, how they are decoded, where the rejected ones go.

Both loops use them: the training loop (:mod:`driftd.loop`) and the inference loop
(:mod:`driftd.serving.inference_loop`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from driftd.records import Record, Rejection, TopicPartition

if TYPE_CHECKING:  # annotations only: the CLI and the consumer child start without torch
    from driftd.decode import DecodedBatch


class RecordSource(Protocol):
    """Where records come from (a Kafka consumer, or an in-memory replay).

    A source starts at the offsets it was built with (the newest snapshot's), else at its own
    committed position, else at its reset policy.
    """

    def poll(self, max_records: int, timeout_s: float) -> Sequence[Record]:
        """Return up to ``max_records`` records, waiting at most ``timeout_s`` for the first."""
        ...

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Record durable progress: each offset is the *next* record to read in its partition."""
        ...

    def lag(self) -> Mapping[TopicPartition, int]:
        """Records not yet read, per assigned partition (best effort, may be empty)."""
        ...

    @property
    def ready(self) -> bool:
        """Whether the source is connected and has partitions assigned."""
        ...

    def close(self) -> None:
        """Release connections; safe to call twice."""
        ...


class Decoder(Protocol):
    """Turns raw records into a mini-batch (:class:`~driftd.decode.JsonDecoder` by default).

    A bad record is a value, not an exception: it comes back among the batch's rejections with a
    stable reason, and the loop dead-letters it.
    """

    def decode_many(self, records: Sequence[Record]) -> DecodedBatch:
        """Decode a batch; every record ends up either in the tensors or in ``rejections``."""
        ...


class DeadLetterSink(Protocol):
    """Where rejected records go, with their reason, so nothing is lost silently."""

    def send(self, rejection: Rejection) -> None:
        """Queue one rejected record; may buffer."""
        ...

    def flush(self, timeout_s: float) -> None:
        """Block until every queued rejection is durable; raise if it cannot be made so."""
        ...

    @property
    def pending(self) -> int:
        """Rejections sent but not yet known to be durable (the dead-letter backlog)."""
        ...

    def undelivered(self) -> Sequence[Rejection]:
        """The rejections not yet known to be durable, oldest first (kept in snapshots)."""
        ...

    def close(self) -> None:
        """Flush what is pending and release resources."""
        ...
