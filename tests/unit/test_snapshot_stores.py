"""Contract suite over every SnapshotStore, then file-store-only crash and corruption tests."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import pytest
import torch
from safetensors.torch import load as load_tensors

from driftd.adapters import file_snapshot_store
from driftd.adapters.file_snapshot_store import FileSnapshotStore, SnapshotError
from driftd.adapters.fsspec_snapshot_store import FsspecSnapshotStore
from driftd.adapters.memory_snapshot_store import InMemorySnapshotStore
from driftd.ports import Snapshot
from tests.conftest import S3_BUCKET

CREATED_AT = 1_700_000_000.5


class FakeClock:
    def monotonic(self) -> float:
        return 0.0

    def time(self) -> float:
        return CREATED_AT


class Store(Protocol):
    def save(self, snapshot: Snapshot, *, publish: bool = True) -> Snapshot: ...
    def load_latest(self) -> Snapshot | None: ...
    def load(self, version: int) -> Snapshot: ...
    def versions(self) -> list[int]: ...
    def latest_version(self) -> int | None: ...
    def load_newest(self) -> Snapshot | None: ...
    def location(self, version: int) -> str: ...


StoreFactory = Callable[[int], Store]


@pytest.fixture(params=["file", "memory", "s3"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    prefix = f"s3://{S3_BUCKET}/{uuid.uuid4().hex}/snapshots"  # a fresh prefix per test
    options = request.getfixturevalue("s3_options") if request.param == "s3" else {}

    def make(keep: int) -> Store:
        if request.param == "file":
            return FileSnapshotStore(tmp_path / "snapshots", keep=keep, clock=FakeClock())
        if request.param == "s3":
            return FsspecSnapshotStore(
                prefix, keep=keep, storage_options=options, clock=FakeClock()
            )
        return InMemorySnapshotStore(keep, clock=FakeClock())

    return make


def sample_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(4, 3, generator=generator, requires_grad=True)
    return {
        "layer.weight": weight,
        "layer.bias": torch.randn(4, generator=generator),
        "transposed": torch.randn(3, 5, generator=generator).t(),  # not contiguous
        "half": torch.randn(6, generator=generator).to(torch.bfloat16),
        "mask": torch.tensor([True, False, True]),
        "count": torch.tensor(7, dtype=torch.int64),  # 0-dim
        "empty": torch.empty(0, 2),
    }


def sample_training() -> dict[str, torch.Tensor]:
    return {
        "optimizer.state.0.exp_avg": torch.full((4, 3), 0.25),
        "optimizer.state.0.step": torch.tensor(3.0),
    }


def snapshot(version: int, **manifest: Any) -> Snapshot:
    return Snapshot(version, sample_weights(version), sample_training(), manifest)


def assert_tensors_equal(
    actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]
) -> None:
    assert actual.keys() == expected.keys()
    for key, tensor in expected.items():
        assert actual[key].dtype == tensor.dtype, key
        assert actual[key].shape == tensor.shape, key
        assert torch.equal(actual[key], tensor.detach()), key


# --- contract: every store -----------------------------------------------------------------


def test_empty_store_has_nothing(make_store: StoreFactory) -> None:
    store = make_store(3)
    assert store.load_latest() is None
    assert store.versions() == []
    assert store.latest_version() is None


def test_round_trip_is_bitwise_and_manifest_gains_store_fields(make_store: StoreFactory) -> None:
    store = make_store(3)
    user_manifest = {"architecture": {"kind": "mlp", "hidden": [8, 4]}, "offsets": {"t[0]": 42}}
    saved = store.save(Snapshot(5, sample_weights(), sample_training(), user_manifest))

    loaded = store.load_latest()
    assert loaded is not None
    assert loaded.version == 5
    assert_tensors_equal(dict(loaded.weights), sample_weights())
    assert_tensors_equal(dict(loaded.training), sample_training())
    assert loaded.manifest == saved.manifest
    assert loaded.manifest["architecture"] == {"kind": "mlp", "hidden": [8, 4]}
    assert loaded.manifest["offsets"] == {"t[0]": 42}
    assert loaded.manifest["version"] == 5
    assert loaded.manifest["created_at"] == CREATED_AT
    assert loaded.manifest["format"] == 1
    assert "files" in loaded.manifest


def test_given_created_at_is_kept_and_empty_training_loads_empty(make_store: StoreFactory) -> None:
    store = make_store(3)
    store.save(Snapshot(1, sample_weights(), {}, {"created_at": 12.0}))
    loaded = store.load(1)
    assert loaded.manifest["created_at"] == 12.0
    assert dict(loaded.training) == {}


def test_stored_state_is_isolated_from_callers(make_store: StoreFactory) -> None:
    store = make_store(3)
    weights = {"w": torch.zeros(3)}
    store.save(Snapshot(1, weights, {}, {}))
    weights["w"].add_(1.0)
    first = store.load(1)
    first.weights["w"].add_(5.0)  # type: ignore[index]
    assert torch.equal(store.load(1).weights["w"], torch.zeros(3))


def test_versions_are_listed_oldest_first(make_store: StoreFactory) -> None:
    store = make_store(10)
    for version in (3, 7, 12):
        store.save(snapshot(version))
    assert store.versions() == [3, 7, 12]
    assert store.latest_version() == 12
    assert_tensors_equal(dict(store.load(7).weights), sample_weights(7))


def test_retention_keeps_the_newest_k_including_latest(make_store: StoreFactory) -> None:
    store = make_store(2)
    for version in range(1, 5):
        store.save(snapshot(version))
    assert store.versions() == [3, 4]
    assert store.latest_version() == 4
    latest = store.load_latest()
    assert latest is not None
    assert latest.version == 4
    with pytest.raises(SnapshotError):
        store.load(1)


@pytest.mark.parametrize("version", [5, 4, 0])
def test_non_increasing_versions_are_refused(make_store: StoreFactory, version: int) -> None:
    store = make_store(3)
    store.save(snapshot(5))
    with pytest.raises(ValueError, match="not newer"):
        store.save(snapshot(version))
    assert store.versions() == [5]
    assert store.latest_version() == 5


def test_unserialisable_manifest_and_bad_arguments_are_refused(make_store: StoreFactory) -> None:
    store = make_store(3)
    with pytest.raises(ValueError, match="JSON"):
        store.save(Snapshot(1, sample_weights(), {}, {"bad": object()}))
    with pytest.raises(ValueError, match="version"):
        store.save(snapshot(-1))
    assert store.versions() == []
    with pytest.raises(ValueError, match="keep"):
        make_store(0)


# --- file store only -----------------------------------------------------------------------


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    return tmp_path / "snapshots"


def file_store(directory: Path, keep: int = 3) -> FileSnapshotStore:
    return FileSnapshotStore(directory, keep=keep, clock=FakeClock())


def test_layout_on_disk_matches_the_contract(directory: Path) -> None:
    store = file_store(directory)
    store.save(Snapshot(1, sample_weights(), {}, {}))
    saved = store.save(snapshot(42))

    assert sorted(p.name for p in directory.iterdir()) == [
        ".lock",
        "0000000001",
        "0000000042",
        "LATEST",
    ]
    assert (directory / "LATEST").read_text() == "0000000042\n"
    assert sorted(p.name for p in (directory / "0000000001").iterdir()) == [
        "manifest.json",
        "model.safetensors",
    ]
    version_dir = directory / "0000000042"
    assert sorted(p.name for p in version_dir.iterdir()) == [
        "manifest.json",
        "model.safetensors",
        "training.safetensors",
    ]
    manifest = json.loads((version_dir / "manifest.json").read_text())
    assert manifest == saved.manifest
    for name in ("model.safetensors", "training.safetensors"):
        data = (version_dir / name).read_bytes()
        assert manifest["files"][name] == {
            "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
        }
    assert_tensors_equal(
        load_tensors((version_dir / "model.safetensors").read_bytes()), sample_weights(42)
    )
    assert_tensors_equal(
        load_tensors((version_dir / "training.safetensors").read_bytes()), sample_training()
    )


def test_tied_weights_are_saved_as_copies(directory: Path) -> None:
    shared = torch.arange(6.0)
    file_store(directory).save(Snapshot(1, {"embed": shared, "head": shared, "view": shared[1:3]}))
    loaded = file_store(directory).load(1)
    assert torch.equal(loaded.weights["embed"], shared)
    assert torch.equal(loaded.weights["head"], shared)
    assert torch.equal(loaded.weights["view"], torch.tensor([1.0, 2.0]))


def test_commit_order_is_write_fsync_rename_fsync_then_latest(
    directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = file_store(directory)
    calls: list[str] = []
    module = file_snapshot_store
    write, fsync_dir, rename, replace = (
        module._write_durably,
        module._fsync_dir,
        os.rename,
        os.replace,
    )

    def name(path: Any) -> str:
        return "dir" if Path(path) == directory else Path(path).name.split("-")[0]

    monkeypatch.setattr(
        module, "_write_durably", lambda p, d: (calls.append(f"write {name(p)}"), write(p, d))
    )
    monkeypatch.setattr(
        module, "_fsync_dir", lambda p: (calls.append(f"fsync {name(p)}"), fsync_dir(p))
    )
    monkeypatch.setattr(
        os, "rename", lambda a, b: (calls.append(f"rename {name(b)}"), rename(a, b))
    )
    monkeypatch.setattr(
        os, "replace", lambda a, b: (calls.append(f"replace {name(b)}"), replace(a, b))
    )
    store.save(snapshot(1))
    assert calls == [
        "write model.safetensors",
        "write training.safetensors",
        "write manifest.json",
        "fsync .tmp",
        "rename 0000000001",
        "fsync dir",
        "write .tmp",
        "replace LATEST",
        "fsync dir",
    ]


def test_stale_temp_entries_are_removed_at_start(directory: Path) -> None:
    file_store(directory).save(snapshot(1))
    (directory / ".tmp-0000000002-dead").mkdir()
    (directory / ".tmp-0000000002-dead" / "model.safetensors").write_bytes(b"half")
    (directory / ".tmp-LATEST-dead").write_text("0000000002")
    store = file_store(directory)
    assert not list(directory.glob(".tmp-*"))
    assert store.versions() == [1]
    assert store.latest_version() == 1


def test_temp_entries_of_a_live_writer_are_left_alone(directory: Path) -> None:
    file_store(directory)
    in_progress = directory / ".tmp-0000000002-live"
    in_progress.mkdir()
    descriptor = os.open(directory / ".lock", os.O_RDWR)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)  # what a writer in another process holds
        file_store(directory)  # e.g. an inference worker starting up
        assert in_progress.is_dir()
    finally:
        os.close(descriptor)


def corrupt_flip_byte(directory: Path) -> None:
    path = directory / "0000000002" / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def corrupt_truncate(directory: Path) -> None:
    path = directory / "0000000002" / "model.safetensors"
    path.write_bytes(path.read_bytes()[:20])


def corrupt_delete_manifest(directory: Path) -> None:
    (directory / "0000000002" / "manifest.json").unlink()


def corrupt_manifest_json(directory: Path) -> None:
    (directory / "0000000002" / "manifest.json").write_text("{not json")


def corrupt_manifest_version(directory: Path) -> None:
    path = directory / "0000000002" / "manifest.json"
    path.write_text(path.read_text().replace('"version": 2', '"version": 3'))


def corrupt_latest_names_missing_version(directory: Path) -> None:
    (directory / "LATEST").write_text("0000000009\n")


@pytest.mark.parametrize(
    ("corrupt", "reason"),
    [
        (corrupt_flip_byte, "sha256 mismatch"),
        (corrupt_truncate, "bytes, manifest says"),
        (corrupt_delete_manifest, "cannot read"),
        (corrupt_manifest_json, "not valid JSON"),
        (corrupt_manifest_version, "manifest names version 3"),
    ],
)
def test_corrupt_newest_falls_back_to_previous_with_a_warning(
    directory: Path, caplog: pytest.LogCaptureFixture, corrupt: Callable[[Path], None], reason: str
) -> None:
    store = file_store(directory)
    store.save(snapshot(1))
    store.save(snapshot(2))
    corrupt(directory)
    with caplog.at_level(logging.WARNING):
        loaded = store.load_latest()
    assert loaded is not None
    assert loaded.version == 1
    assert_tensors_equal(dict(loaded.weights), sample_weights(1))
    assert any(reason in record.getMessage() for record in caplog.records), caplog.text


def test_load_of_a_corrupt_version_raises_a_clear_error(directory: Path) -> None:
    store = file_store(directory)
    store.save(snapshot(1))
    store.save(snapshot(2))
    corrupt_flip_byte(directory)
    with pytest.raises(SnapshotError, match=r"0000000002/model.safetensors: sha256 mismatch"):
        store.load(2)


@pytest.mark.parametrize("latest", ["garbage", None, "0000000009"])
def test_unusable_latest_falls_back_to_the_newest_listed_version(
    directory: Path, caplog: pytest.LogCaptureFixture, latest: str | None
) -> None:
    store = file_store(directory)
    store.save(snapshot(1))
    store.save(snapshot(2))
    if latest is None:
        (directory / "LATEST").unlink()
    else:
        (directory / "LATEST").write_text(latest)
    with caplog.at_level(logging.WARNING):
        loaded = store.load_latest()
    assert loaded is not None
    assert loaded.version == 2
    assert "LATEST" in caplog.text or "0000000009: cannot read" in caplog.text


def test_reader_retries_when_a_writer_deletes_what_it_was_reading(
    directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = file_store(directory, keep=1)
    writer.save(snapshot(2))
    reader = file_store(directory, keep=1)
    load = reader.load

    def load_racing_a_writer(version: int) -> Snapshot:
        if version == 2:
            writer.save(snapshot(3))  # retention deletes 2 under the reader
        return load(version)

    monkeypatch.setattr(reader, "load", load_racing_a_writer)
    loaded = reader.load_latest()
    assert loaded is not None
    assert loaded.version == 3


def test_nothing_readable_returns_none(directory: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = file_store(directory)
    store.save(snapshot(1))
    (directory / "0000000001" / "model.safetensors").write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        assert store.load_latest() is None
    assert "0000000001" in caplog.text


def assert_previous_state_intact(directory: Path, store: FileSnapshotStore) -> None:
    assert store.versions() == [1]
    assert (directory / "LATEST").read_text() == "0000000001\n"
    assert not list(directory.glob(".tmp-*"))
    loaded = store.load_latest()
    assert loaded is not None
    assert loaded.version == 1
    assert_tensors_equal(dict(loaded.weights), sample_weights(1))


@pytest.mark.parametrize("failing_file", ["training.safetensors", "manifest.json", ".tmp-LATEST"])
def test_failed_save_leaves_previous_snapshots_and_latest_intact(
    directory: Path, monkeypatch: pytest.MonkeyPatch, failing_file: str
) -> None:
    store = file_store(directory)
    store.save(snapshot(1))
    write = file_snapshot_store._write_durably

    def disk_full_on(path: Path, data: bytes) -> None:
        if path.name.startswith(failing_file):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        write(path, data)

    monkeypatch.setattr(file_snapshot_store, "_write_durably", disk_full_on)
    with pytest.raises(OSError, match="No space left"):
        store.save(snapshot(2))
    assert_previous_state_intact(directory, store)

    monkeypatch.setattr(file_snapshot_store, "_write_durably", write)
    store.save(snapshot(2))  # the same version succeeds once the disk has room
    assert store.versions() == [1, 2]


def test_a_failed_latest_fsync_restores_the_previous_latest(
    directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = file_store(directory)
    store.save(snapshot(1))
    fsync_dir = file_snapshot_store._fsync_dir

    def failing_after_latest_replaced(path: Path) -> None:
        if (directory / "LATEST").read_text() == "0000000002\n":
            raise OSError(errno.EIO, "Input/output error", str(path))
        fsync_dir(path)

    monkeypatch.setattr(file_snapshot_store, "_fsync_dir", failing_after_latest_replaced)
    with pytest.raises(OSError, match="Input/output"):
        store.save(snapshot(2))
    monkeypatch.setattr(file_snapshot_store, "_fsync_dir", fsync_dir)
    assert_previous_state_intact(directory, store)


def test_a_file_blocking_the_version_directory_fails_the_save_cleanly(directory: Path) -> None:
    store = file_store(directory)
    store.save(snapshot(1))
    (directory / "0000000002").write_bytes(b"in the way")
    with pytest.raises(NotADirectoryError):
        store.save(snapshot(2))
    assert_previous_state_intact(directory, store)
    assert (directory / "0000000002").read_bytes() == b"in the way"


def test_after_falling_back_past_a_manifestless_version_its_number_can_be_saved_again(
    directory: Path,
) -> None:
    store = file_store(directory)
    store.save(snapshot(1))
    store.save(snapshot(2))
    corrupt_delete_manifest(directory)
    restored = store.load_latest()
    assert restored is not None
    assert restored.version == 1
    store.save(snapshot(restored.version + 1))
    reloaded = store.load_latest()
    assert reloaded is not None
    assert reloaded.version == 2
    assert_tensors_equal(dict(reloaded.weights), sample_weights(2))


# --- contract: published (LATEST) vs newest durable ------------------------------------------


def test_an_unpublished_save_is_durable_but_latest_stays(make_store: StoreFactory) -> None:
    store = make_store(5)
    store.save(snapshot(1))
    saved = store.save(snapshot(2), publish=False)
    assert saved.manifest["published"] is False
    assert store.versions() == [1, 2]
    assert store.latest_version() == 1
    latest = store.load_latest()
    assert latest is not None
    assert latest.version == 1
    assert latest.manifest["published"] is True
    newest = store.load_newest()
    assert newest is not None
    assert newest.version == 2
    assert newest.manifest["published"] is False
    assert_tensors_equal(dict(newest.weights), sample_weights(2))
    assert_tensors_equal(dict(newest.training), sample_training())


def test_nothing_published_yet_means_no_latest_but_a_newest(make_store: StoreFactory) -> None:
    store = make_store(3)
    store.save(snapshot(1), publish=False)
    assert store.load_latest() is None
    assert store.latest_version() is None
    newest = store.load_newest()
    assert newest is not None
    assert newest.version == 1


def test_retention_never_deletes_the_published_version(make_store: StoreFactory) -> None:
    store = make_store(2)
    store.save(snapshot(1))
    for version in range(2, 7):
        store.save(snapshot(version), publish=False)
    assert store.versions() == [1, 5, 6], "the newest two plus the published one"
    latest = store.load_latest()
    assert latest is not None
    assert latest.version == 1
    store.save(snapshot(7))  # publishing a newer one lets the old published one expire
    assert store.versions() == [6, 7]
    assert store.latest_version() == 7


def test_location_names_the_version(make_store: StoreFactory) -> None:
    store = make_store(2)
    store.save(snapshot(3))
    assert store.location(3).endswith("0000000003")


def test_a_reader_never_serves_an_unpublished_version(directory: Path) -> None:
    from driftd.adapters.file_snapshot_reader import FileSnapshotReader

    store = file_store(directory)
    store.save(snapshot(1), publish=False)
    reader = FileSnapshotReader(directory, weights_only=True)
    assert reader.load_latest() is None
    with pytest.raises(SnapshotError, match="not published") as refused:
        reader.load(1)
    assert refused.value.reason == "unpublished"
    store.save(snapshot(2))
    store.save(snapshot(3), publish=False)
    (directory / "LATEST").unlink()  # even falling back without LATEST skips unpublished ones
    loaded = reader.load_latest()
    assert loaded is not None
    assert loaded.version == 2
    assert FileSnapshotReader(directory, include_unpublished=True).load(3).version == 3


def test_the_unpublished_commit_order_skips_latest(
    directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = file_store(directory)
    store.save(snapshot(1))
    replaced: list[str] = []
    replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (replaced.append(str(b)), replace(a, b)))
    store.save(snapshot(2), publish=False)
    assert replaced == []
    assert (directory / "LATEST").read_text() == "0000000001\n"
