"""A learner's state as a snapshot of the daemon's file format, and back.

What is saved is the daemon's own snapshot (``TrainingState.to_snapshot``: weights, optimizer,
LR policy, prequential window, drift detectors, domain heads, pruning),
written by :class:`~driftd.adapters.file_snapshot_store.FileSnapshotStore` and published, with
two differences: no stream offsets (a learner has no partitions: ``driftd run`` resuming from it
starts where its consumer group or ``kafka.auto_offset_reset`` says), and a ``library`` entry in
the manifest (the learning settings, class labels and feature names) that the daemon ignores.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from driftd.adapters.file_snapshot_reader import FileSnapshotReader
from driftd.adapters.file_snapshot_store import FileSnapshotStore
from driftd.ports import Snapshot
from driftd.training_state import TrainingState

LIBRARY_KEY = "library"


def write_snapshot(
    state: TrainingState,
    directory: Path,
    library: Mapping[str, Any],
    *,
    keep: int,
    created_at: float | None = None,
) -> int:
    """Save ``state`` as the next version in ``directory``, published; return the version.

    ``created_at`` defaults to now; a fixed one makes equal states give equal bytes.
    """
    store = FileSnapshotStore(directory, keep=keep)
    snapshot = state.to_snapshot(time.time() if created_at is None else created_at)
    version = max(store.versions(), default=0) + 1
    manifest = {**snapshot.manifest, "offsets": [], LIBRARY_KEY: dict(library)}
    saved = store.save(dataclasses.replace(snapshot, version=version, manifest=manifest))
    return saved.version


def read_snapshot(directory: Path) -> Snapshot:
    """The newest readable snapshot in ``directory``, training state included.

    Raises:
        FileNotFoundError: There is none.
    """
    snapshot = FileSnapshotReader(directory, include_unpublished=True).load_newest()
    if snapshot is None:
        raise FileNotFoundError(f"no readable driftd snapshot under {directory}")
    return snapshot


def library_state(snapshot: Snapshot) -> dict[str, Any]:
    """What a learner saved besides the daemon's state (empty for the daemon's snapshots)."""
    saved = snapshot.manifest.get(LIBRARY_KEY)
    return dict(saved) if isinstance(saved, Mapping) else {}


def directory_files(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory``, by relative path (a saved learner, to pickle)."""
    files = sorted(path for path in directory.rglob("*") if path.is_file())
    return {str(path.relative_to(directory)): path.read_bytes() for path in files}


def write_files(files: Mapping[str, bytes], directory: Path) -> None:
    """Write :func:`directory_files` output back under ``directory``."""
    for name, data in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
