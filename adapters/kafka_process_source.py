"""``KafkaProcessSource``: a :class:`KafkaRecordSource` running in a child process.

kafka-python decodes every record in Python, and so does the learning loop: in one process they
take turns on one core. Here the consumer runs in a child process that fetches the next batches
while the parent decodes and learns, so the second core does the consuming.

Two pipes connect them, and only the loop's thread (the one calling ``poll`` and ``commit``)
ever reads either. The data pipe carries ``(records, status)`` messages child → parent: each
batch comes with the child's readiness and, per assigned partition, its position and high
watermark after that batch; a status changed while no records come is sent on its own. A
blocked send is the back-pressure: the child fetches at most a pipe's worth ahead. The control
pipe carries commits (and the stop request); while the parent waits for a commit's answer it
keeps draining the data pipe, so neither side can block the other. ``ready`` and ``lag()`` read
what the loop's thread last received: no pipe I/O, safe from the health endpoint's thread and
cheap enough to follow every poll.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Mapping
from multiprocessing.connection import Connection, wait
from types import FrameType
from typing import TYPE_CHECKING, Any

from driftd.logs import JsonLinesFormatter, configure_logging
from driftd.records import PartitionShare, Record, TopicPartition
from driftd.settings.root import KafkaSettings

if TYPE_CHECKING:
    from driftd.adapters.kafka_source import KafkaRecordSource

log = logging.getLogger(__name__)

_STOP = "close"
#: ``(ready, [(topic, partition, position | None, highwater | None), ...])``: the child's view.
Status = tuple[bool, list[tuple[str, int, int | None, int | None]]]


class KafkaProcessSource:
    """The RecordSource port, consumed by a child process (uses a second core).

    ``poll``, ``commit`` and ``close`` belong to one thread (the loop's); ``ready`` and ``lag``
    may be read from any thread.

    Args:
        settings: Connection and group settings, as for :class:`KafkaRecordSource`.
        start_offsets: Next offset to read per partition (from the newest snapshot).
        max_records: Records per fetched batch (the loop's batch size).
        call_timeout_s: How long a commit may take.
        share: Read only the partitions this rank owns, as :class:`KafkaRecordSource` does
            (the child's consumer gets it).
    """

    def __init__(
        self,
        settings: KafkaSettings,
        start_offsets: Mapping[TopicPartition, int] | None = None,
        *,
        max_records: int = 256,
        call_timeout_s: float = 30.0,
        share: PartitionShare | None = None,
    ) -> None:
        context = multiprocessing.get_context("spawn")  # never fork a process with threads
        self._data, child_data = context.Pipe(duplex=False)
        self._control, child_control = context.Pipe()
        offsets = [(tp.topic, tp.partition, offset) for tp, offset in (start_offsets or {}).items()]
        self._process = context.Process(
            target=_consume,
            args=(settings.model_dump(), offsets, max_records, child_data, child_control),
            kwargs={"json_logs": _logs_as_json(), "share": share},
            name="driftd-kafka-consumer",
            daemon=True,
        )
        self._process.start()
        child_data.close()
        child_control.close()
        self._pending: deque[tuple[list[Record], Status]] = deque()
        self._send_lock = threading.Lock()  # close() may come from another thread
        self._call_timeout_s = call_timeout_s
        self._requests = 0  # numbers requests, so a late answer is never taken for a new one
        self._closed = False
        # What the loop's thread last learned from the child; read by any thread.
        self._ready = False
        self._assigned: frozenset[TopicPartition] = frozenset()
        self._highwater: dict[TopicPartition, int] = {}
        self._position: dict[TopicPartition, int] = {}  # next offset poll() hands out

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        """Up to ``max_records`` fetched records, waiting at most ``timeout_s`` for them."""
        self._check_open()
        deadline = time.monotonic() + timeout_s
        while True:
            while self._pending and not self._pending[0][0]:  # a status with no records
                self._apply_positions(self._pending.popleft()[1])
            if self._pending:
                break
            self._check_alive()
            if not self._data.poll(max(0.0, deadline - time.monotonic())):
                return []
            self._receive()
        records, status = self._pending[0]
        batch = records[:max_records]
        if len(records) > max_records:
            self._pending[0] = (records[max_records:], status)
            for record in batch:
                self._position[record.topic_partition] = record.offset + 1
        else:
            self._pending.popleft()
            self._apply_positions(status)
        return batch

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit next offsets through the child's consumer; raises what the commit raised."""
        entries = [(tp.topic, tp.partition, offset) for tp, offset in offsets.items()]
        self._call("commit", entries)

    def lag(self) -> dict[TopicPartition, int]:
        """Per assigned partition: records from what ``poll`` hands out next to the high watermark.

        Records the child fetched ahead count as lag. No I/O.
        """
        if self._closed:
            return {}
        highwater, position = self._highwater, self._position
        return {
            tp: max(0, highwater[tp] - position[tp])
            for tp in sorted(self._assigned)
            if tp in highwater and tp in position
        }

    @property
    def ready(self) -> bool:
        """Whether the child is alive and last said its consumer was ready. No pipe I/O."""
        if self._closed or not self._ready:
            return False
        return not wait([self._process.sentinel], 0)  # the sentinel is readable once it exits

    def close(self) -> None:
        """Stop the child (it leaves the group without committing); safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            with self._send_lock:
                self._control.send((0, _STOP, None))
        except (OSError, ValueError):
            pass
        # A child still waiting for a broker exits on SIGUSR1 at once (it may be blocked in a
        # bootstrap for request_timeout_ms); a connected one ignores it and stops in order.
        # Not SIGTERM: that one may reach the whole process group (systemd, timeout), and the
        # child must then wait for this request, not leave the loop's pipe mid-poll.
        with contextlib.suppress(ProcessLookupError):
            if self._process.pid is not None and self._process.is_alive():
                os.kill(self._process.pid, signal.SIGUSR1)
        self._process.join(timeout=15)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._data.close()
        self._control.close()

    def _receive(self) -> None:
        """Read one data message: queue its records, take the status it carries."""
        try:
            fields, status = self._data.recv()
        except EOFError:  # the child exited after sending everything it had
            self._process.join(5)
            raise RuntimeError(f"the consumer process exited ({self._process.exitcode})") from None
        ready, partitions = status
        for topic, partition, _, highwater in partitions:
            if highwater is not None:
                self._highwater[TopicPartition(topic, partition)] = highwater
        self._assigned = frozenset(TopicPartition(t, p) for t, p, _, _ in partitions)
        self._ready = ready
        records = [Record(*values) for values in fields]
        if records or self._pending:
            self._pending.append((records, status))
        else:  # the caller has everything sent before: the child's position is its own
            self._apply_positions(status)

    def _apply_positions(self, status: Status) -> None:
        """The caller got every record sent up to ``status``: take the child's positions."""
        for topic, partition, position, _ in status[1]:
            if position is not None:
                self._position[TopicPartition(topic, partition)] = position

    def _call(self, verb: str, argument: Any) -> Any:
        self._check_open()
        self._check_alive()
        deadline = time.monotonic() + self._call_timeout_s
        self._requests += 1
        request = self._requests
        with self._send_lock:
            self._control.send((request, verb, argument))
        while True:
            if self._control.poll(0.005):
                answered, ok, result = self._control.recv()
                if answered == request:
                    break
                continue  # the late answer to a request that timed out earlier
            if self._data.poll(0):  # keep the child's sends flowing while we wait
                self._receive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"the consumer process did not answer {verb!r}")
            self._check_alive()
        if not ok:
            raise RuntimeError(f"{verb} failed in the consumer process: {result}")
        return result

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("KafkaProcessSource is closed")

    def _check_alive(self) -> None:
        self._check_open()
        if not self._process.is_alive():
            raise RuntimeError(f"the consumer process exited ({self._process.exitcode})")


def _consume(
    settings: dict[str, Any],
    offsets: list[tuple[str, int, int]],
    max_records: int,
    data: Connection,
    control: Connection,
    json_logs: bool = False,
    share: PartitionShare | None = None,
) -> None:
    """The child: poll into the data pipe with its status, answer commits between polls."""
    # Ctrl-C reaches the whole process group: the parent stops this child, in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, _exit_while_unconnected)  # close() before a broker answered
    configure_logging("WARNING", json_lines=json_logs)  # the parent's format: one log stream
    start = {TopicPartition(topic, partition): offset for topic, partition, offset in offsets}
    source = _connect(KafkaSettings(**settings), start, control, share)
    if source is None:
        return
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # connected: the parent's stop request ends it
    sent: Status | None = None
    try:
        while _answer(source, control):
            records = source.poll(max_records, 0.05)
            status = _status(source)
            if records or status != sent:
                data.send(([tuple(record) for record in records], status))
                sent = status
    except (EOFError, OSError):
        pass  # the parent is gone (even kill -9): leave the group, do not consume on
    finally:
        source.close()


def _exit_while_unconnected(signum: int, frame: FrameType | None) -> None:
    """Closed before a broker answered: nothing to leave or commit, so exit now."""
    os._exit(0)


def _status(source: KafkaRecordSource) -> Status:
    """The source's readiness and, per assigned partition, position and high watermark."""
    progress = source.progress()
    partitions = [(tp.topic, tp.partition, *progress[tp]) for tp in sorted(progress)]
    return source.ready, partitions


def _logs_as_json() -> bool:
    """Whether this process logs JSON lines (``log.json``), so its child does the same."""
    return any(isinstance(h.formatter, JsonLinesFormatter) for h in logging.getLogger().handlers)


def _connect(
    settings: KafkaSettings,
    start: dict[TopicPartition, int],
    control: Connection,
    share: PartitionShare | None = None,
) -> Any:
    """The consumer, built once a broker answers; None if stopped (or orphaned) before.

    While no broker answers it retries with backoff (0.5 s, doubling up to 10 s) and answers
    commits meanwhile (they fail), so a daemon started during an outage waits, not ready.
    """
    from kafka.errors import KafkaConnectionError, KafkaTimeoutError

    from driftd.adapters.kafka_source import KafkaRecordSource

    backoff = 0.5
    while True:
        try:
            return KafkaRecordSource(settings, start, share=share)
        except (KafkaTimeoutError, KafkaConnectionError) as error:  # no broker answered
            log.warning("no Kafka broker reachable (%r): retrying in %.1f s", error, backoff)
        deadline = time.monotonic() + backoff
        try:
            while (left := deadline - time.monotonic()) > 0:
                if control.poll(left) and not _answer(_Unconnected(), control):
                    return None
        except (EOFError, OSError):
            return None  # the parent is gone
        backoff = min(2 * backoff, 10.0)


class _Unconnected:
    """Answers commits while no broker is reachable."""

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        raise RuntimeError("not connected to any Kafka broker")


def _answer(source: Any, control: Connection) -> bool:
    """Handle every waiting control request; False when asked to stop."""
    while control.poll(0):
        request, verb, argument = control.recv()
        if verb == _STOP:
            return False
        try:
            source.commit({TopicPartition(t, p): o for t, p, o in argument})
            control.send((request, True, None))
        except Exception as error:
            control.send((request, False, f"{type(error).__name__}: {error}"))
    return True
