"""KafkaProcessSource with fakes: a slow child (a thread plays it) and a child with no broker."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections import deque
from collections.abc import Iterator
from multiprocessing.connection import Connection

import pytest
from kafka.errors import KafkaTimeoutError

from driftd.adapters import kafka_source
from driftd.adapters.kafka_process_source import KafkaProcessSource, _connect
from driftd.records import TopicPartition
from driftd.settings.root import KafkaSettings


class _AliveProcess:
    exitcode = None

    def __init__(self) -> None:
        self._reader, self._writer = multiprocessing.Pipe(duplex=False)
        self.sentinel = self._reader.fileno()  # never readable: the "child" never exits

    def is_alive(self) -> bool:
        return True


class _FakeChild:
    """Plays the consumer child: sends a ready status, and a commit waits for :attr:`release`
    (a broker that does not answer), or 10 s at most so a regression cannot hang the test."""

    def __init__(self, data: Connection, control: Connection) -> None:
        self.data, self.control = data, control
        self.release, self.asked = threading.Event(), threading.Event()
        self.committed: list[list[tuple[str, int, int]]] = []
        self.data.send(([], (True, [("t", 0, 0, 0)])))
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            request, verb, argument = self.control.recv()
            if verb == "close":
                return
            self.asked.set()
            self.release.wait(10)
            self.committed.append(argument)
            self.control.send((request, True, None))


@pytest.fixture
def slow_commit_source() -> Iterator[tuple[KafkaProcessSource, _FakeChild]]:
    data, child_data = multiprocessing.Pipe(duplex=False)
    control, child_control = multiprocessing.Pipe()
    source = object.__new__(KafkaProcessSource)  # no real child: the thread below answers
    source._data, source._control, source._process = data, control, _AliveProcess()  # type: ignore[assignment]
    source._pending, source._send_lock, source._requests = deque(), threading.Lock(), 0
    source._call_timeout_s, source._closed = 5.0, False
    source._ready, source._assigned, source._highwater, source._position = (
        False,
        frozenset(),
        {},
        {},
    )
    child = _FakeChild(child_data, child_control)
    yield source, child
    control.send((0, "close", None))
    child.thread.join(5)


def test_ready_is_read_without_the_pipe_while_a_slow_commit_holds_the_child(
    slow_commit_source: tuple[KafkaProcessSource, _FakeChild],
) -> None:
    source, child = slow_commit_source
    assert source.ready is False  # nothing received yet
    assert source.poll(10, 0.5) == []  # the loop's thread reads the status
    assert source.ready is True
    assert source.lag() == {TopicPartition("t", 0): 0}
    committer = threading.Thread(target=source.commit, args=({TopicPartition("t", 0): 7},))
    committer.start()  # plays the loop's thread, now waiting for the commit's answer
    assert child.asked.wait(5)  # the commit is in flight
    asked_at = time.monotonic()
    ready = source.ready  # the /readyz thread
    answered_in = time.monotonic() - asked_at
    commit_still_in_flight = committer.is_alive()
    child.release.set()
    committer.join(5)
    assert ready is True
    assert answered_in < 1.0  # never waits for the commit (which waits up to 10 s)
    assert commit_still_in_flight
    assert child.committed == [[("t", 0, 7)]]


class _FlakyBootstrap:
    """Stands in for KafkaRecordSource: the first ``failures`` constructions find no broker."""

    failures = 0
    attempts = 0

    def __init__(self, settings: object, start: object, *, share: object = None) -> None:
        type(self).attempts += 1
        if type(self).attempts <= type(self).failures:
            raise KafkaTimeoutError("Unable to bootstrap from ['127.0.0.1:9']")


@pytest.fixture
def flaky_bootstrap(monkeypatch: pytest.MonkeyPatch) -> type[_FlakyBootstrap]:
    monkeypatch.setattr(kafka_source, "KafkaRecordSource", _FlakyBootstrap)
    _FlakyBootstrap.attempts = 0
    return _FlakyBootstrap


def test_the_child_retries_its_bootstrap_failing_commits_meanwhile(
    flaky_bootstrap: type[_FlakyBootstrap],
) -> None:
    flaky_bootstrap.failures = 1
    parent, child = multiprocessing.Pipe()
    parent.send((2, "commit", [("t", 0, 5)]))
    source = _connect(KafkaSettings(), {}, child)
    assert isinstance(source, _FlakyBootstrap)
    assert flaky_bootstrap.attempts == 2
    request, ok, error = parent.recv()
    assert (request, ok) == (2, False)
    assert "not connected" in error


def test_the_child_stops_retrying_when_asked_to_close_or_orphaned(
    flaky_bootstrap: type[_FlakyBootstrap],
) -> None:
    flaky_bootstrap.failures = 10**6
    parent, child = multiprocessing.Pipe()
    parent.send((0, "close", None))
    assert _connect(KafkaSettings(), {}, child) is None
    parent.close()  # the parent is gone
    assert _connect(KafkaSettings(), {}, child) is None
    assert flaky_bootstrap.attempts == 2
