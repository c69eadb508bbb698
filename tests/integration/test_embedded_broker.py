"""EmbeddedBroker: free ports, isolation, retry on a taken port, nothing left running."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer as ConfluentProducer
from confluent_kafka.admin import AdminClient

from driftd.adapters import embedded_broker
from driftd.adapters.embedded_broker import BrokerStartError, EmbeddedBroker

pytestmark = pytest.mark.integration


def topics_of(broker: EmbeddedBroker) -> set[str]:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    return set(admin.list_topics(timeout=5).topics)


def produce_one(broker: EmbeddedBroker, topic: str) -> None:
    producer = ConfluentProducer({"bootstrap.servers": broker.bootstrap_servers})
    errors: list[object] = []
    producer.produce(topic, b"hello", on_delivery=lambda error, _: errors.append(error))
    assert producer.flush(5) == 0
    assert errors == [None]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def processes_listening_on(port: int) -> list[int]:
    """Tansu processes whose command line names ``port`` (Linux /proc)."""
    url = f"tcp://127.0.0.1:{port}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if url in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def port_of(broker: EmbeddedBroker) -> int:
    return int(broker.bootstrap_servers.rsplit(":", 1)[1])


def test_two_brokers_side_by_side_are_isolated_and_stop_cleanly(
    start_broker: Callable[..., EmbeddedBroker],
) -> None:
    first, second = start_broker(), start_broker()
    assert first.bootstrap_servers != second.bootstrap_servers
    assert first.bootstrap_servers.startswith("127.0.0.1:")

    first.create_topics(["only-on-first"], partitions=2)
    second.create_topics(["only-on-second"])
    produce_one(first, "only-on-first")
    produce_one(second, "only-on-second")
    assert "only-on-first" in topics_of(first)
    assert "only-on-first" not in topics_of(second)
    assert "only-on-second" in topics_of(second)

    pids = [first.pid, second.pid]
    first.stop()
    second.stop()
    second.stop()  # idempotent
    assert not first.running
    assert not any(alive(pid) for pid in pids if pid is not None)
    with pytest.raises(RuntimeError, match="not running"):
        _ = first.bootstrap_servers


def test_a_taken_port_is_retried_on_another(
    broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    busy = port_of(broker)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    ports = iter([busy, free])
    monkeypatch.setattr(embedded_broker, "_free_loopback_port", lambda: next(ports))

    with EmbeddedBroker() as retried:
        assert port_of(retried) == free
        retried.create_topics(["after-retry"])
        assert "after-retry" in topics_of(retried)
    assert processes_listening_on(busy) == [broker.pid]  # the loser exited, the owner lives
    assert "after-retry" not in topics_of(broker)


def test_start_gives_up_after_bounded_attempts_and_leaves_nothing(
    broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    busy = port_of(broker)
    monkeypatch.setattr(embedded_broker, "_free_loopback_port", lambda: busy)
    doomed = EmbeddedBroker(max_attempts=2)

    with pytest.raises(BrokerStartError, match="after 2 attempts"):
        doomed.start()

    assert not doomed.running
    assert processes_listening_on(busy) == [broker.pid]


def test_a_missing_binary_is_reported() -> None:
    with pytest.raises(FileNotFoundError):
        EmbeddedBroker(binary=Path("/nonexistent/tansu")).start()
