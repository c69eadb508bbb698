"""Kafka clients that fail to bootstrap leave nothing running behind them."""

from __future__ import annotations

import socket
import threading

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaTimeoutError

from driftd.adapters.kafka_clients import build_client


def _closed_port() -> int:
    """A loopback port nothing listens on (connections are refused at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("client_class", [KafkaConsumer, KafkaProducer])
def test_a_client_that_cannot_bootstrap_stops_its_io_thread(client_class: type) -> None:
    """kafka-python 3.0.12 leaves the I/O thread of a failed constructor running."""
    before = set(threading.enumerate())
    for _ in range(3):  # as a connect-retry loop during an outage would
        with pytest.raises(KafkaTimeoutError):
            build_client(
                client_class,
                bootstrap_servers=f"127.0.0.1:{_closed_port()}",
                bootstrap_timeout_ms=200,
            )
    left = [thread for thread in set(threading.enumerate()) - before if thread.is_alive()]
    assert left == []
