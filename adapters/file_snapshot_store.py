"""Snapshots as directories of safetensors files, committed atomically.

Layout under ``directory``::

    0000000042/model.safetensors     weights: all an inference process needs
    0000000042/training.safetensors  optimizer moments etc. (absent when there are none)
    0000000042/manifest.json         the snapshot's manifest + version, created_at, files, format
    LATEST                           the directory name of the newest committed version

Commit order of :meth:`FileSnapshotStore.save`, each step durable before the next:

1. write the tensor files and manifest.json into ``.tmp-<version>-<random>/``, fsync each file;
2. fsync the temp dir;
3. ``os.rename`` it to ``<version>/``: a version directory appears complete or not at all;
4. fsync the snapshot directory;
5. only when the snapshot is published: write ``LATEST`` via a temp file + fsync +
   ``os.replace`` + fsync of the directory: the publish point. A crash before it leaves
   ``LATEST`` naming the previous version (the new one is durable; training resumes from it);
6. retention: expired versions are renamed to ``.tmp-gc-*`` (so readers never see half a
   version), then deleted. The published version is never deleted, whatever its age.

A snapshot the quality gate refused is saved the same way minus step 5; its manifest says
``"published": false``. The trainer resumes from the newest durable version
(:meth:`~FileSnapshotReader.load_newest`); readers follow ``LATEST``.

A new store removes the ``.tmp-*`` entries an interrupted save left. Writers hold an ``flock``
on ``.lock`` while saving, so a store constructed by another process never removes the work of
a live writer. Inference processes use the read side alone,
:class:`~driftd.adapters.file_snapshot_reader.FileSnapshotReader`, which creates, locks and
deletes nothing. Nothing goes through pickle.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import secrets
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import save as save_tensors

from driftd.adapters.file_snapshot_reader import (
    FORMAT,
    INT8_FILE,
    LATEST_FILE,
    MANIFEST_FILE,
    TRAINING_FILE,
    WEIGHTS_FILE,
    FileSnapshotReader,
    SnapshotError,
    version_name,
)
from driftd.ports import Clock, Snapshot, SystemClock

__all__ = [
    "FORMAT",
    "LATEST_FILE",
    "LOCK_FILE",
    "MANIFEST_FILE",
    "TEMP_PREFIX",
    "TRAINING_FILE",
    "WEIGHTS_FILE",
    "FileSnapshotReader",
    "FileSnapshotStore",
    "SnapshotError",
    "tensors_to_bytes",
    "version_name",
]

logger = logging.getLogger(__name__)

TEMP_PREFIX = ".tmp-"
LOCK_FILE = ".lock"


def tensors_to_bytes(tensors: Mapping[str, torch.Tensor]) -> bytes:
    """Serialise tensors with safetensors: detached, CPU, contiguous, shared memory unshared."""
    prepared: dict[str, torch.Tensor] = {}
    seen_storage: set[int] = set()
    for key, tensor in tensors.items():
        value = tensor.detach().to("cpu").contiguous()
        pointer = value.untyped_storage().data_ptr()
        if value.numel() and pointer in seen_storage:
            value = value.clone()  # tied weights: safetensors refuses tensors sharing memory
        seen_storage.add(pointer)
        prepared[key] = value
    return save_tensors(prepared)


def snapshot_files(snapshot: Snapshot) -> dict[str, bytes]:
    """The tensor files of a snapshot, serialised (the manifest, listing them, comes on top)."""
    files = {WEIGHTS_FILE: tensors_to_bytes(snapshot.weights)}
    if snapshot.training:
        files[TRAINING_FILE] = tensors_to_bytes(snapshot.training)
    if snapshot.serving:
        files[INT8_FILE] = tensors_to_bytes(snapshot.serving)
    return files


def manifest_bytes(
    snapshot: Snapshot, files: Mapping[str, bytes], *, publish: bool, created_at: float
) -> bytes:
    """The manifest as stored: the snapshot's, plus version, format, published and file hashes.

    Each file gets its sha256 and size; ``created_at`` is added only where the snapshot has none.

    Raises:
        ValueError: The manifest is not JSON-serialisable.
    """
    manifest = {"created_at": created_at, **snapshot.manifest}
    manifest.update(
        version=snapshot.version,
        format=FORMAT,
        published=publish,
        files={
            file_name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
            for file_name, data in files.items()
        },
    )
    try:
        return json.dumps(manifest, indent=2, sort_keys=True).encode()
    except TypeError as error:
        raise ValueError(f"snapshot manifest is not JSON-serialisable: {error}") from error


def _write_durably(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file at ``path`` and fsync it."""
    with open(path, "xb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _fsync_dir(path: Path) -> None:
    """Make a directory's entries (creations, renames) durable."""
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class FileSnapshotStore(FileSnapshotReader):
    """A :class:`~driftd.ports.SnapshotStore` on a local (or mounted) filesystem.

    Args:
        directory: Where versions live; created if missing.
        keep: How many complete versions to keep (at least 1); older ones are deleted, except
            the published one (LATEST), which is always kept.
        clock: Source of ``created_at`` when the manifest has none.
    """

    def __init__(self, directory: Path, *, keep: int, clock: Clock | None = None) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        super().__init__(directory, include_unpublished=True)
        self.keep = keep
        self._clock = clock or SystemClock()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._remove_stale_temp_entries()

    def save(self, snapshot: Snapshot, *, publish: bool = True) -> Snapshot:
        """Write ``snapshot`` atomically, point LATEST at it if ``publish``, apply retention.

        Raises:
            ValueError: The version is not newer than every stored one, or the manifest is not
                JSON-serialisable.
            OSError: The snapshot could not be written; stored snapshots and LATEST are intact.
        """
        name = version_name(snapshot.version)
        files = snapshot_files(snapshot)
        files[MANIFEST_FILE] = manifest_bytes(
            snapshot, files, publish=publish, created_at=self._clock.time()
        )
        with self._lock(blocking=True):
            newest = self.versions()[-1:]
            if newest and snapshot.version <= newest[0]:
                raise ValueError(
                    f"snapshot version {snapshot.version} is not newer than stored {newest[0]}"
                )
            self._commit(name, files, publish=publish)
            self._apply_retention()
        # Return the manifest as a reader will see it (tuples become lists, ...).
        stored_manifest = json.loads(files[MANIFEST_FILE])
        return Snapshot(
            snapshot.version, snapshot.weights, snapshot.training, stored_manifest, snapshot.serving
        )

    def _commit(self, name: str, files: Mapping[str, bytes], *, publish: bool) -> None:
        """Steps 1-5 of the commit order; on OSError undo everything, then re-raise."""
        temp = self.directory / f"{TEMP_PREFIX}{name}-{secrets.token_hex(4)}"
        final = self.directory / name
        previous_latest = self.read_latest_text()
        renamed = False
        try:
            temp.mkdir()  # not mkdtemp: its 0700 mode would lock out readers of other users
            for file_name, data in files.items():
                _write_durably(temp / file_name, data)
            _fsync_dir(temp)
            if final.is_dir() and not final.is_symlink():
                # Never one of ours (our version dirs appear complete, by rename): debris that
                # load_latest skipped, e.g. a version whose manifest was deleted.
                logger.warning("replacing version directory %s: it has no manifest", final)
                _remove_tree(final)
            os.rename(temp, final)
            renamed = True
            _fsync_dir(self.directory)
            if publish:
                self._write_latest(name)
        except OSError:
            try:
                shutil.rmtree(temp, ignore_errors=True)
                if renamed and self.read_latest_text() == name:  # replaced, not durably
                    if previous_latest is None:
                        (self.directory / LATEST_FILE).unlink()
                    else:
                        self._write_latest(previous_latest)
                if renamed:
                    _remove_tree(final)
            except OSError as cleanup_error:
                logger.warning("could not undo failed save of %s: %s", name, cleanup_error)
            raise

    def _write_latest(self, name: str) -> None:
        temp = self.directory / f"{TEMP_PREFIX}{LATEST_FILE}-{secrets.token_hex(4)}"
        try:
            _write_durably(temp, f"{name}\n".encode())
            os.replace(temp, self.directory / LATEST_FILE)
        except OSError:
            temp.unlink(missing_ok=True)
            raise
        _fsync_dir(self.directory)

    def _apply_retention(self) -> None:
        """Delete all but the newest ``keep`` versions; never the one LATEST names."""
        protected = self.latest_version()
        for version in self.versions()[: -self.keep]:
            if version == protected:
                continue
            name = version_name(version)
            try:
                _remove_tree(self.directory / name)
            except OSError as error:  # the new snapshot is committed; only cleanup failed
                logger.warning("could not delete expired snapshot %s: %s", name, error)

    def _remove_stale_temp_entries(self) -> None:
        """Remove ``.tmp-*`` entries a crashed writer left, unless a writer is active now."""
        try:
            with self._lock(blocking=False) as acquired:
                if not acquired:
                    return  # a live writer owns the temp entries
                for entry in self.directory.glob(f"{TEMP_PREFIX}*"):
                    logger.info("removing %s left by an interrupted save", entry)
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry)
                    else:
                        entry.unlink()
        except OSError as error:  # e.g. a read-only mount in an inference pod
            logger.warning("could not clean up %s: %s", self.directory, error)

    @contextmanager
    def _lock(self, *, blocking: bool) -> Iterator[bool]:
        """Hold the writers' flock; yields False when non-blocking and another process holds it."""
        descriptor = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
                acquired = True
            except BlockingIOError:
                acquired = False
            yield acquired
        finally:
            os.close(descriptor)  # closing releases the lock


def _remove_tree(path: Path) -> None:
    """Rename ``path`` out of the version namespace (readers never see half), then delete it."""
    grave = path.with_name(f"{TEMP_PREFIX}gc-{path.name}-{secrets.token_hex(4)}")
    os.rename(path, grave)
    shutil.rmtree(grave)
