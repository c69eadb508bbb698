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
5. write ``LATEST`` via a temp file + fsync + ``os.replace`` + fsync of the directory: the
   commit point. A crash before it leaves ``LATEST`` naming the previous version;
6. retention: expired versions are renamed to ``.tmp-gc-*`` (so readers never see half a
   version), then deleted.

A new store removes the ``.tmp-*`` entries an interrupted save left. Writers hold an ``flock``
on ``.lock`` while saving, so a store constructed by another process (an inference worker)
never removes the work of a live writer. Nothing goes through pickle.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import safetensors
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from driftd.ports import Clock, Snapshot, SystemClock

logger = logging.getLogger(__name__)

FORMAT = 1
WEIGHTS_FILE = "model.safetensors"
TRAINING_FILE = "training.safetensors"
MANIFEST_FILE = "manifest.json"
LATEST_FILE = "LATEST"
TEMP_PREFIX = ".tmp-"
LOCK_FILE = ".lock"
_VERSION_NAME = re.compile(r"\d{10}")
_MAX_VERSION = 10**10 - 1


class SnapshotError(Exception):
    """A snapshot is missing, incomplete or corrupt; the message says which and why."""


def version_name(version: int) -> str:
    """Return the directory name of ``version``: ten zero-padded digits, so names sort."""
    if not 0 <= version <= _MAX_VERSION:
        raise ValueError(f"snapshot version must be in [0, {_MAX_VERSION}], got {version}")
    return f"{version:010d}"


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


class FileSnapshotStore:
    """A :class:`~driftd.ports.SnapshotStore` on a local (or mounted) filesystem.

    Args:
        directory: Where versions live; created if missing.
        keep: How many complete versions to keep (at least 1); older ones are deleted.
        clock: Source of ``created_at`` when the manifest has none.
    """

    def __init__(self, directory: Path, *, keep: int, clock: Clock | None = None) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        self.directory = Path(directory)
        self.keep = keep
        self._clock = clock or SystemClock()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._remove_stale_temp_entries()

    def save(self, snapshot: Snapshot) -> Snapshot:
        """Write ``snapshot`` atomically, point LATEST at it, then apply retention.

        Raises:
            ValueError: The version is not newer than every stored one, or the manifest is not
                JSON-serialisable.
            OSError: The snapshot could not be written; stored snapshots and LATEST are intact.
        """
        name = version_name(snapshot.version)
        files = {WEIGHTS_FILE: tensors_to_bytes(snapshot.weights)}
        if snapshot.training:
            files[TRAINING_FILE] = tensors_to_bytes(snapshot.training)
        manifest = {**snapshot.manifest}
        manifest.setdefault("created_at", self._clock.time())
        manifest.update(
            version=snapshot.version,
            format=FORMAT,
            files={
                file_name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
                for file_name, data in files.items()
            },
        )
        try:
            files[MANIFEST_FILE] = json.dumps(manifest, indent=2, sort_keys=True).encode()
        except TypeError as error:
            raise ValueError(f"snapshot manifest is not JSON-serialisable: {error}") from error
        with self._lock(blocking=True):
            newest = self.versions()[-1:]
            if newest and snapshot.version <= newest[0]:
                raise ValueError(
                    f"snapshot version {snapshot.version} is not newer than stored {newest[0]}"
                )
            self._commit(name, files)
            self._apply_retention()
        # Return the manifest as a reader will see it (tuples become lists, ...).
        stored_manifest = json.loads(files[MANIFEST_FILE])
        return Snapshot(snapshot.version, snapshot.weights, snapshot.training, stored_manifest)

    def load_latest(self) -> Snapshot | None:
        """Return the version LATEST names, else the newest older readable one, else ``None``.

        Every snapshot passed over is logged as a warning with the reason. If a writer moved
        LATEST on while this ran (retention may delete what was read), it tries again once.
        """
        for _ in range(2):
            latest_text = self._read_latest_text()
            snapshot = self._load_newest_readable(latest_text)
            if snapshot is not None or self._read_latest_text() == latest_text:
                return snapshot
        return None

    def load(self, version: int) -> Snapshot:
        """Load and verify one version: manifest, version, sha256 and size of every file.

        Raises:
            SnapshotError: The version is missing, incomplete or corrupt.
        """
        path = self.directory / version_name(version)
        try:
            manifest = _read_manifest(path / MANIFEST_FILE)
            if manifest.get("format") != FORMAT:
                raise SnapshotError(f"{path}: unsupported format {manifest.get('format')!r}")
            if manifest.get("version") != version:
                raise SnapshotError(f"{path}: manifest names version {manifest.get('version')!r}")
            listed = manifest.get("files")
            if not isinstance(listed, dict) or WEIGHTS_FILE not in listed:
                raise SnapshotError(f"{path}: manifest lists no {WEIGHTS_FILE}")
            loaded = {name: _read_verified(path / name, entry) for name, entry in listed.items()}
        except OSError as error:
            raise SnapshotError(f"{path}: cannot read: {error}") from error
        return Snapshot(version, loaded[WEIGHTS_FILE], loaded.get(TRAINING_FILE, {}), manifest)

    def versions(self) -> list[int]:
        """Versions renamed into place with a manifest, oldest first (not verified)."""
        try:
            entries = list(self.directory.iterdir())
        except FileNotFoundError:
            return []
        return sorted(
            int(entry.name)
            for entry in entries
            if _VERSION_NAME.fullmatch(entry.name) and (entry / MANIFEST_FILE).is_file()
        )

    def latest_version(self) -> int | None:
        """Return the version LATEST names without verifying it (cheap, for reload polling)."""
        text = self._read_latest_text()
        return int(text) if text is not None and _VERSION_NAME.fullmatch(text) else None

    def _load_newest_readable(self, latest_text: str | None) -> Snapshot | None:
        candidates = self.versions()
        if latest_text is not None and _VERSION_NAME.fullmatch(latest_text):
            latest = int(latest_text)
            candidates = [latest, *(v for v in candidates if v < latest)]
        elif latest_text is not None or candidates:
            logger.warning(
                "snapshot %s in %s is %s; trying older versions",
                LATEST_FILE,
                self.directory,
                "missing" if latest_text is None else f"garbage ({latest_text[:40]!r})",
            )
        for version in sorted(set(candidates), reverse=True):
            try:
                return self.load(version)
            except SnapshotError as error:
                logger.warning("skipping unreadable snapshot: %s", error)
        return None

    def _read_latest_text(self) -> str | None:
        try:
            return (self.directory / LATEST_FILE).read_text(errors="replace").strip()
        except FileNotFoundError:
            return None

    def _commit(self, name: str, files: Mapping[str, bytes]) -> None:
        """Steps 1-5 of the commit order; on OSError undo everything, then re-raise."""
        temp = self.directory / f"{TEMP_PREFIX}{name}-{secrets.token_hex(4)}"
        final = self.directory / name
        previous_latest = self._read_latest_text()
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
            self._write_latest(name)
        except OSError:
            try:
                shutil.rmtree(temp, ignore_errors=True)
                if renamed and self._read_latest_text() == name:  # replaced, not durably
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


def _read_manifest(path: Path) -> dict[str, Any]:
    """Parse a manifest file; it must hold a JSON object."""
    try:
        manifest = json.loads(path.read_bytes())
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
        raise SnapshotError(f"{path}: not valid JSON: {error}") from error
    if not isinstance(manifest, dict):
        raise SnapshotError(f"{path}: not a JSON object")
    return manifest


def _read_verified(path: Path, entry: Any) -> dict[str, torch.Tensor]:
    """Read one tensor file, check it against its manifest entry, and deserialise it."""
    if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
        raise SnapshotError(f"{path}: malformed manifest entry {entry!r}")
    data = path.read_bytes()  # one read: the bytes checked are the bytes loaded
    if len(data) != entry.get("bytes"):
        raise SnapshotError(f"{path}: {len(data)} bytes, manifest says {entry.get('bytes')}")
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise SnapshotError(f"{path}: sha256 mismatch")
    try:
        return load_tensors(data)
    except safetensors.SafetensorError as error:
        raise SnapshotError(f"{path}: not a safetensors file: {error}") from error


def _remove_tree(path: Path) -> None:
    """Rename ``path`` out of the version namespace (readers never see half), then delete it."""
    grave = path.with_name(f"{TEMP_PREFIX}gc-{path.name}-{secrets.token_hex(4)}")
    os.rename(path, grave)
    shutil.rmtree(grave)
