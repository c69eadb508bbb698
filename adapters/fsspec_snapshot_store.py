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
is no lock, so two trainers must not share a URL. The read side (what ``HotModel`` and
``driftd infer`` use) is :class:`~driftd.adapters.fsspec_snapshot_reader.FsspecSnapshotReader`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from driftd.adapters.file_snapshot_reader import LATEST_FILE, MANIFEST_FILE, version_name
from driftd.adapters.file_snapshot_store import manifest_bytes, snapshot_files
from driftd.adapters.fsspec_snapshot_reader import FsspecSnapshotReader
from driftd.ports import Clock, Snapshot, SystemClock

logger = logging.getLogger(__name__)


class FsspecSnapshotStore(FsspecSnapshotReader):
    """A :class:`~driftd.ports.SnapshotStore` on any fsspec filesystem (``s3://``, ...).

    Args:
        url: Where versions live, e.g. ``s3://bucket/prefix``.
        keep: How many complete versions to keep (at least 1), plus the published one.
        storage_options: Passed to fsspec (credentials, ``endpoint_url`` via
            ``client_kwargs``, ...).
        clock: Source of ``created_at`` when the manifest has none.

    Raises:
        ImportError: No fsspec filesystem for the URL's scheme is installed.
        SnapshotStoreUnreachableError: The store does not answer, or its bucket is missing.
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
        super().__init__(url, storage_options=storage_options, include_unpublished=True)
        self.keep = keep
        self._clock = clock or SystemClock()

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
