"""``KafkaRecordSource``: the :class:`driftd.ports.RecordSource` backed by a kafka-python consumer.

Position rules, in order: the offsets this source was built with (the newest snapshot's), else
the group's committed offsets, else ``auto_offset_reset``. Once this source has read from a
partition, its own position wins over the committed one when a rebalance hands the partition
back: everything before it is already in the model, so re-reading would count it twice.

Two ways to get partitions (``kafka.assignment``):

* ``manual`` (the trainer's default): this source lists every partition of its topics and
  ``assign()``s them itself, as Flink's Kafka source does; the snapshot holds the positions.
  No group join, so a restarted trainer never waits for its killed predecessor's session to
  expire. Offsets are still committed to ``group_id`` (for monitoring and as the fallback
  position). One trainer per group: two would both read everything.
* ``group``: a member of the consumer group (``subscribe()``), partitions shared among members
  and moved by rebalances (the inference workers always use this).

With a :class:`~driftd.records.PartitionShare` (one rank of a torchrun trainer group), the
assignment is manual whatever the setting says, and the source takes only the partitions its
share owns: the ranks split the partitions among themselves with no group protocol, each one
seeking its snapshot's positions and committing its own partitions to the common ``group_id``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from kafka import KafkaConsumer
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.structs import MemberState, OffsetAndMetadata
from kafka.structs import TopicPartition as KafkaTopicPartition

from driftd.adapters.kafka_clients import build_client
from driftd.records import PartitionShare, Record, TopicPartition
from driftd.settings.root import KafkaSettings

log = logging.getLogger(__name__)

#: How often a manually assigned source looks for new partitions (a missing topic: every second).
PARTITION_CHECK_S = (30.0, 1.0)
#: How long a poll may stay inside the consumer to finish a group join in flight (see poll()).
JOIN_WAIT_S = 10.0


class SourceCommitError(RuntimeError):
    """Offsets could not be committed (broker unreachable, group rebalancing, timeout)."""


class _SeekOnAssign(ConsumerRebalanceListener):  # type: ignore[misc]
    """Move newly assigned partitions to the positions the source knows; runs on the IO thread."""

    def __init__(self, source: KafkaRecordSource) -> None:
        self._source = source

    def on_partitions_revoked(self, revoked: Iterable[KafkaTopicPartition]) -> None:
        self._source._forget_assignment(revoked)

    def on_partitions_lost(self, lost: Iterable[KafkaTopicPartition]) -> None:
        self._source._forget_assignment(lost)

    def on_partitions_assigned(self, assigned: Iterable[KafkaTopicPartition]) -> None:
        self._source._take_assignment(assigned)


class KafkaRecordSource:
    """Reads records from Kafka as one member of a consumer group, committing explicitly.

    Args:
        settings: Brokers, topics, group and client tuning; ``settings.client_options()``
            carries the connection and security options.
        start_offsets: Next offset to read per partition, from the newest snapshot; these
            partitions are sought there when assigned, whatever the group has committed.
        assignment: ``manual`` or ``group`` (see the module docstring); None: the setting's.
        share: Read only the partitions this rank owns (manual assignment); start offsets of
            other partitions are ignored. None: every partition of the topics.

    Raises:
        ValueError: If ``assignment="group"`` comes with a ``share``: a group would move
            partitions between ranks behind the share's back.
        kafka.errors.KafkaTimeoutError: If no broker answers within ``request_timeout_ms``.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        start_offsets: Mapping[TopicPartition, int] | None = None,
        *,
        assignment: Literal["manual", "group"] | None = None,
        share: PartitionShare | None = None,
    ) -> None:
        if share is not None and assignment == "group":
            raise ValueError(f"a partition share ({share}) needs manual assignment, not 'group'")
        self._commit_timeout_ms = max(1, int(settings.commit_timeout_s * 1000))
        self._topics = tuple(settings.topics)
        self._share = share
        self._manual = share is not None or (assignment or settings.assignment) == "manual"
        self._next_partition_check = 0.0
        # Next offset to read per partition: start offsets, then what this source has read.
        self._positions: dict[KafkaTopicPartition, int] = {
            KafkaTopicPartition(tp.topic, tp.partition): offset
            for tp, offset in (start_offsets or {}).items()
            if share is None or share.owns(tp.topic, tp.partition)
        }
        self._committed: dict[KafkaTopicPartition, int] = {}
        self._assigned: frozenset[KafkaTopicPartition] = frozenset()
        self._listed = False  # manual: whether a partition of the topics was ever found
        self._lock = threading.Lock()
        self._closed = False
        self._consumer: Any = build_client(
            KafkaConsumer,
            **settings.client_options(),
            group_id=settings.group_id,
            enable_auto_commit=False,
            auto_offset_reset=settings.auto_offset_reset,
            session_timeout_ms=settings.session_timeout_ms,
            heartbeat_interval_ms=settings.heartbeat_interval_ms,
            max_poll_interval_ms=settings.max_poll_interval_ms,
            fetch_max_bytes=settings.fetch_max_bytes,
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
            bootstrap_timeout_ms=settings.request_timeout_ms,
        )
        if self._manual:
            self._assign_partitions()
        else:
            self._consumer.subscribe(topics=list(self._topics), listener=_SeekOnAssign(self))

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        """Return up to ``max_records`` records, in offset order within each partition.

        Waits at most ``timeout_s`` for the first record; joining the group and rebalancing
        happen inside this call.

        Raises:
            RuntimeError: If the source is closed.
        """
        if self._closed:
            raise RuntimeError("KafkaRecordSource is closed")
        if self._manual and time.monotonic() >= self._next_partition_check:
            self._assign_partitions()
        batches = self._consumer.poll(
            timeout_ms=max(0, int(timeout_s * 1000)), max_records=max_records
        )
        if not batches and not self._manual:
            batches = self._finish_join(max_records)
        if not batches:
            return []
        records: list[Record] = []
        positions = self._positions
        for kafka_tp, batch in batches.items():
            topic, partition = kafka_tp
            records += [
                Record(
                    topic,
                    partition,
                    message.offset,
                    message.value,
                    message.key,
                    message.timestamp if message.timestamp >= 0 else None,
                )
                for message in batch
            ]
            positions[kafka_tp] = batch[-1].offset + 1
        return records

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit the next offset to read per partition, synchronously and within the timeout.

        Offsets at or behind what this source already committed are skipped (a commit never
        moves backwards), as are partitions not assigned (no longer, or not in this source's
        share): their owner commits them.

        Raises:
            SourceCommitError: If the commit failed or timed out; nothing is recorded as
                committed, so the next call retries these offsets.
        """
        if self._closed:
            raise SourceCommitError("KafkaRecordSource is closed")
        assigned = self._assigned
        pending: dict[KafkaTopicPartition, Any] = {}
        for tp, offset in offsets.items():
            kafka_tp = KafkaTopicPartition(tp.topic, tp.partition)
            if kafka_tp in assigned and offset > self._committed.get(kafka_tp, -1):
                pending[kafka_tp] = OffsetAndMetadata(offset, "", -1)
        if not pending:
            return
        try:
            self._consumer.commit(pending, timeout_ms=self._commit_timeout_ms)
        except KafkaError as error:
            raise SourceCommitError(
                f"commit of {len(pending)} offsets failed: {error!r}"
            ) from error
        for kafka_tp, committed in pending.items():
            self._committed[kafka_tp] = committed.offset

    def lag(self) -> dict[TopicPartition, int]:
        """Records between the position and the high watermark, per assigned partition.

        With a share only the partitions it owns are assigned, so only those are reported.

        Cheap (no request), so it can follow every poll. The high watermark comes from the
        latest fetch response (``end_offsets()`` is wrong on the Tansu broker after
        multi-record batches); partitions not yet fetched are left out.
        """
        return {
            tp: max(0, highwater - position)
            for tp, (position, highwater) in self.progress().items()
            if position is not None and highwater is not None
        }

    def progress(self) -> dict[TopicPartition, tuple[int | None, int | None]]:
        """Per assigned partition: the next offset ``poll`` returns and the high watermark.

        Either is None while unknown (no position resolved yet, nothing fetched yet). Read from
        kafka-python's subscription state (internal, without side effects): ``position()``
        would first resolve unknown positions over the network.
        """
        if self._closed:
            return {}
        states = self._consumer._subscription.assignment
        progress: dict[TopicPartition, tuple[int | None, int | None]] = {}
        for kafka_tp in sorted(self._assigned):
            state = states.get(kafka_tp)
            position = getattr(state, "position", None)
            progress[TopicPartition(kafka_tp.topic, kafka_tp.partition)] = (
                None if position is None else position.offset,
                getattr(state, "highwater", None),
            )
        return progress

    @property
    def ready(self) -> bool:
        """Whether the consumer has partitions and a live broker.

        A group member must also be stable with a live coordinator; with manual assignment, a
        live connection is enough once the topics' partitions were found. With a share, that
        holds even when the share owns none of them (more ranks than partitions): such a rank
        is not broken, it has nothing to read until partitions are added, and the other ranks
        of its trainer group need it to take part (a rank never ready would keep a readiness
        gate or probe failing for good). Finding no partition at all (the topics are missing)
        still means not ready. Safe to call from another thread (a health endpoint): it only
        reads state.
        """
        if self._closed:
            return False
        if self._manual:
            return self._listed and self._connected()
        if not self._assigned:
            return False
        if self._consumer.group_metadata().state != MemberState.STABLE:
            return False
        # The member state stays STABLE while the broker is down; the coordinator id is cleared
        # by the IO thread within about a second of the connection failing (kafka-python
        # internal, read without side effects; assumed connected if it ever disappears).
        coordinator = getattr(self._consumer, "_coordinator", None)
        return getattr(coordinator, "coordinator_id", 0) is not None

    @property
    def assignment(self) -> frozenset[TopicPartition]:
        """The partitions currently assigned to this source."""
        return frozenset(TopicPartition(tp.topic, tp.partition) for tp in self._assigned)

    def close(self) -> None:
        """Leave the group and close connections (never auto-commits); safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._consumer.close(autocommit=False, timeout_ms=self._commit_timeout_ms)

    def _assign_partitions(self) -> None:
        """Manual assignment: take every partition of the topics (the share's, given one).

        Known positions are sought; partitions without one start at the group's committed
        offset, else at ``auto_offset_reset`` (the consumer resolves both on its first fetch).
        """
        found = set(self._assigned)
        missing = False
        share, listed_before = self._share, self._listed
        for topic in self._topics:
            partitions = self._consumer.partitions_for_topic(topic)
            missing = missing or not partitions
            self._listed = self._listed or bool(partitions)
            found.update(
                KafkaTopicPartition(topic, p)
                for p in partitions or ()
                if share is None or share.owns(topic, p)
            )
        self._next_partition_check = time.monotonic() + PARTITION_CHECK_S[int(missing)]
        if share is not None and self._listed and not listed_before and not found:
            log.warning(
                "%s owns no partition of %s yet: idle until partitions are added",
                share,
                ", ".join(self._topics),
            )
        if found == self._assigned:
            return
        self._consumer.assign(sorted(found))
        self._take_assignment(found - self._assigned)

    def _finish_join(self, max_records: int) -> Any:
        """Stay inside ``poll()`` while a group join is in flight, up to :data:`JOIN_WAIT_S`.

        kafka-python 3.0.12 drops a JoinGroup+SyncGroup result that arrives between two polls
        and sends a new JoinGroup, which restarts the rebalance for every member: a member
        busy between polls (learning or predicting a batch) kept its group rebalancing for
        minutes. It has no partitions meanwhile, so waiting here costs nothing.
        """
        coordinator = getattr(self._consumer, "_coordinator", None)
        deadline = time.monotonic() + JOIN_WAIT_S
        while time.monotonic() < deadline:
            task = getattr(coordinator, "_join_task", None)  # internal, read only
            if task is None or getattr(task, "is_done", True):
                return {}
            batches = self._consumer.poll(timeout_ms=100, max_records=max_records)
            if batches:
                return batches
        return {}

    def _connected(self) -> bool:
        """Whether the consumer holds a live broker connection (manual assignment: no group).

        kafka-python drops a connection from its table when it fails (internal, read without
        side effects; assumed connected if the table ever disappears).
        """
        connections = getattr(getattr(self._consumer, "_manager", None), "_conns", None)
        if connections is None:
            return True
        return any(getattr(conn, "connected", True) for conn in list(connections.values()))

    def _take_assignment(self, assigned: Iterable[KafkaTopicPartition]) -> None:
        """Seek each newly assigned partition whose next offset this source knows."""
        partitions = frozenset(assigned)
        with self._lock:
            self._assigned = self._assigned | partitions
        for kafka_tp in sorted(partitions):
            offset = self._positions.get(kafka_tp)
            if offset is not None:
                self._consumer.seek(kafka_tp, offset)
        log.info(
            "assigned partitions %s",
            ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(partitions)) or "none",
        )

    def _forget_assignment(self, revoked: Iterable[KafkaTopicPartition]) -> None:
        with self._lock:
            self._assigned = self._assigned - frozenset(revoked)
