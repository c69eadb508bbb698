"""A trainer group of two `driftd run` ranks under ``torchrun``, on the real broker, end to end.

Each test launches ``torchrun --standalone --nproc-per-node 2 <driftd script> run`` (gloo on
loopback) on a 4-partition topic and a shared snapshot directory, then checks from the outside:
the newest snapshot's manifest (events learned, next offset per partition), the group's committed
offsets (read with confluent-kafka), and the ranks' JSON logs (``group_snapshot`` digests: both
replicas identical at every coordinated snapshot; no ``replicas_diverged``).

* SIGTERM of ``torchrun``: the ranks stop at the same round, write a final snapshot, and every
  event is learned once (both sync modes);
* kill -9 of rank 1 mid-stream: ``torchrun`` restarts the group, which resumes from the last
  coordinated snapshot: nothing lost, nothing learned twice;
* two ranks, then one plain ``driftd run`` on the same snapshots and group: it resumes every
  partition exactly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from driftd.adapters.embedded_broker import EmbeddedBroker
from tests.faults.conftest import audit_snapshot_dir, good_payloads, process_gone, wait_until
from tests.integration.driftd_process import DriftdProcess, committed_offsets, driftd_env

pytestmark = pytest.mark.integration

PARTITIONS = 4
DRIFTD_SCRIPT = Path(sys.executable).with_name("driftd")
TORCHRUN = Path(sys.executable).with_name("torchrun")
# Rendezvous, two torch imports and the Kafka assignment on two busy cores: generous, bounded.
STARTUP_S = 90.0


class LaunchedGroup(DriftdProcess):
    """``torchrun`` running ranks of `driftd run`; the ranks' JSON log lines collected as they
    come (torchrun passes its workers' stderr through; its own lines are kept as ``raw``)."""

    def __init__(self, env: dict[str, str], cwd: Path, *, ranks: int, max_restarts: int) -> None:
        command = [
            str(TORCHRUN), "--standalone", f"--nproc-per-node={ranks}",
            f"--max-restarts={max_restarts}", str(DRIFTD_SCRIPT), "run",
        ]  # fmt: skip
        self._cwd = cwd
        # Its own process group: close() reaps every rank.
        super().__init__("run", env, cwd, new_session=True, argv=command)

    def events(self, event: str) -> list[dict[str, Any]]:
        return [entry for entry in list(self.logs) if entry.get("event") == event]

    def tail(self, lines: int = 15) -> str:
        """The errors the ranks logged, then the last lines (for failure messages)."""
        logs = list(self.logs)
        errors = [entry for entry in logs if entry.get("level") == "error"][:3]
        return "\n".join(json.dumps(entry)[:1500] for entry in [*errors, *logs[-lines:]])

    def close(self) -> None:
        """Kill the launcher and its ranks if still running; drain the log reader."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self._reader.join(timeout=5)
        assert self.process.stderr is not None
        self.process.stderr.close()
        with (self._cwd / f"torchrun-{self.process.pid}.log").open("w") as kept:  # post-mortem
            kept.writelines(json.dumps(entry) + "\n" for entry in self.logs)


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., LaunchedGroup]]:
    """Factory: ``launch(env, ranks=2, max_restarts=0)``; every launcher is killed after."""
    started: list[LaunchedGroup] = []

    def start(env: dict[str, str], *, ranks: int = 2, max_restarts: int = 0) -> LaunchedGroup:
        started.append(LaunchedGroup(env, tmp_path, ranks=ranks, max_restarts=max_restarts))
        return started[-1]

    yield start
    for group in started:
        group.close()


def _produce(bootstrap: str, topic: str, payloads: Sequence[bytes], first: int = 0) -> None:
    """Round-robin over the partitions (``first`` continues an earlier call's rotation)."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for index, payload in enumerate(payloads, start=first):
        producer.produce(topic, value=payload, partition=index % PARTITIONS)
    assert producer.flush(15) == 0


def _ends(topic: str, produced: int) -> dict[str, int]:
    """Each partition's end after ``produced`` events of :func:`_produce` on a fresh topic,
    keyed as the manifest and logs key them (Tansu's high watermarks are wrong after batched
    produces, NOTES.md: count instead)."""
    return {f"{topic}[{p}]": len(range(p, produced, PARTITIONS)) for p in range(PARTITIONS)}


def _newest(snapshots: Path) -> dict[str, Any] | None:
    """The newest complete snapshot's manifest; None if none yet or a writer raced the read."""
    try:
        return audit_snapshot_dir(snapshots).newest
    except (OSError, AssertionError, ValueError):
        return None


def _offsets(manifest: dict[str, Any]) -> dict[str, int]:
    return {f"{e['topic']}[{e['partition']}]": e["next_offset"] for e in manifest["offsets"]}


def _caught_up(snapshots: Path, ends: dict[str, int]) -> bool:
    manifest = _newest(snapshots)
    return (
        manifest is not None
        and manifest["events_learned"] == sum(ends.values())
        and _offsets(manifest) == ends
    )


def _wait_caught_up(
    snapshots: Path, ends: dict[str, int], process: subprocess.Popen[bytes], logs: Callable[[], str]
) -> None:
    """Until the newest snapshot holds every event; fails at once if the process exits."""

    def caught_up() -> bool:
        assert process.poll() is None, f"exited with {process.returncode}"
        return _caught_up(snapshots, ends)

    try:
        wait_until(caught_up, STARTUP_S, "the group to catch up", 0.2)
    except AssertionError:
        newest = _newest(snapshots)
        seen = None if newest is None else (newest["events_learned"], _offsets(newest))
        raise AssertionError(f"newest snapshot {seen}, wanted {ends}:\n{logs()}") from None


def _group_env(
    bootstrap: str, topic: str, group: str, snapshots: Path, sync: str
) -> dict[str, str]:
    return driftd_env(bootstrap, **_settings(topic, group, snapshots, sync))


def _settings(topic: str, group: str, snapshots: Path, sync: str) -> dict[str, str]:
    """The daemon's settings on top of :func:`driftd_env`'s (a rank's, or a lone daemon's)."""
    return dict(
        DRIFTD_KAFKA__TOPICS=topic,
        DRIFTD_KAFKA__GROUP_ID=group,
        DRIFTD_KAFKA__CONSUMER_PROCESS="false",
        DRIFTD_KAFKA__AUTO_OFFSET_RESET="earliest",
        DRIFTD_MODEL__N_FEATURES="10",  # DriftingStream's
        DRIFTD_MODEL__N_CLASSES="3",
        DRIFTD_MODEL__SEED="3",
        DRIFTD_ADAPTATION__ENABLED="false",
        DRIFTD_LEARNER__BATCH_SIZE="16",
        DRIFTD_SNAPSHOTS__DIR=str(snapshots),
        DRIFTD_SNAPSHOTS__EVERY_STEPS="5",
        DRIFTD_SNAPSHOTS__EVERY_SECONDS="1",  # flushes the tail of the stream
        DRIFTD_SNAPSHOTS__KEEP="3",
        DRIFTD_SNAPSHOTS__GATE_ENABLED="false",
        DRIFTD_METRICS__ENABLED="false",
        DRIFTD_DISTRIBUTED__SYNC=sync,
        DRIFTD_DISTRIBUTED__TIMEOUT_S="60",
        OMP_NUM_THREADS="1",
    )


def _assert_one_model(group: LaunchedGroup, ranks: int = 2) -> set[int]:
    """Every snapshot version was logged by every rank, with one digest; no divergence."""
    by_version: dict[int, dict[int, str]] = {}
    for entry in group.events("group_snapshot"):
        by_version.setdefault(entry["version"], {})[entry["rank"]] = entry["digest"]
    assert by_version, f"no group_snapshot logged:\n{group.tail()}"
    for version, digests in by_version.items():
        assert sorted(digests) == list(range(ranks)), f"version {version}: ranks {digests}"
        assert len(set(digests.values())) == 1, f"version {version}: replicas differ {digests}"
    assert not group.events("replicas_diverged")
    return set(by_version)


def _assert_committed(group: LaunchedGroup, bootstrap: str, name: str, topic: str,
                      ends: dict[str, int]) -> None:  # fmt: skip
    """The consumer group committed every partition's end; the last snapshot of each rank
    names its own partitions at those offsets (each rank commits only its own)."""
    committed = committed_offsets(bootstrap, name, topic, PARTITIONS)
    assert {f"{topic}[{p}]": o for p, o in committed.items()} == ends
    last: dict[int, dict[str, int]] = {}
    for entry in group.events("group_snapshot"):
        last[entry["rank"]] = entry["offsets"] or {}
    assert sorted(last) == [0, 1]
    assert not set(last[0]) & set(last[1]), "a partition committed by both ranks"
    assert {**last[0], **last[1]} == ends


@pytest.mark.parametrize("sync", ["average", "allreduce"])
def test_two_ranks_learn_every_event_once_and_stop_together_on_sigterm(
    sync: str,
    broker: EmbeddedBroker,
    unique_topic: Callable[..., str],
    launch: Callable[..., LaunchedGroup],
    tmp_path: Path,
) -> None:
    bootstrap, topic = broker.bootstrap_servers, unique_topic(partitions=PARTITIONS)
    name, snapshots = f"group-e2e-{uuid.uuid4().hex[:8]}", tmp_path / "snapshots"
    events = 800
    _produce(bootstrap, topic, good_payloads(events, seed=21))
    ends = _ends(topic, events)

    started = time.monotonic()
    group = launch(_group_env(bootstrap, topic, name, snapshots, sync))
    _wait_caught_up(snapshots, ends, group.process, group.tail)
    caught_up = time.monotonic() - started
    _stop(group)

    final = _newest(snapshots)
    assert final is not None
    assert final["events_learned"] == events
    assert _offsets(final) == ends
    versions = _assert_one_model(group)
    assert final["version"] in versions
    _assert_committed(group, bootstrap, name, topic, ends)
    print(f"{sync}: caught up in {caught_up:.1f} s, {len(versions)} group snapshots")


def test_kill_9_of_one_rank_restarts_the_group_losing_and_doubling_nothing(
    broker: EmbeddedBroker,
    unique_topic: Callable[..., str],
    launch: Callable[..., LaunchedGroup],
    tmp_path: Path,
) -> None:
    bootstrap, topic = broker.bootstrap_servers, unique_topic(partitions=PARTITIONS)
    name, snapshots = f"group-kill-{uuid.uuid4().hex[:8]}", tmp_path / "snapshots"
    half = 800
    _produce(bootstrap, topic, good_payloads(half, seed=22))
    group = launch(_group_env(bootstrap, topic, name, snapshots, "average"), max_restarts=1)

    first = _wait_for(group, "group_snapshot")
    victim = next(e["pid"] for e in group.events("group_joined") if e["rank"] == 1)
    os.kill(victim, signal.SIGKILL)
    killed_at = _newest(snapshots)
    _produce(bootstrap, topic, good_payloads(half, seed=23), first=half)
    ends = _ends(topic, 2 * half)
    wait_until(lambda: process_gone(victim), 30, "rank 1 to die")
    _wait_caught_up(snapshots, ends, group.process, group.tail)
    joined = [(e["rank"], e["pid"]) for e in group.events("group_joined")]
    assert len(joined) == 4, f"one restart of both ranks expected: {joined}"
    _stop(group, clean=False)

    final = _newest(snapshots)
    assert final is not None
    assert final["events_learned"] == 2 * half  # nothing lost, nothing learned twice
    assert _offsets(final) == ends
    assert not group.events("replicas_diverged")
    committed = committed_offsets(bootstrap, name, topic, PARTITIONS)
    assert {f"{topic}[{p}]": o for p, o in committed.items()} == ends
    learned = None if killed_at is None else killed_at["events_learned"]
    print(f"rank 1 killed after snapshot {first['version']} (learned {learned})")


def test_one_process_resumes_what_two_ranks_left(
    broker: EmbeddedBroker,
    unique_topic: Callable[..., str],
    launch: Callable[..., LaunchedGroup],
    start_driftd: Callable[..., DriftdProcess],
    tmp_path: Path,
) -> None:
    bootstrap, topic = broker.bootstrap_servers, unique_topic(partitions=PARTITIONS)
    name, snapshots = f"group-shrink-{uuid.uuid4().hex[:8]}", tmp_path / "snapshots"
    before, after = 600, 402  # 402: the partitions end unevenly
    _produce(bootstrap, topic, good_payloads(before, seed=24))
    group = launch(_group_env(bootstrap, topic, name, snapshots, "allreduce"))
    _wait_caught_up(snapshots, _ends(topic, before), group.process, group.tail)
    _stop(group)
    left = _newest(snapshots)
    assert left is not None

    _produce(bootstrap, topic, good_payloads(after, seed=25), first=before)
    ends = _ends(topic, before + after)
    daemon = start_driftd("run", _settings(topic, name, snapshots, "allreduce"))
    _wait_caught_up(snapshots, ends, daemon.process, lambda: json.dumps(daemon.logs[-10:]))
    assert daemon.stop() == 0

    final = _newest(snapshots)
    assert final is not None
    assert final["version"] > left["version"]
    assert final["events_learned"] == before + after
    assert _offsets(final) == ends
    committed = committed_offsets(bootstrap, name, topic, PARTITIONS)
    assert {f"{topic}[{p}]": o for p, o in committed.items()} == ends


def _wait_for(group: LaunchedGroup, event: str) -> dict[str, Any]:
    """The first log entry with ``event``; fails if torchrun exits or time runs out."""

    def seen() -> dict[str, Any] | None:
        assert group.process.poll() is None, f"torchrun exited:\n{group.tail()}"
        found = group.events(event)
        return found[0] if found else None

    try:
        return wait_until(seen, STARTUP_S, event, 0.1)  # type: ignore[no-any-return]
    except AssertionError as error:
        raise AssertionError(f"{error}:\n{group.tail()}") from None


def _stop(group: LaunchedGroup, *, clean: bool = True) -> None:
    """SIGTERM torchrun as a container runtime would; both ranks must stop gracefully.

    torchrun forwards the signal to its ranks, waits for them, then re-raises it as its own
    ``SignalException``: it exits 1 even when every rank exited 0 (torch's launcher, not
    driftd). What the ranks did is read from their logs: each logs ``stopped`` after its final
    snapshot and commit, right before it returns 0.
    """
    group.process.send_signal(signal.SIGTERM)
    code = group.process.wait(timeout=90)
    signalled = any("SignalException" in e.get("raw", "") for e in list(group.logs))
    assert code == 0 or (code == 1 and signalled), f"torchrun exited {code}:\n{group.tail()}"
    stopped = group.events("stopped")
    assert len(stopped) >= 2, f"both ranks stop gracefully:\n{group.tail()}"
    if clean:  # no rank failed and none was restarted
        assert len(stopped) == 2
        errors = [e for e in group.logs if e.get("level") == "error"]
        assert not errors, errors[:3]
