"""Snapshots kept in a dict: the dry-run store, with the file store's semantics.

Tensors are copied to CPU on save and copied again on load, and the manifest goes through JSON,
so callers can neither mutate stored state nor store what the file store would refuse.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import torch

from driftd.adapters.file_snapshot_store import FORMAT, SnapshotError, version_name
from driftd.ports import Clock, Snapshot, SystemClock


def _copy_tensors(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {
        key: tensor.detach().to("cpu").clone(memory_format=torch.contiguous_format)
        for key, tensor in tensors.items()
    }


def _copy_manifest(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-copy through JSON, exactly as the file store writes and reads it back."""
    try:
        copied: dict[str, Any] = json.loads(json.dumps(manifest))
    except TypeError as error:
        raise ValueError(f"snapshot manifest is not JSON-serialisable: {error}") from error
    return copied


class InMemorySnapshotStore:
    """A :class:`~driftd.ports.SnapshotStore` in process memory (lost on exit).

    Args:
        keep: How many versions to keep (at least 1); older ones are dropped, except the
            published one.
        clock: Source of ``created_at`` when the manifest has none.
    """

    def __init__(self, keep: int, *, clock: Clock | None = None) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        self.keep = keep
        self._clock = clock or SystemClock()
        self._snapshots: dict[int, Snapshot] = {}
        self._latest: int | None = None

    def save(self, snapshot: Snapshot, *, publish: bool = True) -> Snapshot:
        """Store a copy of ``snapshot`` as the newest version (published if ``publish``).

        Retention then keeps the newest ``keep`` versions and, always, the published one.

        Raises:
            ValueError: The version is not newer than every stored one, or the manifest is not
                JSON-serialisable.
        """
        version_name(snapshot.version)  # same range check as the file store
        if self._snapshots and snapshot.version <= max(self._snapshots):
            raise ValueError(
                f"snapshot version {snapshot.version} is not newer than stored "
                f"{max(self._snapshots)}"
            )
        manifest = {**snapshot.manifest}
        manifest.setdefault("created_at", self._clock.time())
        manifest.update(version=snapshot.version, format=FORMAT, published=publish, files={})
        stored_manifest = _copy_manifest(manifest)
        self._snapshots[snapshot.version] = Snapshot(
            snapshot.version,
            _copy_tensors(snapshot.weights),
            _copy_tensors(snapshot.training),
            stored_manifest,
            _copy_tensors(snapshot.serving),
        )
        if publish:
            self._latest = snapshot.version
        for version in sorted(self._snapshots)[: -self.keep]:
            if version != self._latest:
                del self._snapshots[version]
        return Snapshot(
            snapshot.version, snapshot.weights, snapshot.training,
            _copy_manifest(stored_manifest), snapshot.serving,
        )  # fmt: skip

    def load_latest(self) -> Snapshot | None:
        """Return a copy of the published snapshot, or ``None`` if none was published."""
        return None if self._latest is None else self.load(self._latest)

    def load_newest(self) -> Snapshot | None:
        """Return a copy of the newest snapshot, published or not, or ``None``."""
        return self.load(max(self._snapshots)) if self._snapshots else None

    def load(self, version: int) -> Snapshot:
        """Return a copy of one version.

        Raises:
            SnapshotError: No such version is stored.
        """
        try:
            stored = self._snapshots[version]
        except KeyError:
            raise SnapshotError(f"no snapshot version {version} in memory") from None
        return Snapshot(
            version,
            _copy_tensors(stored.weights),
            _copy_tensors(stored.training),
            _copy_manifest(stored.manifest),
            _copy_tensors(stored.serving),
        )

    def versions(self) -> list[int]:
        """Stored versions, oldest first."""
        return sorted(self._snapshots)

    def latest_version(self) -> int | None:
        """The published version, or ``None``."""
        return self._latest

    def location(self, version: int) -> str:
        """A name for ``version`` (nothing is on disk)."""
        return f"memory://{version_name(version)}"
