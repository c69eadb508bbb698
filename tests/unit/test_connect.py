"""Creating a broker client that fails at first: retried with doubling waits, stoppable."""

from __future__ import annotations

import threading

import pytest

from driftd import connect
from driftd.connect import connect_with_backoff


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connect, "BACKOFF_S", (0.001, 0.004))


def test_retries_until_the_client_can_be_created(caplog: pytest.LogCaptureFixture) -> None:
    attempts: list[int] = []

    def make() -> str:
        attempts.append(len(attempts))
        if len(attempts) < 4:
            raise TimeoutError("no broker answers")
        return "client"

    beats: list[None] = []
    assert connect_with_backoff(make, "source", on_attempt=lambda: beats.append(None)) == "client"
    assert len(attempts) == 4
    assert len(beats) == 4
    retries = [r for r in caplog.records if getattr(r, "event", None) == "connect_retry"]
    assert [r.client for r in retries] == ["source"] * 3  # type: ignore[attr-defined]
    waits = [float(r.args[2]) for r in retries]  # type: ignore[index]
    assert waits == [0.001, 0.002, 0.004]  # doubling, capped


def test_a_stop_ends_the_retries_with_none() -> None:
    stop = threading.Event()

    def make() -> str:
        stop.set()  # e.g. SIGTERM arrives during the outage
        raise TimeoutError("no broker answers")

    assert connect_with_backoff(make, "prediction sink", stop=stop) is None


def test_a_stop_does_not_wait_for_a_blocked_attempt_and_the_late_client_is_closed() -> None:
    stop, release, closed = threading.Event(), threading.Event(), threading.Event()
    created: list[str] = []

    def make() -> str:  # blocks like a bootstrap against a broker that does not answer
        release.wait(30)
        created.append("client")
        return "client"

    threading.Timer(0.2, stop.set).start()  # e.g. SIGTERM while the attempt is blocked
    client = connect_with_backoff(
        make, "source", stop=stop, close=lambda client: closed.set() if client else None
    )
    assert client is None
    assert not release.is_set()  # returned while the attempt still blocked
    assert created == []
    release.set()  # the attempt completes after all: its client is closed, not leaked
    assert closed.wait(10)
    assert created == ["client"]


def test_with_a_stop_event_errors_are_still_retried_and_a_client_returned() -> None:
    attempts: list[int] = []

    def make() -> str:
        attempts.append(len(attempts))
        if len(attempts) < 3:
            raise TimeoutError("no broker answers")
        return "client"

    assert connect_with_backoff(make, "source", stop=threading.Event()) == "client"
    assert len(attempts) == 3
