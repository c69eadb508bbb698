"""EmbeddedBroker's storage engine, extra environment and restart, with a fake Tansu binary."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest

from driftd.adapters.embedded_broker import BrokerStartError, EmbeddedBroker

# Prints what it was started with, says it is ready, then waits to be stopped.
FAKE_TANSU = """#!/bin/sh
echo "args: $*"
echo "endpoint: ${AWS_ENDPOINT:-none} storage-env: ${STORAGE_ENGINE:-none}"
echo "ready in 1ms"
exec sleep 60
"""


@pytest.fixture
def fake_tansu(tmp_path: Path) -> Path:
    binary = tmp_path / "tansu"
    binary.write_text(FAKE_TANSU)
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    return binary


def _wait_for_output(broker: EmbeddedBroker, lines: int = 3) -> list[str]:
    for _ in range(500):
        if len(broker.output()) >= lines:
            break
        time.sleep(0.01)
    return broker.output()


def test_storage_engine_and_env_reach_the_child(
    fake_tansu: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORAGE_ENGINE", "postgres://elsewhere")  # scrubbed, never inherited
    broker = EmbeddedBroker(
        binary=fake_tansu,
        storage_engine="s3://tansu/",
        env={"AWS_ENDPOINT": "http://127.0.0.1:9"},
    ).start()
    try:
        output = _wait_for_output(broker)
        port = broker.bootstrap_servers.rsplit(":", 1)[1]
        assert output[0] == (
            f"args: broker --listener-url tcp://127.0.0.1:{port} "
            f"--advertised-listener-url tcp://127.0.0.1:{port} --storage-engine s3://tansu/"
        )
        assert output[1] == "endpoint: http://127.0.0.1:9 storage-env: none"
    finally:
        broker.stop()


def test_default_start_passes_no_storage_engine(fake_tansu: Path) -> None:
    broker = EmbeddedBroker(binary=fake_tansu).start()
    try:
        assert "--storage-engine" not in _wait_for_output(broker)[0]
    finally:
        broker.stop()


def test_restart_after_kill_listens_on_the_same_port(fake_tansu: Path) -> None:
    broker = EmbeddedBroker(binary=fake_tansu).start()
    try:
        first, first_pid = broker.bootstrap_servers, broker.pid
        broker.kill()
        assert not broker.running
        broker.restart()
        assert broker.running
        assert broker.bootstrap_servers == first
        assert broker.pid != first_pid
    finally:
        broker.stop()


def test_restart_of_a_broker_that_never_started_is_refused(fake_tansu: Path) -> None:
    with pytest.raises(BrokerStartError, match="never started"):
        EmbeddedBroker(binary=fake_tansu).restart()
