"""``InMemoryRecordSource``: replays a fixed list of records through the RecordSource port.

Used by the in-process benchmark, dry runs over captured data and the loop's tests. It honours
start offsets and commits exactly like the Kafka source, so the same contract tests run on both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from driftd.records import Record, TopicPartition


class InMemoryRecordSource:
    """Serves records in the order given, starting after any ``start_offsets``.

    Args:
        records: The records to replay; each partition's offsets must increase.
        start_offsets: Next offset to read per partition (e.g. from a snapshot); earlier records
            of that partition are skipped.
    """

    def __init__(
        self,
        records: Iterable[Record],
        *,
        start_offsets: Mapping[TopicPartition, int] | None = None,
    ) -> None:
        start = dict(start_offsets or {})
        self._records = [r for r in records if r.offset >= start.get(r.topic_partition, 0)]
        self._position = 0
        self._served: dict[TopicPartition, int] = {}  # next offset per partition, for lag()
        self.committed: dict[TopicPartition, int] = {}
        self.commits = 0
        self._ends: dict[TopicPartition, int] = {}
        for record in self._records:
            tp = record.topic_partition
            self._ends[tp] = max(self._ends.get(tp, 0), record.offset + 1)
        self.closed = False

    def poll(self, max_records: int, timeout_s: float) -> Sequence[Record]:
        """The next ``max_records`` records; an empty list once all were served."""
        batch = self._records[self._position : self._position + max_records]
        self._position += len(batch)
        for record in batch:
            self._served[record.topic_partition] = record.offset + 1
        return batch

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Remember the committed next offsets (never moving one backwards)."""
        for tp, offset in offsets.items():
            if offset > self.committed.get(tp, -1):
                self.committed[tp] = offset
        self.commits += 1

    def lag(self) -> Mapping[TopicPartition, int]:
        """Records of each partition not yet served."""
        served = self._served
        return {tp: end - served.get(tp, 0) for tp, end in self._ends.items()}

    @property
    def ready(self) -> bool:
        """Always ready while open."""
        return not self.closed

    def close(self) -> None:
        """Mark the source closed."""
        self.closed = True
