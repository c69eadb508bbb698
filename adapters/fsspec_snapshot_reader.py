"""Reading and verifying snapshots in an object store (``s3://...``) through fsspec.

:class:`FsspecSnapshotReader` is the read side of :class:`~driftd.adapters.fsspec_snapshot_store.
FsspecSnapshotStore`, as :class:`~driftd.adapters.file_snapshot_reader.FileSnapshotReader` is
of the file store: an inference process (``HotModel``, ``driftd infer``) uses it on its own and
never writes, deletes or locks anything. The same checks as for a directory apply: a version
exists once its manifest does, every file read must match the manifest's size and sha256,
unpublished versions are refused unless asked for, ``LATEST`` names the published one.

Construction fails fast: without the fsspec filesystem for the URL's scheme (``s3fs`` for
``s3://``: ``pip install 'driftd[s3]'``) it raises :class:`ImportError`; when the store cannot be
reached, or its bucket does not exist, :class:`~driftd.ports.SnapshotStoreUnreachableError`
(how long "cannot be reached" takes is the client's: botocore's ``connect_timeout`` and retries,
settable through ``storage_options={"config_kwargs": {...}}``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch

from driftd.adapters.file_snapshot_reader import (
    LATEST_FILE,
    MANIFEST_FILE,
    VERSION_NAME,
    SnapshotError,
    check_entry,
    check_manifest,
    files_to_read,
    parse_manifest,
    snapshot_of,
    verified_tensors,
    version_name,
)
from driftd.ports import Snapshot, SnapshotStoreUnreachableError

logger = logging.getLogger(__name__)


class FsspecSnapshotReader:
    """Loads verified snapshots from a URL written by ``FsspecSnapshotStore``.

    Args:
        url: Where versions live, e.g. ``s3://bucket/prefix``; the prefix need not exist yet.
        storage_options: Passed to fsspec (credentials, ``endpoint_url`` via ``client_kwargs``).
        weights_only: Read only ``model.safetensors`` (all inference needs).
        include_unpublished: Let :meth:`load` return versions the quality gate did not publish.
        int8: Also read the int8 copy where a snapshot has one (always when not weights-only).

    Raises:
        ImportError: No fsspec filesystem for the URL's scheme is installed.
        SnapshotStoreUnreachableError: The store does not answer, or its bucket is missing.
    """

    def __init__(
        self,
        url: str,
        *,
        storage_options: Mapping[str, Any] | None = None,
        weights_only: bool = False,
        include_unpublished: bool = False,
        int8: bool = False,
    ) -> None:
        self.url = url.rstrip("/")
        self.weights_only = weights_only
        self.include_unpublished = include_unpublished
        self.int8 = int8
        try:
            from fsspec.core import url_to_fs

            self.fs, root = url_to_fs(self.url, **dict(storage_options or {}))
        except ImportError as error:
            raise ImportError(
                f"snapshots.dir={self.url} needs the fsspec filesystem for its scheme "
                f"(pip install 'driftd[s3]' for s3://): {error}"
            ) from error
        self.root = str(root).rstrip("/")
        self._check_reachable()

    @property
    def directory(self) -> str:
        """The URL (the counterpart of a file reader's directory, for messages)."""
        return self.url

    def _path(self, *parts: str) -> str:
        return "/".join((self.root, *parts))

    def _check_reachable(self) -> None:
        """One listing of the prefix (a missing prefix is fine: nothing written yet)."""
        try:
            try:
                self.fs.ls(self.root)
            except FileNotFoundError:
                bucket = self.root.split("/", 1)[0]
                if bucket:  # object stores: the first component is the bucket
                    self.fs.info(bucket)
        except FileNotFoundError as error:
            raise SnapshotStoreUnreachableError(
                f"snapshot store {self.url}: its bucket does not exist ({error})"
            ) from error
        except Exception as error:  # botocore's connection, credential and permission errors
            raise SnapshotStoreUnreachableError(
                f"snapshot store {self.url} cannot be reached: {type(error).__name__}: {error}"
            ) from error

    def location(self, version: int) -> str:
        """The URL of ``version``'s prefix."""
        return f"{self.url}/{version_name(version)}"

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
        """The version LATEST names (not verified), or ``None``: one small GET."""
        text = self.read_latest_text()
        return int(text) if text is not None and VERSION_NAME.fullmatch(text) else None

    def read_latest_text(self) -> str | None:
        """The stripped content of LATEST, or ``None`` when there is none."""
        try:
            data: bytes = self.fs.cat_file(self._path(LATEST_FILE))
        except FileNotFoundError:
            return None
        return data.decode(errors="replace").strip()

    def load(self, version: int) -> Snapshot:
        """Load and verify one version (unpublished ones only with ``include_unpublished``).

        Raises:
            SnapshotError: The version is missing, incomplete, corrupt or not published.
        """
        return self._load(version, published_only=not self.include_unpublished)

    def _load(self, version: int, *, published_only: bool) -> Snapshot:
        where = self.location(version)
        name = version_name(version)
        try:
            manifest = parse_manifest(
                f"{where}/{MANIFEST_FILE}", self.fs.cat_file(self._path(name, MANIFEST_FILE))
            )
            listed = check_manifest(where, manifest, version, published_only=published_only)
            wanted = files_to_read(where, listed, weights_only=self.weights_only, int8=self.int8)
            loaded: dict[str, dict[str, torch.Tensor]] = {}
            for file_name in wanted:
                entry = listed[file_name]
                check_entry(f"{where}/{file_name}", entry)
                data = self.fs.cat_file(self._path(name, file_name))
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
                snapshot = self._load(version, published_only=False)
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
                return self._load(version, published_only=False)
            except SnapshotError as error:
                logger.warning("skipping unreadable snapshot: %s", error)
        return None
