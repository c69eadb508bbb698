"""`driftd run` as a subprocess on the real broker over a stream whose domain switches abruptly.

Phase 1 produces 4,000 events of one concept and waits until they are learned; phase 2 produces
the next 4,000, drawn from another concept. Checked through the real ``/metrics`` endpoint and the
snapshot manifests: the drift counter rises, the adaptation policy makes (or reuses) a head, the
active domain has a series, and the prequential accuracy dips after the switch, then recovers.

Measured in-process on this stream (seeds 1-5): ~0.99-1.0 before the switch, 0.72-0.86 in the
1,000 events after it, 0.999-1.0 in the last 1,000; the thresholds below leave a wide margin.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from driftd.adapters.embedded_broker import EmbeddedBroker
from driftd.streams import DriftingStream

pytestmark = pytest.mark.integration

PHASE = 4_000  # events per concept
WINDOW = 500  # prequential window (events), so the manifests see the dip clearly
RECOVERED = 0.9  # accuracy regained at the end (measured: >= 0.999)
DIPPED = 0.95  # the windowed accuracy falls below this at some snapshot after the switch


class Daemon:
    """A running `driftd run` subprocess and the JSON lines it logged."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.logs: list[dict[str, Any]] = []
        self.reader = threading.Thread(target=self._collect, daemon=True)
        self.reader.start()

    def _collect(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            try:
                self.logs.append(json.loads(line))
            except ValueError:
                self.logs.append({"raw": line.decode(errors="replace")})

    def wait_for_log(self, event: str, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for entry in list(self.logs):
                if entry.get("event") == event:
                    return entry
            assert self.process.poll() is None, f"driftd exited: {self.logs[-5:]}"
            time.sleep(0.05)
        raise AssertionError(f"no {event!r} log within {timeout} s: {self.logs[-5:]}")


@pytest.fixture
def daemon_env(broker: EmbeddedBroker) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTD_")}
    env.update(
        DRIFTD_KAFKA__BOOTSTRAP_SERVERS=broker.bootstrap_servers,
        DRIFTD_KAFKA__SESSION_TIMEOUT_MS="3000",
        DRIFTD_KAFKA__HEARTBEAT_INTERVAL_MS="1000",
        DRIFTD_METRICS__PORT="0",
        DRIFTD_LOG__JSON="true",
        DRIFTD_LEARNER__POLL_TIMEOUT_S="0.2",
    )
    return env


@pytest.fixture
def start_daemon(tmp_path: Path, daemon_env: dict[str, str]) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(env: dict[str, str]) -> Daemon:
        process = subprocess.Popen(
            [sys.executable, "-m", "driftd.cli", "run"],
            cwd=tmp_path, env={**daemon_env, **env},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        started.append(Daemon(process))
        return started[-1]

    yield start
    for daemon in started:
        if daemon.process.poll() is None:
            daemon.process.kill()
        daemon.process.wait()
        daemon.reader.join(timeout=5)
        assert daemon.process.stderr is not None
        daemon.process.stderr.close()


def _produce(bootstrap: str, topic: str, payloads: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for payload in payloads:
        producer.produce(topic, value=payload)
    assert producer.flush(15) == 0


def _manifests(snapshots: Path) -> list[dict[str, Any]]:
    """Every complete snapshot's manifest, by events learned."""
    found = []
    for path in snapshots.glob("*/manifest.json"):
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):  # pruned or being written meanwhile
            continue
    return sorted(found, key=lambda manifest: int(manifest["events_learned"]))


def _wait_for_learned(snapshots: Path, learned: int, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    latest: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        manifests = _manifests(snapshots)
        latest = manifests[-1] if manifests else None
        if latest is not None and latest["events_learned"] >= learned:
            return latest
        time.sleep(0.1)
    raise AssertionError(f"snapshots never reached {learned} events learned: {latest}")


def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def _total(samples: dict[str, float], prefix: str) -> float:
    return sum(value for name, value in samples.items() if name.startswith(prefix))


def test_domain_switch_is_detected_adapted_to_and_accuracy_recovers(
    broker: EmbeddedBroker,
    unique_topic: Callable[..., str],
    start_daemon: Callable[..., Daemon],
    tmp_path: Path,
) -> None:
    topic, snapshots = unique_topic(partitions=1), tmp_path / "snapshots"
    stream = DriftingStream(n_events=2 * PHASE, change_every=PHASE, n_concepts=2, seed=3)
    payloads = [orjson.dumps({**event, "ts": time.time()}) for event in stream.events()]
    daemon = start_daemon(
        {
            "DRIFTD_KAFKA__TOPICS": topic,
            "DRIFTD_KAFKA__GROUP_ID": f"driftd-{uuid.uuid4().hex[:8]}",
            "DRIFTD_MODEL__N_CLASSES": "3",
            "DRIFTD_MODEL__SEED": "3",
            "DRIFTD_LEARNER__BATCH_SIZE": "32",
            "DRIFTD_LEARNER__METRICS_WINDOW": str(WINDOW),
            "DRIFTD_SNAPSHOTS__DIR": str(snapshots),
            "DRIFTD_SNAPSHOTS__EVERY_STEPS": "8",  # 256 events: the dip shows in a manifest
            "DRIFTD_SNAPSHOTS__EVERY_SECONDS": "0.5",
            "DRIFTD_SNAPSHOTS__KEEP": "100",
        }
    )
    port = int(daemon.wait_for_log("metrics_listening")["port"])

    _produce(broker.bootstrap_servers, topic, payloads[:PHASE])
    learned_first = _wait_for_learned(snapshots, PHASE)
    assert learned_first["metrics"]["prequential_accuracy"] >= RECOVERED
    before = _scrape(port)
    assert before["driftd_events_learned_total"] == PHASE

    _produce(broker.bootstrap_servers, topic, payloads[PHASE:])
    final = _wait_for_learned(snapshots, 2 * PHASE)
    after = _scrape(port)
    assert after["driftd_events_learned_total"] == 2 * PHASE

    drifts = "driftd_drift_detected_total"
    assert _total(after, drifts) > _total(before, drifts), "the switch was not detected"
    assert after[f"{drifts}{{detector=adwin,signal=loss}}"] >= 1
    heads = "driftd_adaptations_total{kind=new_head}", "driftd_adaptations_total{kind=reuse_head}"
    assert sum(after.get(name, 0.0) - before.get(name, 0.0) for name in heads) >= 1
    domains = [name for name in after if name.startswith("driftd_active_domain{")]
    assert len(domains) == 1, domains
    assert after[domains[0]] == 1

    # The windowed accuracy dipped after the switch, then came back.
    switched = [m for m in _manifests(snapshots) if PHASE < m["events_learned"] <= PHASE + 1_000]
    assert switched, "no snapshot in the 1,000 events after the switch"
    lowest = min(m["metrics"]["prequential_accuracy"] for m in switched)
    assert lowest < DIPPED, f"no visible dip after the switch: {lowest:.3f}"
    assert final["metrics"]["prequential_accuracy"] >= RECOVERED
    assert after["driftd_prequential_accuracy"] >= RECOVERED

    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.process.wait(timeout=30) == 0
