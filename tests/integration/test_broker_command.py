"""``driftd broker``: the embedded broker alone, and ``driftd run`` with the settings it prints."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from driftd.tools.streams import DriftingStream
from tests.conftest import require_tansu
from tests.integration.driftd_process import DriftdProcess, produce, scrape

pytestmark = pytest.mark.integration

EVENTS = 600


class _Broker:
    """``driftd broker`` as a subprocess, its stdout read line by line."""

    def __init__(self, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTD_")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "driftd.cli", "broker", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def until(self, last: str, timeout: float = 60.0) -> list[str]:
        """Output lines up to and including the one containing ``last``."""
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while not seen or last not in seen[-1]:
            try:
                seen.append(self.lines.get(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"no {last!r} within {timeout} s: {seen}") from None
        return seen


@pytest.fixture
def broker_command() -> Iterator[list[_Broker]]:
    started: list[_Broker] = []
    yield started
    for broker in started:
        if broker.process.poll() is None:
            broker.process.kill()
        broker.process.wait()
        broker.reader.join(timeout=5)
        assert broker.process.stdout is not None
        broker.process.stdout.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_driftd_run_with_the_printed_settings_learns_from_the_broker(
    broker_command: list[_Broker], tmp_path: Path
) -> None:
    require_tansu()
    port = _free_port()
    broker = _Broker("--port", str(port), "--topics", "clicks", "--partitions", "2")
    broker_command.append(broker)
    printed = broker.until("Ctrl-C stops it.")
    assert printed[0].startswith(f"driftd broker: Kafka-compatible (tansu) on 127.0.0.1:{port},")
    exports = dict(re.findall(r"^\s+export (DRIFTD_\w+)=(\S+)$", "\n".join(printed), re.M))
    assert exports["DRIFTD_KAFKA__BOOTSTRAP_SERVERS"] == f"127.0.0.1:{port}"
    assert exports["DRIFTD_KAFKA__TOPICS"] == "clicks"

    events = DriftingStream(n_events=EVENTS, change_every=EVENTS).events()
    produce(f"127.0.0.1:{port}", "clicks", [orjson.dumps(event) for event in events])
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTD_")}
    env |= exports | {
        "DRIFTD_METRICS__PORT": "0",
        "DRIFTD_LOG__JSON": "true",
        "DRIFTD_SNAPSHOTS__DIR": str(tmp_path / "snapshots"),
    }
    started = time.monotonic()
    daemon = DriftdProcess("run", env, tmp_path)
    try:
        metrics_port = daemon.port
        deadline = time.monotonic() + 120
        consumed = 0.0
        while consumed < EVENTS and time.monotonic() < deadline:
            consumed = scrape(metrics_port).get("driftd_events_consumed_total", 0.0)
            time.sleep(0.1)
        print(f"driftd run start to {EVENTS} events consumed: {time.monotonic() - started:.1f} s")
        assert consumed == EVENTS
        assert daemon.stop() == 0
    finally:
        daemon.close()
    learned = [e for e in daemon.logs if e.get("event") == "stopped"]
    assert learned
    assert f"{EVENTS} learned" in learned[0]["message"]

    broker.process.send_signal(signal.SIGTERM)
    assert broker.process.wait(timeout=30) == 0
    assert broker.until("stopped")[-1].startswith("driftd broker: stopped")


def test_a_taken_port_is_an_error_that_says_so(broker_command: list[_Broker]) -> None:
    require_tansu()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        broker = _Broker("--port", str(taken.getsockname()[1]))
        broker_command.append(broker)
        assert broker.process.wait(timeout=60) == 1
        assert "driftd broker: Tansu did not start" in broker.until("did not start")[-1]
