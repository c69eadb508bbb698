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

    def is_alive(self) -> bool:
        return True


class _FakeChild:
    """Answers control requests like the consumer child; a commit waits for :attr:`release`
    (a broker that does not answer), or 10 s at most so a regression cannot hang the test."""

    def __init__(self, control: Connection) -> None:
        self.control = control
        self.release = threading.Event()
        self.committed: list[list[tuple[str, int, int]]] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            request, verb, argument = self.control.recv()
            if verb == "close":
                return
            if verb == "commit":
                self.release.wait(10)
                self.committed.append(argument)
                self.control.send((request, True, None))
            else:
                self.control.send((request, True, verb == "ready"))


@pytest.fixture
def slow_commit_source() -> Iterator[tuple[KafkaProcessSource, _FakeChild]]:
    data, _child_data = multiprocessing.Pipe(duplex=False)
    control, child_control = multiprocessing.Pipe()
    source = object.__new__(KafkaProcessSource)  # no real child: the thread below answers
    source._data, source._control, source._process = data, control, _AliveProcess()  # type: ignore[assignment]
    source._pending, source._lock, source._requests = deque(), threading.Lock(), 0
    source._call_timeout_s, source._ready_timeout_s, source._closed = 5.0, 0.2, False
    child = _FakeChild(child_control)
    yield source, child
    control.send((0, "close", None))
    child.thread.join(5)


def test_ready_answers_not_ready_while_a_slow_commit_holds_the_child(
    slow_commit_source: tuple[KafkaProcessSource, _FakeChild],
) -> None:
    source, child = slow_commit_source
    assert source.ready is True  # idle: the child answers at once
    committer = threading.Thread(target=source.commit, args=({TopicPartition("t", 0): 7},))
    committer.start()
    while not source._lock.locked():  # the commit is in flight
        time.sleep(0.01)
    ready = source.ready
    commit_still_in_flight = committer.is_alive()
    child.release.set()
    committer.join(5)
    assert ready is False
    assert commit_still_in_flight  # it gave up on its own timeout, not after the commit
    assert child.committed == [[("t", 0, 7)]]
    assert source.ready is True  # and answers normally once the commit is done


class _FlakyBootstrap:
    """Stands in for KafkaRecordSource: the first ``failures`` constructions find no broker."""

    failures = 0
    attempts = 0

    def __init__(self, settings: object, start: object) -> None:
        type(self).attempts += 1
        if type(self).attempts <= type(self).failures:
            raise KafkaTimeoutError("Unable to bootstrap from ['127.0.0.1:9']")


@pytest.fixture
def flaky_bootstrap(monkeypatch: pytest.MonkeyPatch) -> type[_FlakyBootstrap]:
    monkeypatch.setattr(kafka_source, "KafkaRecordSource", _FlakyBootstrap)
    _FlakyBootstrap.attempts = 0
    return _FlakyBootstrap


def test_the_child_retries_its_bootstrap_answering_not_ready_meanwhile(
    flaky_bootstrap: type[_FlakyBootstrap],
) -> None:
    flaky_bootstrap.failures = 1
    parent, child = multiprocessing.Pipe()
    parent.send((1, "ready", None))
    parent.send((2, "commit", [("t", 0, 5)]))
    parent.send((3, "lag", None))
    source = _connect(KafkaSettings(), {}, child)
    assert isinstance(source, _FlakyBootstrap)
    assert flaky_bootstrap.attempts == 2
    assert parent.recv() == (1, True, False)
    request, ok, error = parent.recv()
    assert (request, ok) == (2, False)
    assert "not connected" in error
    assert parent.recv() == (3, True, [])


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
