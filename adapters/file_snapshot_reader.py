"""Reading and verifying snapshot directories; never creates, locks or deletes anything.

:class:`FileSnapshotReader` is the read side of :class:`~driftd.adapters.file_snapshot_store.
FileSnapshotStore` (which extends it with atomic writes). An inference process uses the reader
on its own: it may sit on a read-only mount, and it must never touch a live writer's temp
entries or hold the writer's lock. See ``file_snapshot_store`` for the layout on disk.

A version whose manifest says ``"published": false`` was kept durably by the trainer (it holds
offsets) but refused by the quality gate: readers never serve it unless built with
``include_unpublished`` (the trainer's own store is). Manifests without the field (older
snapshots) count as published.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors
import torch
from safetensors.torch import load as load_tensors

from driftd.ports import Snapshot

logger = logging.getLogger(__name__)

FORMAT = 1
WEIGHTS_FILE = "model.safetensors"
TRAINING_FILE = "training.safetensors"
INT8_FILE = "model.int8.safetensors"
MANIFEST_FILE = "manifest.json"
LATEST_FILE = "LATEST"
VERSION_NAME = re.compile(r"\d{10}")
#: What a manifest may list: a file of the version directory itself, and safetensors only.
TENSOR_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\.safetensors")
MAX_VERSION = 10**10 - 1


class SnapshotError(Exception):
    """A snapshot is missing, incomplete or corrupt; the message says which and why.

    Attributes:
        reason: A short, stable label (a metric label value): ``missing`` (a file or the
            version is absent or unreadable), ``corrupt`` (bad JSON, size or sha256 mismatch,
            not safetensors), ``unsupported`` (an unknown snapshot format) or
            ``unpublished`` (the quality gate did not publish it).
    """

    def __init__(self, message: str, reason: str = "corrupt") -> None:
        super().__init__(message)
        self.reason = reason


def version_name(version: int) -> str:
    """Return the directory name of ``version``: ten zero-padded digits, so names sort."""
    if not 0 <= version <= MAX_VERSION:
        raise ValueError(f"snapshot version must be in [0, {MAX_VERSION}], got {version}")
    return f"{version:010d}"


class FileSnapshotReader:
    """Loads verified snapshots from a directory written by ``FileSnapshotStore``.

    Args:
        directory: The snapshot directory; it need not exist yet.
        weights_only: Read only ``model.safetensors`` (all inference needs), never the training
            state; the loaded snapshots then have empty ``training``.
        int8: Also read the int8 copy ``model.int8.safetensors`` where a snapshot has one
            (always read when not ``weights_only``).
        include_unpublished: Let :meth:`load` return versions the quality gate did not
            publish (the trainer resumes from them); readers refuse them by default.
    """

    def __init__(
        self,
        directory: Path,
        *,
        weights_only: bool = False,
        include_unpublished: bool = False,
        int8: bool = False,
    ) -> None:
        self.directory = Path(directory)
        self.weights_only = weights_only
        self.int8 = int8
        self.include_unpublished = include_unpublished

    def load_latest(self) -> Snapshot | None:
        """Return the version LATEST names, else the newest older published one, else ``None``.

        Every snapshot passed over is logged as a warning with the reason. If a writer moved
        LATEST on while this ran (retention may delete what was read), it tries again once.
        """
        for _ in range(2):
            latest_text = self.read_latest_text()
            snapshot = self._load_newest_readable(latest_text)
            if snapshot is not None or self.read_latest_text() == latest_text:
                return snapshot
        return None

    def load_newest(self) -> Snapshot | None:
        """Return the newest readable version, published or not (what training resumes from).

        Versions that fail verification are passed over with a warning.
        """
        for version in reversed(self.versions()):
            try:
                return self._load(version, published_only=False)
            except SnapshotError as error:
                logger.warning("skipping unreadable snapshot: %s", error)
        return None

    def load(self, version: int) -> Snapshot:
        """Load and verify one version: manifest, version, sha256 and size of every file read.

        Raises:
            SnapshotError: The version is missing, incomplete, corrupt, or (unless
                ``include_unpublished``) not published.
        """
        return self._load(version, published_only=not self.include_unpublished)

    def location(self, version: int) -> str:
        """The directory of ``version``."""
        return str(self.directory / version_name(version))

    def _load(self, version: int, *, published_only: bool) -> Snapshot:
        path = self.directory / version_name(version)
        try:
            manifest = _read_manifest(path / MANIFEST_FILE)
            listed = check_manifest(str(path), manifest, version, published_only=published_only)
            wanted = files_to_read(
                str(path), listed, weights_only=self.weights_only, int8=self.int8
            )
            loaded = {name: _read_verified(path / name, listed[name]) for name in wanted}
        except OSError as error:
            raise SnapshotError(f"{path}: cannot read: {error}", "missing") from error
        return snapshot_of(version, loaded, manifest)

    def versions(self) -> list[int]:
        """Versions renamed into place with a manifest, oldest first (not verified)."""
        try:
            entries = list(self.directory.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(
            int(entry.name)
            for entry in entries
            if VERSION_NAME.fullmatch(entry.name) and (entry / MANIFEST_FILE).is_file()
        )

    def latest_version(self) -> int | None:
        """Return the version LATEST names without verifying it (cheap, for reload polling)."""
        text = self.read_latest_text()
        return int(text) if text is not None and VERSION_NAME.fullmatch(text) else None

    def read_latest_text(self) -> str | None:
        """The stripped content of LATEST, or ``None`` when there is no LATEST (one small read)."""
        try:
            return (self.directory / LATEST_FILE).read_text(errors="replace").strip()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def _load_newest_readable(self, latest_text: str | None) -> Snapshot | None:
        candidates = self.versions()
        if latest_text is not None and VERSION_NAME.fullmatch(latest_text):
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
                snapshot = self.load(version)
                if snapshot.manifest.get("published") is False:  # a trainer-side store loads it
                    raise SnapshotError(
                        f"{version}: not published by the quality gate", "unpublished"
                    )
                return snapshot
            except SnapshotError as error:
                if error.reason == "unpublished":
                    logger.debug("skipping snapshot: %s", error)
                else:
                    logger.warning("skipping unreadable snapshot: %s", error)
        return None


def snapshot_of(
    version: int, loaded: Mapping[str, Mapping[str, torch.Tensor]], manifest: dict[str, Any]
) -> Snapshot:
    """A snapshot from its verified files (by file name) and manifest."""
    return Snapshot(
        version, loaded[WEIGHTS_FILE], loaded.get(TRAINING_FILE, {}), manifest,
        loaded.get(INT8_FILE, {}),
    )  # fmt: skip


def check_manifest(
    where: str, manifest: dict[str, Any], version: int, *, published_only: bool
) -> dict[str, Any]:
    """Check a parsed manifest of ``version`` (read from ``where``); return its ``files``.

    Raises:
        SnapshotError: An unknown format, another version, unpublished (if ``published_only``)
            or no weights listed.
    """
    if manifest.get("format") != FORMAT:
        raise SnapshotError(
            f"{where}: unsupported format {manifest.get('format')!r}", "unsupported"
        )
    if manifest.get("version") != version:
        raise SnapshotError(f"{where}: manifest names version {manifest.get('version')!r}")
    if published_only and manifest.get("published") is False:
        raise SnapshotError(f"{where}: not published by the quality gate", "unpublished")
    listed = manifest.get("files")
    if not isinstance(listed, dict) or WEIGHTS_FILE not in listed:
        raise SnapshotError(f"{where}: manifest lists no {WEIGHTS_FILE}", "missing")
    return listed


def files_to_read(
    where: str, listed: Mapping[str, Any], *, weights_only: bool, int8: bool
) -> list[str]:
    """The listed files a reader reads: all, or (``weights_only``) the weights and int8 copy.

    Raises:
        SnapshotError: A name to read is not a plain ``*.safetensors`` file of the version.
    """
    wanted = list(listed)
    if weights_only:
        wanted = [WEIGHTS_FILE] + ([INT8_FILE] if int8 and INT8_FILE in listed else [])
    for name in wanted:
        if not TENSOR_FILE_NAME.fullmatch(name):
            raise SnapshotError(
                f"{where}: manifest lists {name[:80]!r}; only plain *.safetensors names "
                "inside the version directory are read"
            )
    return wanted


def _read_manifest(path: Path) -> dict[str, Any]:
    """Parse a manifest file; it must hold a JSON object (in a regular file: see below)."""
    if not stat.S_ISREG(path.stat().st_mode):
        raise SnapshotError(f"{path}: not a regular file")
    return parse_manifest(str(path), path.read_bytes())


def parse_manifest(where: str, data: bytes) -> dict[str, Any]:
    """Parse manifest bytes read from ``where``; they must hold a JSON object.

    Raises:
        SnapshotError: Not JSON, or not an object.
    """
    try:
        manifest = json.loads(data)
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
        raise SnapshotError(f"{where}: not valid JSON: {error}") from error
    if not isinstance(manifest, dict):
        raise SnapshotError(f"{where}: not a JSON object")
    return manifest


def _read_verified(path: Path, entry: Any) -> dict[str, torch.Tensor]:
    """Read one tensor file, check it against its manifest entry, and deserialise it."""
    check_entry(str(path), entry)
    # Before reading: a FIFO would block forever, a device (say /dev/zero) never end.
    status = path.stat()
    if not stat.S_ISREG(status.st_mode):
        raise SnapshotError(f"{path}: not a regular file")
    if status.st_size != entry.get("bytes"):
        raise SnapshotError(f"{path}: {status.st_size} bytes, manifest says {entry.get('bytes')}")
    return verified_tensors(str(path), path.read_bytes(), entry)  # checked bytes are loaded


def check_entry(where: str, entry: Any) -> None:
    """Raise ``SnapshotError`` unless ``entry`` is a manifest file entry (sha256 + bytes)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
        raise SnapshotError(f"{where}: malformed manifest entry {entry!r}")


def verified_tensors(where: str, data: bytes, entry: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Check ``data`` (read from ``where``) against its manifest entry; deserialise it.

    Raises:
        SnapshotError: Size or sha256 mismatch, or not a safetensors file.
    """
    if len(data) != entry.get("bytes"):
        raise SnapshotError(f"{where}: {len(data)} bytes, manifest says {entry.get('bytes')}")
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise SnapshotError(f"{where}: sha256 mismatch")
    try:
        return load_tensors(data)
    except safetensors.SafetensorError as error:
        raise SnapshotError(f"{where}: not a safetensors file: {error}") from error
