"""``driftd replay --topic``: a range of a Kafka topic, replayed as a recorded file would be.

Every partition of the topic is read from the range's first offset (default: the beginning) up to
its last (exclusive; default: the partition's end when the replay starts, so the replay ends)
by a kafka-python consumer with no group: partitions are assigned by hand and nothing is
committed, so the replay leaves no trace on the cluster. The records, partition by partition in
offset order, then go through :func:`driftd.tools.replay.replay_records` like a file's lines
(all held in memory first, as a file's are).

A partition's end is the high watermark of its first fetch: the Tansu broker's ListOffsets
"latest" (``end_offsets()``) is too small after multi-record batches (NOTES.md).
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer
from kafka.errors import Cancelled, KafkaError
from kafka.structs import TopicPartition as KafkaTopicPartition

from driftd.adapters.kafka_clients import build_client
from driftd.logs import configure_logging
from driftd.records import Record
from driftd.settings.root import KafkaSettings, Settings
from driftd.tools.replay import replay_records

POLL_MS = 200  #: how long one poll waits for records
MAX_RECORDS = 500  #: records per poll


@dataclass(frozen=True)
class OffsetRange:
    """The offsets to replay in every partition: ``start`` up to ``stop``, exclusive.

    Attributes:
        start: First offset; None: the partition's beginning.
        stop: Offset after the last; None: the partition's end when the replay starts.

    Raises:
        ValueError: An offset is negative, or ``stop`` is before ``start``.
    """

    start: int | None = None
    stop: int | None = None

    def __post_init__(self) -> None:
        for name, offset in (("from", self.start), ("to", self.stop)):
            if offset is not None and offset < 0:
                raise ValueError(f"--{name}-offset must not be negative, got {offset}")
        if self.start is not None and self.stop is not None and self.stop < self.start:
            raise ValueError(
                f"empty range: --to-offset {self.stop} is before --from-offset {self.start}"
            )

    def contains(self, offset: int, end: int) -> bool:
        """Whether ``offset`` is in the range of a partition whose replay stops at ``end``."""
        return (self.start or 0) <= offset < end


def read_topic_range(settings: KafkaSettings, topic: str, offsets: OffsetRange) -> list[Record]:
    """The records of ``offsets`` in each partition of ``topic``: partition 0's, then 1's, ...

    Args:
        settings: Connection and security options (``settings.client_options()``); the group
            and topics are not used.
        topic: The topic to read.
        offsets: The range, the same in every partition.

    Raises:
        ValueError: The topic does not exist.
        TimeoutError: A partition gave nothing for ``request_timeout_ms`` before its end.
        kafka.errors.KafkaError: No broker answers, or another client error.
    """
    consumer: Any = build_client(
        KafkaConsumer,
        **settings.client_options(),
        group_id=None,  # no group: nothing joined, nothing committed
        enable_auto_commit=False,
        auto_offset_reset="earliest",  # a start outside the log: its first (then filtered)
        fetch_max_bytes=settings.fetch_max_bytes,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        bootstrap_timeout_ms=settings.request_timeout_ms,
    )
    try:
        reader = _RangeReader(consumer, offsets, settings.request_timeout_ms)
        return reader.read(topic)
    finally:
        _close_quietly(consumer, settings.request_timeout_ms)


class _CancelledRefresh(logging.Filter):
    """Drops kafka-python's ERROR about a metadata refresh that closing the consumer cancelled."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        refresh = str(record.msg).startswith("Metadata refresh")
        return not (refresh and any(isinstance(arg, Cancelled) for arg in args))


def _close_quietly(consumer: Any, timeout_ms: int) -> None:
    """Close ``consumer`` (never committing) without a spurious error on the console.

    kafka-python 3.0.12 refreshes metadata about 100 ms after ``assign()``; a range read
    sooner closes with that refresh in flight, and ``kafka.cluster`` logs its cancellation
    as "Metadata refresh: failed Cancelled" at ERROR.
    """
    cluster_log, quiet = logging.getLogger("kafka.cluster"), _CancelledRefresh()
    cluster_log.addFilter(quiet)
    try:
        consumer.close(autocommit=False, timeout_ms=timeout_ms)
    finally:
        cluster_log.removeFilter(quiet)


class _RangeReader:
    """Polls the assigned partitions until each one's position reaches its end."""

    def __init__(self, consumer: Any, offsets: OffsetRange, timeout_ms: int) -> None:
        self._consumer = consumer
        self._offsets = offsets
        self._timeout_ms = timeout_ms
        self._ends: dict[KafkaTopicPartition, int] = {}
        self._read: dict[KafkaTopicPartition, list[Any]] = {}

    def read(self, topic: str) -> list[Record]:
        """Assign every partition of ``topic`` at the range's start; read them to their ends."""
        partitions = self._consumer.partitions_for_topic(topic)
        if not partitions:
            raise ValueError(f"no topic {topic!r} on the brokers")
        assigned = [KafkaTopicPartition(topic, p) for p in sorted(partitions)]
        self._consumer.assign(assigned)
        for tp in assigned:
            self._read[tp] = []
            if self._offsets.start is None:
                self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, self._offsets.start)
        self._poll_until_done(set(assigned))
        return [
            Record(tp.topic, tp.partition, message.offset, message.value, message.key,
                   message.timestamp if message.timestamp >= 0 else None)
            for tp in assigned
            for message in self._read[tp]
            if self._offsets.contains(message.offset, self._ends[tp])
        ]  # fmt: skip

    def _poll_until_done(self, pending: set[KafkaTopicPartition]) -> None:
        quiet_since = time.monotonic()
        while pending:
            batches = self._consumer.poll(timeout_ms=POLL_MS, max_records=MAX_RECORDS)
            for tp, messages in batches.items():
                self._read[tp] += messages
            still = {tp for tp in pending if not self._done(tp)}
            if batches or still != pending:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > self._timeout_ms / 1000:
                names = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(still))
                raise TimeoutError(f"nothing read from {names} in {self._timeout_ms} ms")
            pending = still

    def _done(self, tp: KafkaTopicPartition) -> bool:
        """Whether ``tp`` was read to its end (known from the first fetch's high watermark)."""
        if tp not in self._ends:
            highwater = self._consumer.highwater(tp)
            if highwater is None:
                return False
            stop = self._offsets.stop
            self._ends[tp] = highwater if stop is None else min(stop, highwater)
        end, start = self._ends[tp], self._offsets.start or 0
        return start >= end or self._consumer.position(tp, timeout_ms=self._timeout_ms) >= end


def run_topic_replay(
    settings: Settings,
    topic: str,
    offsets: tuple[int | None, int | None],
    *,
    bootstrap: str | None = None,
    report: Path | None = None,
) -> int:
    """The ``driftd replay --topic`` command: replay a range of ``topic``, print the scores.

    Args:
        settings: The daemon's settings; ``kafka`` gives the connection options.
        topic: The topic to read.
        offsets: ``(from, to)``: the range in each partition (see :class:`OffsetRange`).
        bootstrap: ``HOST:PORT`` of a broker; None: ``kafka.bootstrap_servers``.
        report: Also write the run's HTML report here.

    Returns:
        0; 1 if the topic cannot be read; 2 if the range is invalid.
    """
    try:
        offset_range = OffsetRange(*offsets)
    except ValueError as error:
        print(f"driftd replay: {error}", file=sys.stderr)
        return 2
    configure_logging("WARNING", json_lines=False)
    kafka = settings.kafka
    if bootstrap:
        kafka = kafka.model_copy(update={"bootstrap_servers": [bootstrap]})
    try:
        records = read_topic_range(kafka, topic, offset_range)
    except (KafkaError, TimeoutError, ValueError) as error:
        print(f"driftd replay: {topic}: {error}", file=sys.stderr)
        return 1
    return replay_records(settings, records, report=report)
