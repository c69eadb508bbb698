"""Running `driftd` as a subprocess against the test broker, and reading what it exposes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka import TopicPartition as ConfluentTopicPartition
from prometheus_client.parser import text_string_to_metric_families


class DriftdProcess:
    """A `driftd` subprocess whose JSON log lines are collected as they come.

    ``argv`` replaces the `python -m driftd.cli COMMAND` command line (e.g. a launcher's).
    """

    def __init__(
        self,
        command: str,
        env: Mapping[str, str],
        cwd: Path,
        *,
        new_session: bool = False,
        argv: Sequence[str] | None = None,
    ) -> None:
        self.process = subprocess.Popen(
            list(argv) if argv is not None else [sys.executable, "-m", "driftd.cli", command],
            cwd=cwd,
            env=dict(env),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=new_session,  # its own process group, for os.killpg
        )
        self.logs: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()

    def _collect(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            try:
                entry = json.loads(line)
            except ValueError:
                entry = None
            self.logs.append(
                entry if isinstance(entry, dict) else {"raw": line.decode(errors="replace")}
            )

    def wait_for_log(self, event: str, timeout: float = 60.0) -> dict[str, Any]:
        """The first log entry with ``event``; fails if the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for entry in list(self.logs):
                if entry.get("event") == event:
                    return entry
            assert self.process.poll() is None, f"driftd exited: {self.logs[-5:]}"
            time.sleep(0.05)
        raise AssertionError(f"no {event!r} log within {timeout} s: {self.logs[-5:]}")

    @property
    def port(self) -> int:
        """The metrics port it bound (the tests ask for port 0)."""
        return int(self.wait_for_log("metrics_listening")["port"])

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then the exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def close(self) -> None:
        """Kill if still running, drain the log reader and release the pipe (idempotent)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._reader.join(timeout=5)
        assert self.process.stderr is not None
        if not self.process.stderr.closed:
            self.process.stderr.close()


def driftd_env(bootstrap: str, **overrides: str) -> dict[str, str]:
    """This environment without DRIFTD_* plus test settings for the embedded broker."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTD_")}
    env.update(
        DRIFTD_KAFKA__BOOTSTRAP_SERVERS=bootstrap,
        DRIFTD_KAFKA__SESSION_TIMEOUT_MS="3000",  # group joins wait half of it (NOTES.md)
        DRIFTD_KAFKA__HEARTBEAT_INTERVAL_MS="1000",
        DRIFTD_METRICS__PORT="0",
        DRIFTD_LOG__JSON="true",
        DRIFTD_LEARNER__POLL_TIMEOUT_S="0.2",
        **overrides,
    )
    return env


def produce(bootstrap: str, topic: str, payloads: list[bytes]) -> None:
    """Produce with confluent-kafka (librdkafka), a client independent of driftd's."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for index, payload in enumerate(payloads):
        producer.produce(topic, value=payload, key=str(index).encode())
    assert producer.flush(15) == 0


def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed next offset per partition, read with confluent-kafka (-1001: none)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        asked = [ConfluentTopicPartition(topic, p) for p in range(partitions)]
        return {tp.partition: tp.offset for tp in consumer.committed(asked, timeout=10)}
    finally:
        consumer.close()


def scrape(port: int) -> dict[str, float]:
    """Every sample of ``/metrics`` as ``name{label=value,...}`` → value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples
