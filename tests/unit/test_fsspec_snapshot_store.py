"""The S3 store (fsspec) beyond the contract suite: partial writes, corruption, settings."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from typing import Any

import pytest

from driftd.adapters.file_snapshot_store import FileSnapshotStore, SnapshotError
from driftd.adapters.fsspec_snapshot_store import FsspecSnapshotStore
from driftd.app import make_snapshot_store
from driftd.settings.root import load_settings
from tests.conftest import S3_BUCKET
from tests.fakes import FakeClock
from tests.unit.test_snapshot_stores import assert_tensors_equal, sample_weights, snapshot


@pytest.fixture
def store(s3_options: dict[str, Any]) -> FsspecSnapshotStore:
    url = f"s3://{S3_BUCKET}/{uuid.uuid4().hex}"
    return FsspecSnapshotStore(url, keep=3, storage_options=s3_options, clock=FakeClock())


def key(store: FsspecSnapshotStore, *parts: str) -> str:
    return "/".join((store.root, *parts))


def test_layout_matches_the_file_store(store: FsspecSnapshotStore) -> None:
    store.save(snapshot(1))
    saved = store.save(snapshot(2), publish=False)
    store.fs.invalidate_cache()
    names = sorted(path.split("/", 2)[-1] for path in store.fs.find(store.root))
    assert names == [
        "0000000001/manifest.json",
        "0000000001/model.safetensors",
        "0000000001/training.safetensors",
        "0000000002/manifest.json",
        "0000000002/model.safetensors",
        "0000000002/training.safetensors",
        "LATEST",
    ]
    assert store.fs.cat_file(key(store, "LATEST")) == b"0000000001\n"
    manifest = json.loads(store.fs.cat_file(key(store, "0000000002", "manifest.json")))
    assert manifest == saved.manifest
    assert manifest["published"] is False


def test_objects_without_a_manifest_are_not_a_version(store: FsspecSnapshotStore) -> None:
    store.save(snapshot(1))
    store.fs.pipe_file(key(store, "0000000002", "model.safetensors"), b"half an upload")
    assert store.versions() == [1]
    newest = store.load_newest()
    assert newest is not None
    assert newest.version == 1


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("flip", "sha256 mismatch"),
        ("truncate", "bytes, manifest says"),
        ("manifest", "not valid JSON"),
    ],
)
def test_a_corrupt_version_is_not_trusted(
    store: FsspecSnapshotStore, caplog: pytest.LogCaptureFixture, damage: str, reason: str
) -> None:
    store.save(snapshot(1))
    store.save(snapshot(2))
    weights = key(store, "0000000002", "model.safetensors")
    data = store.fs.cat_file(weights)
    if damage == "flip":
        store.fs.pipe_file(weights, data[:-1] + bytes([data[-1] ^ 0xFF]))
    elif damage == "truncate":
        store.fs.pipe_file(weights, data[:20])
    else:
        store.fs.pipe_file(key(store, "0000000002", "manifest.json"), b"{not json")
    with pytest.raises(SnapshotError, match=reason):
        store.load(2)
    with caplog.at_level(logging.WARNING):
        latest = store.load_latest()
        newest = store.load_newest()
    assert latest is not None
    assert newest is not None
    assert (latest.version, newest.version) == (1, 1)
    assert_tensors_equal(dict(latest.weights), sample_weights(1))
    assert reason in caplog.text


def test_a_failed_publish_removes_the_new_version_and_keeps_latest(
    store: FsspecSnapshotStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.save(snapshot(1))
    pipe = store.fs.pipe_file

    def failing_on_latest(path: str, data: bytes, **kwargs: Any) -> None:
        if path.endswith("/LATEST"):
            raise PermissionError("access denied")
        pipe(path, data, **kwargs)

    monkeypatch.setattr(store.fs, "pipe_file", failing_on_latest)
    with pytest.raises(OSError, match="access denied"):
        store.save(snapshot(2))
    monkeypatch.undo()
    assert store.versions() == [1]
    assert store.latest_version() == 1
    store.save(snapshot(2))  # the same version succeeds afterwards
    assert store.versions() == [1, 2]


def test_settings_select_the_store_by_the_dir(s3_options: dict[str, Any], tmp_path: Path) -> None:
    url = f"s3://{S3_BUCKET}/{uuid.uuid4().hex}/snap"
    settings = load_settings(
        snapshots={"dir": url, "storage_options": json.dumps(s3_options), "keep": 2}
    )
    assert settings.snapshots.url == url
    chosen = make_snapshot_store(settings, FakeClock())
    assert isinstance(chosen, FsspecSnapshotStore)
    assert chosen.keep == 2
    chosen.save(snapshot(1))
    assert chosen.location(1) == f"{url}/0000000001"

    local = load_settings(snapshots={"dir": str(tmp_path / "snap")})
    assert local.snapshots.dir == tmp_path / "snap"
    assert local.snapshots.url is None
    assert isinstance(make_snapshot_store(local, FakeClock()), FileSnapshotStore)


def test_storage_options_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRIFTD_SNAPSHOTS__DIR", "s3://bucket/prefix")
    monkeypatch.setenv("DRIFTD_SNAPSHOTS__STORAGE_OPTIONS", '{"anon": false, "key": "k"}')
    settings = load_settings()
    assert settings.snapshots.dir == "s3://bucket/prefix"
    assert settings.snapshots.storage_options == {"anon": False, "key": "k"}
