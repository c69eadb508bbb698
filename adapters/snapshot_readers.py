"""The read side of a snapshot store, chosen by where the snapshots are: a directory or a URL."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from driftd.adapters.file_snapshot_reader import FileSnapshotReader
from driftd.ports import Snapshot


class SnapshotReader(Protocol):
    """What serving needs from a snapshot store: find versions, load one verified."""

    @property
    def directory(self) -> Path | str:
        """Where the snapshots are (a directory or a URL), for messages."""
        ...

    def load(self, version: int) -> Snapshot:
        """Load and verify ``version``; raise ``SnapshotError`` with a reason otherwise."""
        ...

    def versions(self) -> list[int]:
        """Versions present, oldest first (not verified)."""
        ...

    def latest_version(self) -> int | None:
        """The version LATEST names (not verified), or None."""
        ...


def is_url(where: str | Path) -> bool:
    """Whether ``where`` names an object store (``scheme://...``) rather than a directory."""
    return isinstance(where, str) and "://" in where


def open_snapshot_reader(
    where: str | Path,
    *,
    storage_options: Mapping[str, Any] | None = None,
    weights_only: bool = False,
    int8: bool = False,
) -> SnapshotReader:
    """A verified, read-only reader of published snapshots in a directory or at a URL.

    Raises:
        ImportError: A URL whose fsspec filesystem is not installed (``driftd[s3]``).
        SnapshotStoreUnreachableError: The store at the URL cannot be reached.
    """
    if is_url(where):
        from driftd.adapters.fsspec_snapshot_reader import FsspecSnapshotReader

        return FsspecSnapshotReader(
            str(where), storage_options=storage_options, weights_only=weights_only, int8=int8
        )
    return FileSnapshotReader(Path(where), weights_only=weights_only, int8=int8)
