"""Shared pieces of the fault suite: events, broker-side checks, snapshot-directory audits.

Generic on purpose (the broker-outage, fuzzing and soak tests use them too). Everything here
checks the system from the outside: offsets through an independent Kafka client
(confluent-kafka), snapshots by re-hashing the files their manifest lists.

Heavier variants run only with ``DRIFTD_FAULTS_HEAVY=1`` (see :func:`heavy`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import torch
from confluent_kafka import OFFSET_BEGINNING, Consumer
from confluent_kafka import TopicPartition as ConfluentTopicPartition
from safetensors.torch import load as load_tensors

from driftd.records import Record, TopicPartition
from driftd.tools.streams import DriftingStream
from tests.integration.conftest import start_driftd
from tests.integration.driftd_process import committed_offsets

# The subprocess fixture of the integration tests and its broker-side check, shared here.
__all__ = ["committed_offsets", "start_driftd"]

VERSION_NAME = re.compile(r"\d{10}")


def heavy() -> bool:
    """Whether the heavier variants were asked for (``DRIFTD_FAULTS_HEAVY=1``)."""
    return os.environ.get("DRIFTD_FAULTS_HEAVY", "") not in ("", "0", "false")


def trials(light: int, heavy_count: int) -> int:
    """How many seeded trials to run: ``light`` normally, ``heavy_count`` in heavy mode."""
    return heavy_count if heavy() else light


class SimulatedCrash(BaseException):
    """Raised at an injected crash point. A BaseException, so no ``except Exception`` (or
    ``except OSError`` clean-up) in driftd runs: what is on disk stays as a kill -9 leaves it."""


def good_payloads(n: int, *, seed: int = 11, change_every: int | None = None) -> list[bytes]:
    """``n`` labelled JSON events of the built-in drifting stream (deterministic per seed)."""
    stream = DriftingStream(n_events=n, change_every=change_every or max(1, n // 2), seed=seed)
    return [orjson.dumps(event) for event in stream.events()]


def with_bad_records(good: Sequence[bytes], every: int) -> tuple[list[bytes], list[bytes]]:
    """``good`` with a distinct bad record after every ``every - 1`` good ones.

    Returns:
        The mixed stream, and the bad records in it (not JSON, wrong dimension, no ``x``).
    """
    kinds = (b"not json %d", b'{"x": [1.0, 2.0], "y": 0, "id": "%d"}', b'{"y": 1, "id": "%d"}')
    mixed: list[bytes] = []
    bad: list[bytes] = []
    for payload in good:
        if len(mixed) % every == every - 1:
            bad.append(kinds[len(bad) % len(kinds)] % len(bad))
            mixed.append(bad[-1])
        mixed.append(payload)
    return mixed, bad


def read_values(bootstrap: str, topic: str, expected: int, timeout: float = 20.0) -> list[bytes]:
    """Values of partition 0 of ``topic`` from the start (no group join), up to ``expected``
    of them or until ``timeout`` passes with nothing new; read with confluent-kafka."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex})
    consumer.assign([ConfluentTopicPartition(topic, 0, OFFSET_BEGINNING)])
    values: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while len(values) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is not None and not message.error():
                values.append(message.value() or b"")
        while (message := consumer.poll(0.5)) is not None:  # anything beyond: duplicates
            if not message.error():
                values.append(message.value() or b"")
    finally:
        consumer.close()
    return values


def as_records(topic: str, payloads: Sequence[bytes], partition: int = 0) -> list[Record]:
    """The payloads as one partition's records (offsets 0..n-1), for in-memory reference runs."""
    return [Record(topic, partition, offset, value) for offset, value in enumerate(payloads)]


def manifest_offsets(manifest: Mapping[str, Any]) -> dict[TopicPartition, int]:
    """The next offset per partition a manifest records."""
    return {
        TopicPartition(entry["topic"], entry["partition"]): entry["next_offset"]
        for entry in manifest.get("offsets", [])
    }


@dataclass
class SnapshotDirAudit:
    """What a snapshot directory holds, every visible version verified file by file.

    Attributes:
        versions: Visible versions (ten-digit names), oldest first; each verified complete.
        latest: The version ``LATEST`` names (None: no LATEST yet).
        manifests: Each visible version's manifest.
        hidden: Names of the ``.tmp-*`` entries (interrupted saves, invisible to readers).
    """

    versions: list[int] = field(default_factory=list)
    latest: int | None = None
    manifests: dict[int, dict[str, Any]] = field(default_factory=dict)
    hidden: list[str] = field(default_factory=list)

    @property
    def newest(self) -> dict[str, Any] | None:
        """The newest visible version's manifest (published or not)."""
        return self.manifests[self.versions[-1]] if self.versions else None


def audit_snapshot_dir(directory: Path) -> SnapshotDirAudit:
    """Verify every visible version and LATEST; fail the test on anything half-written.

    A visible version must have a manifest naming it, and every file the manifest lists must
    exist with the listed size and sha256; ``LATEST`` must name one of those versions. Only
    ``.tmp-*`` entries (what a reader never looks at) may be incomplete.
    """
    audit = SnapshotDirAudit()
    if not directory.exists():
        return audit
    for entry in sorted(directory.iterdir()):
        if entry.name.startswith(".tmp-"):
            audit.hidden.append(entry.name)
        elif VERSION_NAME.fullmatch(entry.name):
            manifest = _verified_manifest(entry)
            audit.versions.append(int(entry.name))
            audit.manifests[int(entry.name)] = manifest
        else:
            assert entry.name in ("LATEST", ".lock"), f"unexpected entry {entry}"
    latest = directory / "LATEST"
    if latest.exists():
        text = latest.read_text().strip()
        assert VERSION_NAME.fullmatch(text), f"LATEST holds {text!r}"
        audit.latest = int(text)
        assert audit.latest in audit.versions, f"LATEST names {text}, which is not complete"
    return audit


def _verified_manifest(version_dir: Path) -> dict[str, Any]:
    manifest_path = version_dir / "manifest.json"
    assert manifest_path.is_file(), f"visible version without a manifest: {version_dir}"
    manifest = json.loads(manifest_path.read_bytes())
    assert manifest["version"] == int(version_dir.name)
    assert "model.safetensors" in manifest["files"]
    for name, entry in manifest["files"].items():
        data = (version_dir / name).read_bytes()
        assert len(data) == entry["bytes"], f"{version_dir}/{name}: size differs from manifest"
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], f"{version_dir}/{name}"
    return dict(manifest)


def snapshot_tensors(directory: Path, version: int) -> dict[str, torch.Tensor]:
    """Every tensor of one version (weights and training state), keyed ``file:name``."""
    tensors: dict[str, torch.Tensor] = {}
    version_dir = directory / f"{version:010d}"
    for name in ("model.safetensors", "training.safetensors"):
        path = version_dir / name
        if path.exists():
            for key, value in load_tensors(path.read_bytes()).items():
                tensors[f"{name}:{key}"] = value
    return tensors


def assert_same_tensors(
    actual: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]
) -> None:
    """Bit-for-bit equality of two tensor dicts (same keys, same values)."""
    assert sorted(actual) == sorted(expected)
    differing = [key for key in expected if not torch.equal(actual[key], expected[key])]
    assert not differing, f"tensors differ from the uninterrupted run: {differing[:5]}"


def wait_until(
    condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.05
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(interval)


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc), e.g. driftd's consumer process."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited while we looked
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def process_gone(pid: int) -> bool:
    """True when ``pid`` has exited (absent, or a zombie nobody reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


@pytest.fixture
def fresh_group() -> Callable[[], str]:
    """Factory of unique consumer-group ids."""
    return lambda: f"faults-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def no_driftd_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process settings see no DRIFTD_* variables of the developer's shell."""
    for name in list(os.environ):
        if name.startswith("DRIFTD_") and name != "DRIFTD_FAULTS_HEAVY":
            monkeypatch.delenv(name)
