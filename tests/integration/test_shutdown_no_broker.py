"""Stopping ``driftd run`` while no broker answers: at once, exit 0, no orphaned child.

Also what it shows meanwhile: ``/healthz`` and ``/readyz`` answer before any broker does, and
the Kafka client's errors come as driftd's own summarised line, not a few lines a second.
"""

from __future__ import annotations

import os
import signal
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.integration.driftd_process import DriftdProcess, driftd_env

pytestmark = pytest.mark.integration


def _unused_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _status(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _children(pid: int) -> set[int]:
    """The direct children of ``pid`` (Linux /proc)."""
    children: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        children |= {int(c) for c in (task / "children").read_text().split()}
    return children


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper does not)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return fields[0] not in ("Z", "X")


def _start_waiting(
    tmp_path: Path, consumer_process: bool, *, new_session: bool = False, looping: bool = False
) -> DriftdProcess:
    """``driftd run`` against a port nothing listens on, once it is waiting for a broker.

    ``looping``: also wait until the training loop runs (the consumer child waits meanwhile).
    """
    env = driftd_env(
        f"127.0.0.1:{_unused_port()}",
        DRIFTD_KAFKA__CONSUMER_PROCESS=str(consumer_process).lower(),
        DRIFTD_MODEL__N_CLASSES="3",
        DRIFTD_SNAPSHOTS__DIR=str(tmp_path / "snapshots"),
        DRIFTD_LOG__LEVEL="DEBUG",  # driftd's own loggers only: for the warmed_up line
    )
    daemon = DriftdProcess("run", env, tmp_path, new_session=new_session)
    # The client's first connection error, as driftd's own line (the wait has begun).
    daemon.wait_for_log("kafka_client_errors", timeout=120)
    if looping:  # the loop exists once the trainer is warmed up
        daemon.wait_for_log("warmed_up", timeout=120)
    return daemon


def _wait_gone(pids: set[int], timeout: float = 15.0) -> set[int]:
    deadline = time.monotonic() + timeout
    while (left := {pid for pid in pids if _alive(pid)}) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


@pytest.mark.parametrize("consumer_process", [True, False], ids=["child-consumer", "in-process"])
def test_sigterm_while_no_broker_answers_exits_0_at_once_and_leaves_no_child(
    consumer_process: bool, tmp_path: Path
) -> None:
    # In a child the consumer waits while the loop runs; in process, before the loop exists.
    daemon = _start_waiting(tmp_path, consumer_process, looping=consumer_process)
    try:
        port = daemon.port
        assert _status(port, "/healthz")[0] == 200
        assert _status(port, "/readyz")[0] == 503
        children = _children(daemon.process.pid)
        assert len(children) >= (1 if consumer_process else 0)
        signalled = time.monotonic()
        daemon.process.send_signal(signal.SIGTERM)
        status = daemon.process.wait(timeout=15)
        print(f"SIGTERM to exit, no broker, consumer_process={consumer_process}: "
              f"{time.monotonic() - signalled:.2f} s")  # fmt: skip
        assert status == 0, daemon.logs[-5:]
        assert _wait_gone(children) == set()
    finally:
        daemon.close()
    assert [e for e in daemon.logs if e.get("event") == "stopped"]
    # kafka-python's own lines never reach the log: driftd's summary stands for them.
    assert [e for e in daemon.logs if str(e.get("logger", "")).startswith("kafka")] == []
    assert all("raw" not in entry for entry in daemon.logs), daemon.logs[-5:]


def test_a_second_sigint_exits_at_once_and_kills_the_consumer_process(tmp_path: Path) -> None:
    daemon = _start_waiting(tmp_path, consumer_process=True)
    try:
        children = _children(daemon.process.pid)
        assert children
        daemon.process.send_signal(signal.SIGINT)
        daemon.process.send_signal(signal.SIGINT)
        status = daemon.process.wait(timeout=15)
        assert status in (0, 130), daemon.logs[-5:]  # 0: the first stop was done already
        assert _wait_gone(children) == set()
    finally:
        daemon.close()


def test_sigterm_to_the_whole_process_group_exits_0_without_a_traceback(tmp_path: Path) -> None:
    # systemd (KillMode=control-group) and `timeout` signal every process of the group: the
    # consumer child must leave the stop to its parent, not vanish under the loop's poll.
    daemon = _start_waiting(tmp_path, consumer_process=True, new_session=True)
    try:
        children = _children(daemon.process.pid)
        assert children
        os.killpg(daemon.process.pid, signal.SIGTERM)
        status = daemon.process.wait(timeout=15)
        assert status == 0, daemon.logs[-5:]
        assert _wait_gone(children) == set()
    finally:
        daemon.close()
    assert all("raw" not in entry for entry in daemon.logs), daemon.logs[-5:]  # no traceback
    assert [e for e in daemon.logs if e.get("event") == "stopped"]
