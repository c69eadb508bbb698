"""Snapshots in an object store (S3 and compatibles) through fsspec: ``pip install driftd[s3]``.

Same layout as :mod:`~driftd.adapters.file_snapshot_store`, under a URL such as
``s3://bucket/prefix``::

    <url>/0000000042/model.safetensors
    <url>/0000000042/training.safetensors
    <url>/0000000042/manifest.json
    <url>/LATEST

An object store has no rename, so atomicity comes from the order of single-object writes, each
of which is atomic (a PUT replaces an object whole):

1. the tensor objects under the version prefix;
2. ``manifest.json`` last: a version *exists* only once its manifest does, and a reader trusts
   it only if every file's size and sha256 match the manifest;
3. only when published: ``LATEST`` is replaced (one PUT): the publish point;
4. retention deletes expired versions manifest first (readers stop trusting them at once),
   never the published one.

A failed save removes what it wrote (manifest first). One writer per prefix is assumed: there
is no lock, so two trainers must not share a URL.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import torch

from driftd.adapters.file_snapshot_reader import (
    FORMAT,
    LATEST_FILE,
    MANIFEST_FILE,
    VERSION_NAME,
    WEIGHTS_FILE,
    SnapshotError,
    check_entry,
    parse_manifest,
    snapshot_of,
    verified_tensors,
    version_name,
)
from driftd.adapters.file_snapshot_store import manifest_bytes, snapshot_files
from driftd.ports import Clock, Snapshot, SystemClock

logger = logging.getLogger(__name__)


class FsspecSnapshotStore:
    """A :class:`~driftd.ports.SnapshotStore` on any fsspec filesystem (``s3://``, ...).

    Args:
        url: Where versions live, e.g. ``s3://bucket/prefix``.
        keep: How many complete versions to keep (at least 1), plus the published one.
        storage_options: Passed to fsspec (credentials, ``endpoint_url`` via
            ``client_kwargs``, ...).
        clock: Source of ``created_at`` when the manifest has none.
    """

    def __init__(
        self,
        url: str,
        *,
        keep: int,
        storage_options: Mapping[str, Any] | None = None,
        clock: Clock | None = None,
    ) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        try:
            from fsspec.core import url_to_fs
        except ImportError as error:  # pragma: no cover - depends on the install
            raise ImportError(
                f"snapshots.dir={url} needs fsspec: pip install 'driftd[s3]'"
            ) from error
        self.url = url.rstrip("/")
        self.keep = keep
        self._clock = clock or SystemClock()
        self.fs, self.root = url_to_fs(self.url, **dict(storage_options or {}))
        self.root = self.root.rstrip("/")

    def _path(self, *parts: str) -> str:
        return "/".join((self.root, *parts))

    def save(self, snapshot: Snapshot, *, publish: bool = True) -> Snapshot:
        """Write ``snapshot`` object by object, manifest last, LATEST last if ``publish``.

        Raises:
            ValueError: The version is not newer than every stored one, or the manifest is not
                JSON-serialisable.
            OSError: The snapshot could not be written; stored snapshots and LATEST are intact.
        """
        name = version_name(snapshot.version)
        files = snapshot_files(snapshot)
        stored = manifest_bytes(snapshot, files, publish=publish, created_at=self._clock.time())
        newest = self.versions()[-1:]
        if newest and snapshot.version <= newest[0]:
            raise ValueError(
                f"snapshot version {snapshot.version} is not newer than stored {newest[0]}"
            )
        self._commit(name, files, stored, publish=publish)
        self._apply_retention()
        return Snapshot(
            snapshot.version, snapshot.weights, snapshot.training, json.loads(stored),
            snapshot.serving,
        )  # fmt: skip

    def _commit(
        self, name: str, files: Mapping[str, bytes], manifest: bytes, *, publish: bool
    ) -> None:
        try:
            for file_name, data in files.items():
                self.fs.pipe_file(self._path(name, file_name), data)
            self.fs.pipe_file(self._path(name, MANIFEST_FILE), manifest)
            if publish:
                self.fs.pipe_file(self._path(LATEST_FILE), f"{name}\n".encode())
        except Exception as error:
            self._remove_version(name)
            if isinstance(error, OSError):
                raise
            raise OSError(f"could not write snapshot {name} to {self.url}: {error}") from error

    def _remove_version(self, name: str) -> None:
        """Delete a version, manifest first (from then on nobody trusts it); best effort."""
        for path in (self._path(name, MANIFEST_FILE), self._path(name)):
            try:
                if self.fs.exists(path):
                    self.fs.rm(path, recursive=True)
            except Exception as error:
                logger.warning("could not delete %s: %s", path, error)
        self.fs.invalidate_cache(self.root)

    def _apply_retention(self) -> None:
        protected = self.latest_version()
        for version in self.versions()[: -self.keep]:
            if version != protected:
                self._remove_version(version_name(version))

    def versions(self) -> list[int]:
        """Versions whose manifest exists, oldest first (not verified)."""
        self.fs.invalidate_cache(self.root)
        try:
            manifests = self.fs.glob(self._path("*", MANIFEST_FILE))
        except FileNotFoundError:
            return []
        names = (str(path).rstrip("/").split("/")[-2] for path in manifests)
        return sorted(int(name) for name in names if VERSION_NAME.fullmatch(name))

    def latest_version(self) -> int | None:
        """The version LATEST names (not verified), or ``None``."""
        text = self._read_latest_text()
        return int(text) if text is not None and VERSION_NAME.fullmatch(text) else None

    def _read_latest_text(self) -> str | None:
        try:
            data: bytes = self.fs.cat_file(self._path(LATEST_FILE))
        except FileNotFoundError:
            return None
        return data.decode(errors="replace").strip()

    def location(self, version: int) -> str:
        """The URL of ``version``'s prefix."""
        return f"{self.url}/{version_name(version)}"

    def load(self, version: int) -> Snapshot:
        """Load and verify one version, published or not.

        Raises:
            SnapshotError: The version is missing, incomplete or corrupt.
        """
        where = self.location(version)
        try:
            manifest = parse_manifest(
                f"{where}/{MANIFEST_FILE}",
                self.fs.cat_file(self._path(version_name(version), MANIFEST_FILE)),
            )
            if manifest.get("format") != FORMAT:
                raise SnapshotError(
                    f"{where}: unsupported format {manifest.get('format')!r}", "unsupported"
                )
            if manifest.get("version") != version:
                raise SnapshotError(f"{where}: manifest names version {manifest.get('version')!r}")
            listed = manifest.get("files")
            if not isinstance(listed, dict) or WEIGHTS_FILE not in listed:
                raise SnapshotError(f"{where}: manifest lists no {WEIGHTS_FILE}", "missing")
            loaded: dict[str, dict[str, torch.Tensor]] = {}
            for file_name, entry in listed.items():
                check_entry(f"{where}/{file_name}", entry)
                data = self.fs.cat_file(self._path(version_name(version), file_name))
                loaded[file_name] = verified_tensors(f"{where}/{file_name}", data, entry)
        except OSError as error:  # FileNotFoundError among them
            raise SnapshotError(f"{where}: cannot read: {error}", "missing") from error
        return snapshot_of(version, loaded, manifest)

    def load_latest(self) -> Snapshot | None:
        """The version LATEST names, else the newest older published readable one, else None."""
        latest = self.latest_version()
        candidates = self.versions()
        if latest is not None:
            candidates = [v for v in candidates if v < latest] + [latest]
        for version in sorted(set(candidates), reverse=True):
            try:
                snapshot = self.load(version)
            except SnapshotError as error:
                logger.warning("skipping unreadable snapshot: %s", error)
                continue
            if snapshot.manifest.get("published") is not False:
                return snapshot
        return None

    def load_newest(self) -> Snapshot | None:
        """The newest readable version, published or not (what training resumes from)."""
        for version in reversed(self.versions()):
            try:
                return self.load(version)
            except SnapshotError as error:
                logger.warning("skipping unreadable snapshot: %s", error)
        return None
