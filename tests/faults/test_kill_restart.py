"""Crash the trainer at chosen and at random points; every restart must lose and double nothing.

Two layers:

* **Injected crashes, many seeded trials** (in process, real broker, real files): the trainer
  runs with a real ``KafkaRecordSource`` and ``FileSnapshotStore``; a :class:`SimulatedCrash`
  (a BaseException, so no clean-up handler of driftd runs) is raised at an exact point: after
  a batch was learned but before its offsets moved, mid-way through writing a snapshot file,
  after the temp dir is complete but before the rename, between the rename and ``LATEST``,
  between the durable snapshot and the offset commit, and in retention between the rename to
  the grave and the delete. Each trial chains several crashes, then lets a last run finish.
* **kill -9 of a real ``driftd run``** at seeded random moments, several times in a row.

After every crash: each visible snapshot is complete (sizes and sha256 from its manifest),
``LATEST`` names a complete one, and the group's committed offsets (read with confluent-kafka)
are never past the newest durable snapshot. At the end: events learned == events produced, and
the weights *and* optimizer state equal an uninterrupted in-memory run's, bit for bit (torch on
one thread; batch boundaries made deterministic), which proves no event was lost or learned
twice.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch

import driftd.adapters.file_snapshot_store as file_store
from driftd import app
from driftd.adapters.embedded_broker import EmbeddedBroker
from driftd.adapters.file_snapshot_store import FileSnapshotStore
from driftd.adapters.kafka_source import KafkaRecordSource
from driftd.adapters.memory_source import InMemoryRecordSource
from driftd.app import build_trainer
from driftd.loop import StopWhen
from driftd.records import Record, TopicPartition
from driftd.settings.root import Settings, load_settings
from tests.faults.conftest import (
    SimulatedCrash,
    as_records,
    assert_same_tensors,
    audit_snapshot_dir,
    child_pids,
    committed_offsets,
    good_payloads,
    manifest_offsets,
    process_gone,
    read_values,
    snapshot_tensors,
    trials,
    wait_until,
    with_bad_records,
)
from tests.integration.driftd_process import DriftdProcess, produce

pytestmark = pytest.mark.integration

EVENTS, BATCH, SNAPSHOT_EVERY = 480, 8, 5  # 60 steps, a snapshot every 5: 12 per full pass
CRASH_POINTS = (
    "mid_batch",  # learned, offsets not advanced, nothing saved
    "torn_snapshot_file",  # half of a tensor file written in the temp dir
    "before_rename",  # temp dir complete and fsynced, not renamed into place
    "before_latest",  # version renamed into place, LATEST not moved
    "before_commit",  # snapshot durable and published, offsets not committed
    "mid_retention",  # an expired version renamed to the grave, not yet deleted
)
CRASHES_PER_TRIAL = 3
KAFKA_TIMEOUTS = {"session_timeout_ms": 1000, "heartbeat_interval_ms": 300}


class ExactBatches:
    """A real source whose polls return exactly ``max_records`` records (or none).

    Kafka fetches split a stream at arbitrary points; an uninterrupted reference run can only
    match a crashed-and-resumed one bit for bit if both see the same batches. Records buffered
    here but not yet returned are simply lost in a crash: they were never processed.
    """

    def __init__(self, inner: KafkaRecordSource, on_commit: Callable[[], None]) -> None:
        self.inner = inner
        self._buffer: list[Record] = []
        self._on_commit = on_commit

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        deadline = time.monotonic() + timeout_s
        while len(self._buffer) < max_records:
            left = deadline - time.monotonic()
            if left <= 0:
                return []
            self._buffer += self.inner.poll(max_records - len(self._buffer), left)
        batch, self._buffer = self._buffer[:max_records], self._buffer[max_records:]
        return batch

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        self._on_commit()
        self.inner.commit(offsets)

    def lag(self) -> Mapping[TopicPartition, int]:
        return self.inner.lag()

    @property
    def ready(self) -> bool:
        return bool(self.inner.ready)

    def close(self) -> None:
        self.inner.close()


@dataclass
class CrashPlan:
    """Raise :class:`SimulatedCrash` at the ``nth`` time the run reaches ``point``."""

    point: str | None
    nth: int = 1
    seen: dict[str, int] = field(default_factory=dict)
    fired: bool = False

    def reached(self, point: str) -> bool:
        """Count one arrival at ``point``; True when this is the one to crash at."""
        self.seen[point] = self.seen.get(point, 0) + 1
        if point == self.point and self.seen[point] == self.nth and not self.fired:
            self.fired = True
            return True
        return False

    def check(self, point: str) -> None:
        """Crash here if planned."""
        if self.reached(point):
            raise SimulatedCrash(point)


@pytest.fixture
def crash_hooks(monkeypatch: pytest.MonkeyPatch) -> list[CrashPlan]:
    """Install crash points in the file store; the test appends the plan of each run."""
    plans: list[CrashPlan] = []

    def plan() -> CrashPlan:
        return plans[-1] if plans else CrashPlan(None)

    real_write, real_fsync_dir = file_store._write_durably, file_store._fsync_dir
    real_remove, real_write_latest = file_store._remove_tree, FileSnapshotStore._write_latest

    def write_durably(path: Path, data: bytes) -> None:
        if path.name.endswith(".safetensors") and plan().reached("torn_snapshot_file"):
            path.write_bytes(data[: len(data) // 2])
            raise SimulatedCrash("torn_snapshot_file")
        real_write(path, data)

    def fsync_dir(path: Path) -> None:
        real_fsync_dir(path)
        if path.name.startswith(".tmp-"):  # the temp dir is complete: the rename comes next
            plan().check("before_rename")

    def write_latest(store: FileSnapshotStore, name: str) -> None:
        plan().check("before_latest")
        real_write_latest(store, name)

    def remove_tree(path: Path) -> None:
        if plan().reached("mid_retention"):
            path.rename(path.with_name(f".tmp-gc-{path.name}-crashed"))
            raise SimulatedCrash("mid_retention")
        real_remove(path)

    monkeypatch.setattr(file_store, "_write_durably", write_durably)
    monkeypatch.setattr(file_store, "_fsync_dir", fsync_dir)
    monkeypatch.setattr(file_store, "_remove_tree", remove_tree)
    monkeypatch.setattr(FileSnapshotStore, "_write_latest", write_latest)
    monkeypatch.setattr(
        app,
        "kafka_source",
        lambda settings, offsets, **_: ExactBatches(  # stop=, on_attempt=: no retry here
            KafkaRecordSource(settings.kafka, start_offsets=offsets),
            on_commit=lambda: plan().check("before_commit"),
        ),
    )
    return plans


def _settings(
    snapshots: Path, kafka: Mapping[str, Any] | None = None, *, gate: bool = False, **learner: Any
) -> Settings:
    """Trial settings; ``gate=False`` publishes every snapshot (LATEST moves at each one)."""
    return load_settings(
        kafka={"consumer_process": False, **KAFKA_TIMEOUTS, **(kafka or {})},
        model={"n_classes": 3, "seed": 3},
        learner={"batch_size": BATCH, **learner},
        snapshots={
            "dir": str(snapshots),
            "every_steps": SNAPSHOT_EVERY,
            "every_seconds": 3600,
            "keep": 2,
            "gate_enabled": gate,
        },
        metrics={"enabled": False},
    )


def _reference_tensors(
    tmp_path: Path, payloads: Sequence[bytes], **learner: Any
) -> dict[str, torch.Tensor]:
    """The uninterrupted run: same settings and batches, in-memory source, one final snapshot."""
    directory = tmp_path / "reference"
    settings = _settings(directory, **learner)
    trainer = build_trainer(
        settings, source=InMemoryRecordSource(as_records("reference", payloads))
    )
    progress = trainer.run(StopWhen(max_events=len(payloads)))
    assert progress.events_learned + progress.events_invalid == len(payloads)
    audit = audit_snapshot_dir(directory)
    return snapshot_tensors(directory, audit.versions[-1])


def _crash_sequence(seed: int) -> list[tuple[str, int]]:
    """Crash points of one trial: a rotation through all points, then seeded random ones."""
    rng = random.Random(seed)
    points = [
        CRASH_POINTS[(seed * CRASHES_PER_TRIAL + index) % len(CRASH_POINTS)]
        if seed * CRASHES_PER_TRIAL + index < len(CRASH_POINTS)
        else rng.choice(CRASH_POINTS)
        for index in range(CRASHES_PER_TRIAL)
    ]
    # mid_batch: any step of a pass; snapshot points: one of the first snapshots of the run.
    return [(point, rng.randint(1, 12) if point == "mid_batch" else rng.randint(1, 3))
            for point in points]  # fmt: skip


def _crash_mid_batch(plan: CrashPlan, progress: object) -> None:
    """``on_step`` hook: the batch is learned, its offsets not yet advanced."""
    plan.check("mid_batch")


@dataclass
class TrialFigures:
    """What one trial measured (printed for the README table)."""

    crashes: int = 0
    not_fired: int = 0
    learned_in_snapshots: list[int] = field(default_factory=list)
    dead_letter_duplicates: int = 0  # at-least-once: a crash may send a rejection again


@pytest.mark.parametrize("seed", range(trials(light=2, heavy_count=24)))
def test_injected_crashes_lose_and_double_nothing(
    seed: int,
    broker: EmbeddedBroker,
    unique_topic: Callable[..., str],
    crash_hooks: list[CrashPlan],
    tmp_path: Path,
    no_driftd_env: None,
) -> None:
    payloads, bad = with_bad_records(good_payloads(EVENTS, seed=5), every=40)
    payloads, bad = payloads[:EVENTS], bad[: EVENTS // 40]  # the 40th, 80th, ... record is bad
    assert set(payloads) >= set(bad)
    gate = seed % 2 == 1  # odd trials: the quality gate may leave the newest unpublished
    expected = _reference_tensors(tmp_path, payloads)
    topic, group = unique_topic(partitions=1), f"crash-{seed}-{time.monotonic_ns()}"
    dead_letters = unique_topic(partitions=1, prefix="dlq")
    produce(broker.bootstrap_servers, topic, payloads)
    snapshots = tmp_path / "snapshots"
    kafka = {"bootstrap_servers": [broker.bootstrap_servers], "topics": [topic],
             "group_id": group, "dead_letter_topic": dead_letters}  # fmt: skip
    settings = _settings(snapshots, kafka, gate=gate)
    figures = TrialFigures()

    for point, nth in _crash_sequence(seed):
        plan = CrashPlan(point, nth)
        crash_hooks.append(plan)
        trainer = build_trainer(settings, on_step=partial(_crash_mid_batch, plan))
        assert not [e for e in snapshots.iterdir() if e.name.startswith(".tmp-")], (
            "a new store removes what an interrupted save left"
        )
        left = EVENTS - sum(trainer.loop.state.offsets.values())
        try:
            trainer.run(StopWhen(max_events=left, max_seconds=60))
            figures.not_fired += 1  # the stream ended before the planned point came
        except SimulatedCrash:
            figures.crashes += 1
        audit = audit_snapshot_dir(snapshots)
        newest = audit.newest
        durable = 0 if newest is None else manifest_offsets(newest)[TopicPartition(topic, 0)]
        committed = committed_offsets(broker.bootstrap_servers, group, topic, 1)[0]
        assert committed <= durable, f"{point}: committed {committed} past durable {durable}"
        if newest is not None:
            accounted = newest["events_learned"] + newest["events_rejected"]
            assert accounted == durable, "each event before the offsets is learned or rejected"
            figures.learned_in_snapshots.append(newest["events_learned"])

    crash_hooks.append(CrashPlan(None))
    final = build_trainer(settings)
    resumed_at = sum(final.loop.state.offsets.values())
    progress = final.run(StopWhen(max_events=EVENTS - resumed_at, max_seconds=60))
    assert progress.events_consumed == EVENTS - resumed_at
    audit = audit_snapshot_dir(snapshots)
    assert audit.hidden == []
    assert audit.latest == audit.versions[-1] or (gate and audit.latest in (None, *audit.versions))
    newest = audit.newest
    assert newest is not None
    assert newest["events_learned"] == EVENTS - len(bad)  # nothing lost or double-counted
    assert newest["events_rejected"] == len(bad)
    letters = read_values(broker.bootstrap_servers, dead_letters, len(bad))
    assert set(letters) == set(bad), "every bad record dead-lettered (at least once)"
    figures.dead_letter_duplicates = len(letters) - len(bad)
    assert manifest_offsets(newest) == {TopicPartition(topic, 0): EVENTS}
    assert committed_offsets(broker.bootstrap_servers, group, topic, 1) == {0: EVENTS}
    assert_same_tensors(snapshot_tensors(snapshots, audit.versions[-1]), expected)
    assert figures.crashes >= 1
    print(f"trial {seed}: {_crash_sequence(seed)}: {figures}")


def test_kill_9_at_random_moments_of_driftd_run(
    broker: EmbeddedBroker,
    unique_topic: Callable[..., str],
    start_driftd: Callable[..., DriftdProcess],
    tmp_path: Path,
    no_driftd_env: None,
) -> None:
    """SIGKILL a real `driftd run` several times mid-stream; the survivor equals the reference.

    One event per batch makes the steps independent of how Kafka splits fetches, so the final
    weights must equal an uninterrupted in-memory run's exactly.
    """
    rng = random.Random(2026)
    events, kills = trials(light=360, heavy_count=1200), trials(light=2, heavy_count=8)
    payloads = good_payloads(events, seed=9)
    expected = _reference_tensors(tmp_path, payloads, batch_size=1)
    topic, snapshots = unique_topic(partitions=1), tmp_path / "snapshots"
    group = f"kill9-{time.monotonic_ns()}"
    produce(broker.bootstrap_servers, topic, payloads)
    env = {
        "DRIFTD_KAFKA__TOPICS": topic,
        "DRIFTD_KAFKA__GROUP_ID": group,
        "DRIFTD_MODEL__N_CLASSES": "3",
        "DRIFTD_MODEL__SEED": "3",
        "DRIFTD_LEARNER__BATCH_SIZE": "1",
        "DRIFTD_SNAPSHOTS__DIR": str(snapshots),
        "DRIFTD_SNAPSHOTS__EVERY_STEPS": str(SNAPSHOT_EVERY),
        "DRIFTD_SNAPSHOTS__EVERY_SECONDS": "0.5",  # flushes the tail of the stream
        "DRIFTD_SNAPSHOTS__KEEP": "2",
        "DRIFTD_SNAPSHOTS__GATE_ENABLED": "false",
    }

    def learned() -> int:
        """Events in the newest snapshot; -1 while a live writer changed the dir under us."""
        try:
            newest = audit_snapshot_dir(snapshots).newest
        except (OSError, AssertionError, ValueError):
            return -1
        return 0 if newest is None else int(newest["events_learned"])

    def reached(target: int) -> bool:
        return learned() >= target

    killed_at: list[int] = []
    for _ in range(kills):
        before = learned()  # the daemon is dead: no race here
        daemon = start_driftd("run", env)
        target = before + rng.randint(5, max(6, (events - before) // 3))
        wait_until(partial(reached, target), 60, f"{target} events learned")
        time.sleep(rng.uniform(0.0, 0.2))  # then anywhere: mid-batch, mid-snapshot, ...
        children = child_pids(daemon.process.pid)
        daemon.process.send_signal(signal.SIGKILL)
        assert daemon.process.wait(timeout=30) == -signal.SIGKILL
        killed_at.append(learned())
        audit = audit_snapshot_dir(snapshots)  # complete versions, LATEST names one of them
        assert audit.newest is not None
        durable = manifest_offsets(audit.newest)[TopicPartition(topic, 0)]
        assert committed_offsets(broker.bootstrap_servers, group, topic, 1)[0] <= durable
        for child in children:  # the consumer process notices its parent died and leaves
            wait_until(partial(process_gone, child), 30, f"orphan {child} to exit")
    assert killed_at[-1] < events, "the kills came too late to interrupt anything"

    survivor = start_driftd("run", env)
    try:
        wait_until(lambda: learned() == events, 60, "all events learned")
    except AssertionError:
        raise AssertionError(f"learned {learned()}: {survivor.logs[-8:]}") from None
    assert survivor.stop() == 0
    audit = audit_snapshot_dir(snapshots)
    assert audit.hidden == []
    assert audit.newest is not None
    assert audit.newest["events_learned"] == events
    assert committed_offsets(broker.bootstrap_servers, group, topic, 1) == {0: events}
    assert_same_tensors(snapshot_tensors(snapshots, audit.versions[-1]), expected)
    print(f"kill -9 at learned={killed_at}, resumed to {events}")
