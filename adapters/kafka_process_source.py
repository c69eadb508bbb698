"""``KafkaProcessSource``: a :class:`KafkaRecordSource` running in a child process.

kafka-python decodes every record in Python, and so does the learning loop: in one process they
take turns on one core. Here the consumer runs in a child process that fetches the next batches
while the parent decodes and learns, so the second core does the consuming.

Two pipes connect them. Records flow child → parent on the data pipe (a blocked send is the
back-pressure: the child fetches at most a pipe's worth ahead). Commits, lag and readiness are
requests on the control pipe, answered by the child between polls; while the parent waits for
an answer it keeps draining the data pipe, so neither side can block the other.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
from collections import deque
from collections.abc import Mapping
from multiprocessing.connection import Connection
from typing import Any

from driftd.logs import JsonLinesFormatter, configure_logging
from driftd.records import Record, TopicPartition
from driftd.settings.root import KafkaSettings

log = logging.getLogger(__name__)

_STOP = "close"


class KafkaProcessSource:
    """The RecordSource port, consumed by a child process (uses a second core).

    Args:
        settings: Connection and group settings, as for :class:`KafkaRecordSource`.
        start_offsets: Next offset to read per partition (from the newest snapshot).
        max_records: Records per fetched batch (the loop's batch size).
        call_timeout_s: How long a commit or lag request may take.
        ready_timeout_s: How long a readiness request may take, waiting for another request
            included (then the answer is "not ready").
    """

    def __init__(
        self,
        settings: KafkaSettings,
        start_offsets: Mapping[TopicPartition, int] | None = None,
        *,
        max_records: int = 256,
        call_timeout_s: float = 30.0,
        ready_timeout_s: float = 2.0,
    ) -> None:
        context = multiprocessing.get_context("spawn")  # never fork a process with threads
        self._data, child_data = context.Pipe(duplex=False)
        self._control, child_control = context.Pipe()
        offsets = [(tp.topic, tp.partition, offset) for tp, offset in (start_offsets or {}).items()]
        self._process = context.Process(
            target=_consume,
            args=(settings.model_dump(), offsets, max_records, child_data, child_control),
            kwargs={"json_logs": _logs_as_json()},
            name="driftd-kafka-consumer",
            daemon=True,
        )
        self._process.start()
        child_data.close()
        child_control.close()
        self._pending: deque[list[Record]] = deque()
        self._lock = threading.Lock()  # one control request at a time (loop and /readyz)
        self._call_timeout_s = call_timeout_s
        self._ready_timeout_s = ready_timeout_s
        self._requests = 0  # numbers requests, so a late answer is never taken for a new one
        self._closed = False

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        """Up to ``max_records`` fetched records, waiting at most ``timeout_s`` for them."""
        if not self._pending:
            self._check_alive()
            if not self._data.poll(timeout_s):
                return []
            try:
                self._pending.append(self._receive())
            except EOFError:  # the child exited after sending everything it had
                self._process.join(5)
                raise RuntimeError(
                    f"the consumer process exited ({self._process.exitcode})"
                ) from None
        batch = self._pending.popleft()
        if len(batch) > max_records:
            self._pending.appendleft(batch[max_records:])
            batch = batch[:max_records]
        return batch

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit next offsets through the child's consumer; raises what the commit raised."""
        entries = [(tp.topic, tp.partition, offset) for tp, offset in offsets.items()]
        self._call("commit", entries)

    def lag(self) -> dict[TopicPartition, int]:
        """Per-partition lag from the child's position (it may have fetched a little ahead)."""
        entries = self._call("lag", None)
        return {TopicPartition(topic, partition): lag for topic, partition, lag in entries}

    @property
    def ready(self) -> bool:
        """Whether the child is alive and its consumer assigned (False if it cannot say)."""
        try:
            return bool(self._call("ready", None, timeout_s=self._ready_timeout_s))
        except (RuntimeError, TimeoutError):
            return False

    def close(self) -> None:
        """Stop the child (it leaves the group without committing); safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            with self._lock:
                self._control.send((0, _STOP, None))
        except (OSError, ValueError):
            pass
        self._process.join(timeout=15)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._data.close()
        self._control.close()

    def _receive(self) -> list[Record]:
        records: list[Record] = [Record(*fields) for fields in self._data.recv()]
        return records

    def _call(self, verb: str, argument: Any, *, timeout_s: float | None = None) -> Any:
        deadline = time.monotonic() + (timeout_s or self._call_timeout_s)
        # The deadline covers the wait for the lock too: while the broker is down a commit can
        # hold it for its whole timeout, and /readyz must answer "not ready", not hang.
        if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise TimeoutError(f"the consumer process is busy: {verb!r} not sent")
        try:
            self._check_alive()
            self._requests += 1
            request = self._requests
            self._control.send((request, verb, argument))
            while True:
                if self._control.poll(0.005):
                    answered, ok, result = self._control.recv()
                    if answered == request:
                        break
                    continue  # the late answer to a request that timed out earlier
                if self._data.poll(0):  # keep the child's sends flowing while we wait
                    self._pending.append(self._receive())
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the consumer process did not answer {verb!r}")
                self._check_alive()
        finally:
            self._lock.release()
        if not ok:
            raise RuntimeError(f"{verb} failed in the consumer process: {result}")
        return result

    def _check_alive(self) -> None:
        if self._closed:
            raise RuntimeError("KafkaProcessSource is closed")
        if not self._process.is_alive():
            raise RuntimeError(f"the consumer process exited ({self._process.exitcode})")


def _consume(
    settings: dict[str, Any],
    offsets: list[tuple[str, int, int]],
    max_records: int,
    data: Connection,
    control: Connection,
    json_logs: bool = False,
) -> None:
    """The child: poll into the data pipe, answer control requests between polls."""
    # Ctrl-C reaches the whole process group: the parent stops this child, in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure_logging("WARNING", json_lines=json_logs)  # the parent's format: one log stream
    start = {TopicPartition(topic, partition): offset for topic, partition, offset in offsets}
    source = _connect(KafkaSettings(**settings), start, control)
    if source is None:
        return
    try:
        while _answer(source, control):
            records = source.poll(max_records, 0.05)
            if records:
                data.send([tuple(record) for record in records])
    except (EOFError, OSError):
        pass  # the parent is gone (even kill -9): leave the group, do not consume on
    finally:
        source.close()


def _logs_as_json() -> bool:
    """Whether this process logs JSON lines (``log.json``), so its child does the same."""
    return any(isinstance(h.formatter, JsonLinesFormatter) for h in logging.getLogger().handlers)


def _connect(settings: KafkaSettings, start: dict[TopicPartition, int], control: Connection) -> Any:
    """The consumer, built once a broker answers; None if stopped (or orphaned) before.

    While no broker answers it retries with backoff (0.5 s, doubling up to 10 s) and answers
    control requests meanwhile ("not ready"), so a daemon started during an outage waits.
    """
    from kafka.errors import KafkaConnectionError, KafkaTimeoutError

    from driftd.adapters.kafka_source import KafkaRecordSource

    backoff = 0.5
    while True:
        try:
            return KafkaRecordSource(settings, start)
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
    """Answers control requests while no broker is reachable."""

    ready = False

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        raise RuntimeError("not connected to any Kafka broker")

    def lag(self) -> dict[TopicPartition, int]:
        return {}


def _answer(source: Any, control: Connection) -> bool:
    """Handle every waiting control request; False when asked to stop."""
    while control.poll(0):
        request, verb, argument = control.recv()
        if verb == _STOP:
            return False
        try:
            if verb == "commit":
                source.commit({TopicPartition(t, p): o for t, p, o in argument})
                result: Any = None
            elif verb == "lag":
                result = [(tp.topic, tp.partition, lag) for tp, lag in source.lag().items()]
            else:
                result = source.ready
            control.send((request, True, result))
        except Exception as error:
            control.send((request, False, f"{type(error).__name__}: {error}"))
    return True
