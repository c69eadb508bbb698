"""``InMemoryRecordSource``: replays a fixed list of records through the RecordSource port.

Used by the in-process benchmark, dry runs over captured data and the loop's tests. It honours
start offsets, commits and lag exactly like the Kafka sources: one contract suite
(``tests/integration/test_record_source_contract.py``) runs over all three.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping, Sequence

from driftd.records import PartitionShare, Record, TopicPartition


class InMemoryRecordSource:
    """Serves records in the order given, starting after any start or committed offsets.

    Args:
        records: The records to replay; each partition's offsets must increase.
        start_offsets: Next offset to read per partition (e.g. from a snapshot); earlier records
            of that partition are skipped. They win over ``committed``.
        committed: The group's committed next offsets, shared by the sources of one "group"
            (a new source resumes there, as a Kafka consumer does); None: a fresh, empty one.
        share: Serve, commit and report lag only for the partitions this rank owns, as the
            Kafka sources do; the other records are skipped. None: every partition.
    """

    def __init__(
        self,
        records: Iterable[Record],
        *,
        start_offsets: Mapping[TopicPartition, int] | None = None,
        committed: MutableMapping[TopicPartition, int] | None = None,
        share: PartitionShare | None = None,
    ) -> None:
        self.committed: MutableMapping[TopicPartition, int] = (
            committed if committed is not None else {}
        )
        start = {**self.committed, **(start_offsets or {})}
        self._share = share
        self._records = [
            r
            for r in records
            if r.offset >= start.get(r.topic_partition, 0)
            and (share is None or share.owns(r.topic, r.partition))
        ]
        self._position = 0
        self.commits = 0
        self._next: dict[TopicPartition, int] = {}  # next offset poll() serves, per partition
        self._ends: dict[TopicPartition, int] = {}
        for record in self._records:
            tp = record.topic_partition
            self._next.setdefault(tp, record.offset)
            self._ends[tp] = max(self._ends.get(tp, 0), record.offset + 1)
        self.closed = False

    def poll(self, max_records: int, timeout_s: float) -> Sequence[Record]:
        """The next ``max_records`` records; an empty list once all were served.

        Raises:
            RuntimeError: If the source is closed.
        """
        if self.closed:
            raise RuntimeError("InMemoryRecordSource is closed")
        batch = self._records[self._position : self._position + max_records]
        self._position += len(batch)
        served: dict[tuple[str, int], int] = {}  # plain tuples: cheap per record
        for record in batch:
            served[record.topic, record.partition] = record.offset + 1
        for (topic, partition), offset in served.items():
            self._next[TopicPartition(topic, partition)] = offset
        return batch

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Remember the committed next offsets (never backwards, never another rank's)."""
        share = self._share
        for tp, offset in offsets.items():
            if share is not None and not share.owns(tp.topic, tp.partition):
                continue
            if offset > self.committed.get(tp, -1):
                self.committed[tp] = offset
        self.commits += 1

    def lag(self) -> Mapping[TopicPartition, int]:
        """Per partition: offsets from the next one ``poll`` serves to the end of the replay."""
        if self.closed:
            return {}
        return {tp: end - self._next[tp] for tp, end in self._ends.items()}

    @property
    def ready(self) -> bool:
        """Always ready while open."""
        return not self.closed

    def close(self) -> None:
        """Mark the source closed (safe to call twice)."""
        self.closed = True
