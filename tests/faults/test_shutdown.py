"""Graceful shutdown under load: SIGTERM while a producer keeps producing.

Promise: ``driftd run`` exits 0 within ``lifecycle.shutdown_grace_s`` (past it, its watchdog
exits 1 without a final snapshot, so exit status 0 *is* "within the grace"), after a final
snapshot whose offsets are exactly the group's committed offsets (read back with
confluent-kafka), and a second start continues from there: every produced event is learned
exactly once over the two runs.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from driftd.adapters.embedded_broker import EmbeddedBroker
from driftd.tools.streams import DriftingStream
from tests.faults.conftest import (
    audit_snapshot_dir,
    committed_offsets,
    manifest_offsets,
    wait_until,
)
from tests.integration.driftd_process import DriftdProcess

pytestmark = pytest.mark.integration

GRACE_S = 20


class SteadyProducer:
    """Produces good events from a thread, ``burst`` every ``pause_s``, until stopped."""

    def __init__(self, bootstrap: str, topic: str, *, burst: int = 40, pause_s: float = 0.02):
        self._producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        self._topic, self._burst, self._pause_s = topic, burst, pause_s
        self._stop = threading.Event()
        self._events = DriftingStream(n_events=10**7, change_every=3000, seed=21).events()
        self.produced = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for _ in range(self._burst):
                self._producer.produce(self._topic, value=orjson.dumps(next(self._events)))
            self.produced += self._burst
            self._producer.poll(0)
            time.sleep(self._pause_s)

    def stop(self) -> int:
        """Stop, flush, and return how many events were produced (all delivered)."""
        self._stop.set()
        self._thread.join(timeout=10)
        assert self._producer.flush(15) == 0
        return self.produced


def _learned(snapshots: Path) -> int:
    try:
        newest = audit_snapshot_dir(snapshots).newest
    except (OSError, AssertionError, ValueError):  # a live writer changed the dir meanwhile
        return -1
    return 0 if newest is None else int(newest["events_learned"])


def test_sigterm_under_load_snapshots_commits_and_resumes_exactly(
    broker: EmbeddedBroker,
    unique_topic: Callable[..., str],
    start_driftd: Callable[..., DriftdProcess],
    tmp_path: Path,
) -> None:
    topic, snapshots = unique_topic(partitions=2), tmp_path / "snapshots"
    group = f"shutdown-{time.monotonic_ns()}"
    env = {
        "DRIFTD_KAFKA__TOPICS": topic,
        "DRIFTD_KAFKA__GROUP_ID": group,
        "DRIFTD_MODEL__N_CLASSES": "3",
        "DRIFTD_LEARNER__BATCH_SIZE": "64",
        "DRIFTD_SNAPSHOTS__DIR": str(snapshots),
        "DRIFTD_SNAPSHOTS__EVERY_STEPS": "100000",
        "DRIFTD_SNAPSHOTS__EVERY_SECONDS": "2",
        "DRIFTD_LIFECYCLE__SHUTDOWN_GRACE_S": str(GRACE_S),
    }
    producer = SteadyProducer(broker.bootstrap_servers, topic)
    try:
        daemon = start_driftd("run", env)
        wait_until(lambda: _learned(snapshots) >= 1000, 90, "1000 events learned")
        produced_at_signal = producer.produced
        signalled = time.monotonic()
        daemon.process.send_signal(signal.SIGTERM)
        status = daemon.process.wait(timeout=GRACE_S + 30)
        shutdown_s = time.monotonic() - signalled
    finally:
        produced = producer.stop()
    assert status == 0, daemon.logs[-5:]
    assert producer.produced > produced_at_signal, "the producer kept producing"

    audit = audit_snapshot_dir(snapshots)
    newest = audit.newest
    assert newest is not None
    assert audit.hidden == []
    stopped = [entry for entry in daemon.logs if entry.get("event") == "stopped"]
    assert len(stopped) == 1
    counts = re.match(r"stopped: (\d+) events consumed, (\d+) learned", stopped[0]["message"])
    assert counts is not None, stopped[0]
    consumed, learned = int(counts[1]), int(counts[2])
    assert newest["events_learned"] == learned == consumed  # the final snapshot has them all
    written = [
        entry["version"] for entry in daemon.logs if entry.get("event") == "snapshot_written"
    ]
    assert written[-1] == newest["version"]  # the final snapshot is the newest one
    offsets = {tp.partition: offset for tp, offset in manifest_offsets(newest).items()}
    assert committed_offsets(broker.bootstrap_servers, group, topic, 2) == offsets
    assert newest["events_learned"] == sum(offsets.values())  # all good: learned == read
    assert not any("longer than" in str(entry.get("message")) for entry in daemon.logs)

    resumed = start_driftd("run", env)
    resumed.wait_for_log("resumed")
    wait_until(lambda: _learned(snapshots) == produced, 90, f"{produced} events learned")
    assert resumed.stop(timeout=GRACE_S + 30) == 0
    final = audit_snapshot_dir(snapshots).newest
    assert final is not None
    assert final["events_learned"] == produced
    final_offsets = {tp.partition: offset for tp, offset in manifest_offsets(final).items()}
    assert sum(final_offsets.values()) == produced
    assert committed_offsets(broker.bootstrap_servers, group, topic, 2) == final_offsets
    print(
        f"shutdown under load: {shutdown_s:.2f} s (grace {GRACE_S} s), learned "
        f"{newest['events_learned']} by the signal, {produced} produced, all learned once"
    )


def test_sigterm_before_any_event_exits_cleanly_and_commits_nothing(
    broker: EmbeddedBroker,
    unique_topic: Callable[..., str],
    start_driftd: Callable[..., DriftdProcess],
    tmp_path: Path,
) -> None:
    """A stop while the consumer is still joining: exit 0, no snapshot, no commit."""
    topic, snapshots = unique_topic(partitions=1), tmp_path / "snapshots"
    group = f"shutdown-idle-{time.monotonic_ns()}"
    daemon = start_driftd(
        "run",
        {
            "DRIFTD_KAFKA__TOPICS": topic,
            "DRIFTD_KAFKA__GROUP_ID": group,
            "DRIFTD_MODEL__N_CLASSES": "3",
            "DRIFTD_SNAPSHOTS__DIR": str(snapshots),
            "DRIFTD_LIFECYCLE__SHUTDOWN_GRACE_S": str(GRACE_S),
        },
    )
    daemon.wait_for_log("metrics_listening")
    assert daemon.stop(timeout=GRACE_S + 30) == 0
    assert audit_snapshot_dir(snapshots).versions == []
    assert committed_offsets(broker.bootstrap_servers, group, topic, 1) == {0: -1001}


def test_shutdown_past_the_grace_exits_1_and_still_loses_nothing(
    broker: EmbeddedBroker,
    unique_topic: Callable[..., str],
    start_driftd: Callable[..., DriftdProcess],
    tmp_path: Path,
) -> None:
    """A grace too short for the final snapshot: the watchdog exits 1, saying so; the next
    start resumes from the last durable snapshot and learns every event exactly once."""
    topic, snapshots = unique_topic(partitions=2), tmp_path / "snapshots"
    group = f"shutdown-grace-{time.monotonic_ns()}"
    env = {
        "DRIFTD_KAFKA__TOPICS": topic,
        "DRIFTD_KAFKA__GROUP_ID": group,
        "DRIFTD_MODEL__N_CLASSES": "3",
        "DRIFTD_LEARNER__BATCH_SIZE": "32",
        "DRIFTD_SNAPSHOTS__DIR": str(snapshots),
        "DRIFTD_SNAPSHOTS__EVERY_SECONDS": "0.5",
        "DRIFTD_LIFECYCLE__SHUTDOWN_GRACE_S": "0.001",
    }
    producer = SteadyProducer(broker.bootstrap_servers, topic)
    try:
        daemon = start_driftd("run", env)
        wait_until(lambda: _learned(snapshots) >= 500, 90, "500 events learned")
        daemon.process.send_signal(signal.SIGTERM)
        status = daemon.process.wait(timeout=30)
    finally:
        produced = producer.stop()
    assert status == 1
    assert any("longer than" in str(entry.get("message")) for entry in daemon.logs)
    assert not any(entry.get("event") == "stopped" for entry in daemon.logs)
    audit = audit_snapshot_dir(snapshots)  # whatever the watchdog cut short is invisible
    assert audit.newest is not None
    durable = {tp.partition: offset for tp, offset in manifest_offsets(audit.newest).items()}
    committed = committed_offsets(broker.bootstrap_servers, group, topic, 2)
    assert all(committed[p] <= durable.get(p, 0) for p in committed)

    env["DRIFTD_LIFECYCLE__SHUTDOWN_GRACE_S"] = str(GRACE_S)
    resumed = start_driftd("run", env)
    wait_until(lambda: _learned(snapshots) == produced, 90, f"{produced} events learned")
    assert resumed.stop(timeout=GRACE_S + 30) == 0
    final = audit_snapshot_dir(snapshots).newest
    assert final is not None
    assert final["events_learned"] == produced
