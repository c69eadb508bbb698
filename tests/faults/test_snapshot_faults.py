"""Snapshot store faults: disk full, permission denied, corrupt snapshots on start.

While snapshots cannot be written the trainer keeps learning, counts each failure in
``driftd_snapshot_failures_total``, leaves the previous snapshot and ``LATEST`` untouched (bit
for bit), and never commits an offset past the newest durable snapshot (checked through the
broker with confluent-kafka). Once the fault clears, the next snapshot succeeds and commits.

A corrupt newest snapshot on start (torn weights, garbled manifest, sha256 mismatch, missing
file) is passed over with a warning naming it, training resumes from the previous one, and
every event after that one's offsets is learned again exactly once.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import pathlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import driftd.adapters.file_snapshot_store as file_store
from driftd.adapters.embedded_broker import EmbeddedBroker
from driftd.adapters.file_snapshot_reader import FileSnapshotReader
from driftd.adapters.memory_source import InMemoryRecordSource
from driftd.app import build_trainer
from driftd.loop import StopWhen
from driftd.records import TopicPartition
from driftd.settings.root import Settings, load_settings
from tests.faults.conftest import (
    as_records,
    audit_snapshot_dir,
    committed_offsets,
    good_payloads,
    manifest_offsets,
)
from tests.integration.driftd_process import produce

PHASE = 320  # events per phase: healthy, faulty, healed


def _settings(snapshots: Path, **kafka: Any) -> Settings:
    return load_settings(
        kafka={"consumer_process": False, "session_timeout_ms": 1000,
               "heartbeat_interval_ms": 300, **kafka},
        model={"n_classes": 3, "seed": 1},
        learner={"batch_size": 16},
        snapshots={"dir": str(snapshots), "every_steps": 4, "every_seconds": 3600, "keep": 3,
                   "gate_enabled": False},
        metrics={"enabled": False},
    )  # fmt: skip


class StoreFault:
    """Makes the file store fail like a full or read-only disk while ``active``.

    ``kind``: ``enospc_weights`` / ``enospc_manifest`` (the disk fills while writing that file
    of the temp dir: half of it is written, then ENOSPC), ``enospc_latest`` (the version is
    renamed into place, then writing LATEST fails: the store must undo the version), or
    ``read_only`` (the temp dir cannot be created: EACCES, as on a chmod 0500 directory when
    not running as root, or EROFS-like mounts).
    """

    def __init__(self, kind: str, snapshots: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.kind, self.active, self.raised = kind, False, 0
        real_write, real_mkdir = file_store._write_durably, pathlib.Path.mkdir
        targets = {
            "enospc_weights": "model.safetensors",
            "enospc_manifest": "manifest.json",
            "enospc_latest": ".tmp-LATEST-",
        }

        def write_durably(path: Path, data: bytes) -> None:
            target = targets.get(self.kind)
            if self.active and target is not None and path.name.startswith(target):
                path.write_bytes(data[: len(data) // 2])
                self.raised += 1
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            real_write(path, data)

        def mkdir(path: pathlib.Path, *args: Any, **kwargs: Any) -> None:
            if self.active and self.kind == "read_only" and path.parent == snapshots:
                self.raised += 1
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            real_mkdir(path, *args, **kwargs)

        monkeypatch.setattr(file_store, "_write_durably", write_durably)
        monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)


@pytest.fixture
def chmod_blocks_writes(tmp_path: Path) -> bool:
    """Whether chmod 0500 really blocks writes here (not as root: root ignores it)."""
    probe = tmp_path / "probe"
    probe.mkdir()
    probe.chmod(0o500)
    try:
        (probe / "x").touch()
        blocked = False
    except PermissionError:
        blocked = True
    finally:
        probe.chmod(0o700)
    return blocked


def _by_partition(offsets: dict[TopicPartition, int]) -> dict[int, int]:
    """Next offsets of partitions 0 and 1 (-1001, Kafka's "none", where nothing was read)."""
    return {p: offsets.get(TopicPartition(tp.topic, p), -1001) for tp in offsets for p in (0, 1)}


def _file_hashes(directory: Path) -> dict[str, str]:
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file() and path.name != ".lock"
    }


@pytest.mark.integration
@pytest.mark.parametrize(
    "kind", ["enospc_weights", "enospc_manifest", "enospc_latest", "read_only"]
)
def test_snapshot_faults_keep_learning_and_never_commit_past_durable(
    kind: str,
    broker: EmbeddedBroker,
    unique_topic: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
    chmod_blocks_writes: bool,
    tmp_path: Path,
    no_driftd_env: None,
) -> None:
    topic, snapshots = unique_topic(partitions=2), tmp_path / "snapshots"
    group = f"store-faults-{kind}-{os.getpid()}-{id(tmp_path)}"
    produce(broker.bootstrap_servers, topic, good_payloads(3 * PHASE, seed=4))
    settings = _settings(
        snapshots, bootstrap_servers=[broker.bootstrap_servers], topics=[topic], group_id=group
    )
    fault = StoreFault(kind, snapshots, monkeypatch)
    registry = CollectorRegistry()
    trainer = build_trainer(settings, registry=registry)

    def failures() -> float:
        return sum(
            registry.get_sample_value("driftd_snapshot_failures_total", {"reason": reason}) or 0
            for reason in ("ENOSPC", "EACCES")  # errno names: disk full, permission denied
        )

    def committed() -> dict[int, int]:
        return committed_offsets(broker.bootstrap_servers, group, topic, 2)

    try:
        healthy = trainer.loop.run(StopWhen(max_events=PHASE, max_seconds=60))
        assert healthy.events_learned == PHASE
        before = audit_snapshot_dir(snapshots)
        durable = _by_partition(manifest_offsets(before.newest or {}))
        assert sum(manifest_offsets(before.newest or {}).values()) == PHASE
        assert committed() == durable
        files_before = _file_hashes(snapshots)

        real_chmod = kind == "read_only" and chmod_blocks_writes
        if real_chmod:
            snapshots.chmod(0o500)
        else:
            fault.active = True
        faulty = trainer.loop.run(StopWhen(max_events=2 * PHASE, max_seconds=60))
        if real_chmod:
            snapshots.chmod(0o755)
        fault.active = False
        assert faulty.events_learned == 2 * PHASE, "learning goes on while snapshots fail"
        assert failures() >= 2  # periodic ones and the one at the end of the run
        assert real_chmod or fault.raised == failures()
        assert _file_hashes(snapshots) == files_before, "previous snapshots and LATEST intact"
        after = audit_snapshot_dir(snapshots)
        assert (after.versions, after.latest, after.hidden) == (before.versions, before.latest, [])
        assert committed() == durable, "no offset committed past the durable snapshot"
        assert FileSnapshotReader(snapshots).load_latest() is not None

        failed = failures()
        print(f"{kind}: {faulty.events_learned - PHASE} events learned, {failed:.0f} failures")
        healed = trainer.loop.run(StopWhen(max_events=3 * PHASE, max_seconds=60))
        assert healed.events_learned == 3 * PHASE
        assert failures() == failed
        final = audit_snapshot_dir(snapshots)
        newest = final.newest
        assert newest is not None
        assert final.latest == final.versions[-1] > before.versions[-1]
        assert newest["events_learned"] == 3 * PHASE
        offsets = _by_partition(manifest_offsets(newest))
        assert sum(manifest_offsets(newest).values()) == 3 * PHASE
        assert committed() == offsets
    finally:
        snapshots.chmod(0o755)
        trainer.close()


CORRUPTIONS: dict[str, Callable[[Path], object]] = {
    "truncated_weights": lambda v: _truncate(v / "model.safetensors"),
    "garbled_manifest": lambda v: (v / "manifest.json").write_bytes(b'{"version": 2, "fi'),
    "sha256_mismatch": lambda v: _edit_manifest(
        v, lambda m: m["files"]["model.safetensors"].update(sha256="0" * 64)
    ),
    "missing_training_file": lambda v: (v / "training.safetensors").unlink(),
    "bit_flip": lambda v: _flip_a_byte(v / "model.safetensors"),
}


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def _edit_manifest(version_dir: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    manifest = json.loads((version_dir / "manifest.json").read_text())
    edit(manifest)
    (version_dir / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_corrupt_newest_snapshot_falls_back_to_the_previous_and_says_so(
    corruption: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, no_driftd_env: None
) -> None:
    snapshots = tmp_path / "snapshots"
    settings = _settings(snapshots)
    records = as_records("events", good_payloads(3 * PHASE, seed=6))
    first = build_trainer(settings, source=InMemoryRecordSource(records))
    first.run(StopWhen(max_events=PHASE))  # a snapshot every 64 events; keep=3 of them
    audit = audit_snapshot_dir(snapshots)
    newest, previous = audit.versions[-1], audit.versions[-2]
    previous_offset = audit.manifests[previous]["offsets"][0]["next_offset"]
    CORRUPTIONS[corruption](snapshots / f"{newest:010d}")

    caplog.set_level(logging.INFO, logger="driftd")
    resumed_state = build_trainer(settings, source=InMemoryRecordSource(records[previous_offset:]))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "skipping unreadable snapshot" in text and f"{newest:010d}" in text for text in warnings
    ), warnings
    resumed = [r for r in caplog.records if getattr(r, "event", None) == "resumed"]
    assert [getattr(r, "version", None) for r in resumed] == [previous]
    state = resumed_state.loop.state
    assert state.offsets == {TopicPartition("events", 0): previous_offset}
    progress = resumed_state.run(StopWhen(max_events=3 * PHASE - previous_offset))
    assert progress.events_learned == 3 * PHASE - previous_offset
    final = audit_snapshot_dir(snapshots)
    assert final.newest is not None
    assert final.newest["events_learned"] == 3 * PHASE  # the lost tail relearned exactly once
    assert final.versions[-1] > newest, "never reuses the corrupt version's number"
    assert final.latest == final.versions[-1]
