"""``HotModel``: predict with the newest complete snapshot, reloaded in the background.

Snapshots come from a directory or, through fsspec, from an object store (``s3://...``):
the same verification and the same publish point (``LATEST``) either way.

How a reload works: a background thread reads ``LATEST`` every ``poll_interval_s`` (one small
file read or GET: the only work done while nothing changes). When it names a version not served yet,
that version is read (``model.safetensors`` and ``manifest.json`` only, sha256-verified),
its network rebuilt from ``manifest["model"]`` and the weights loaded strictly, all off to the
side; then one reference is swapped. ``predict`` reads that reference once per call, so an
in-flight prediction finishes on the model it started with and never waits for a load.

A snapshot that is missing files, corrupt, of an unknown format, or incompatible with the
serving contract (task, feature count and output count: configured, else those of the first
model served) is refused once, with a logged reason, and never retried; the current model keeps
serving. The previously served model stays in memory, so :meth:`HotModel.rollback` is instant.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, Self

import torch

from driftd.adapters.file_snapshot_reader import SnapshotError
from driftd.adapters.served_model import (
    ServedModel,
    ServingContract,
    SnapshotRefusedError,
    load_served_model,
)
from driftd.adapters.snapshot_readers import open_snapshot_reader
from driftd.ports import (
    RELOAD_INTERVAL_S,
    Clock,
    ModelNotReadyError,
    ModelSwapped,
    Predictions,
    ReloadRefused,
    SystemClock,
)

log = logging.getLogger(__name__)


class HotModel:
    """A model that follows a snapshot directory, for any Python inference code.

    Thread-safe: any number of threads may call :meth:`predict` while versions change.

    Args:
        snapshot_dir: A directory written by ``FileSnapshotStore`` (``driftd run``), or the
            URL of an object store written by ``FsspecSnapshotStore`` (``s3://bucket/prefix``,
            with ``driftd[s3]``); it need not hold snapshots yet. Nothing in it is ever
            created, locked or deleted.
        storage_options: fsspec options for a URL (credentials, ``client_kwargs``, ...); the
            same as the trainer's ``snapshots.storage_options``.
        poll_interval_s: How often the background thread reads ``LATEST``.
        pin_version: Serve this version and do not follow ``LATEST`` (see :meth:`pin`).
        device: Where the model runs (``cpu``, ``cuda``, ``cuda:1``).
        n_features: The serving contract's feature count; a snapshot with another is refused.
            None: fixed by the first model served.
        clock: Source of ``served_at`` and load durations.
        start: Start the background reload thread now (else call :meth:`start` or
            :meth:`refresh`).
        on_swapped: Called (on the thread that swapped) each time a model starts serving.
        on_refused: Called each time a snapshot is refused.
        int8: Serve each snapshot's int8 copy (``model.int8.safetensors``, written with
            ``pruning.int8_export``) where it has one; the float model otherwise.

    Raises:
        SnapshotError: ``pin_version`` was given and that version cannot be served.
        ImportError: ``snapshot_dir`` is a URL whose fsspec filesystem is not installed.
        SnapshotStoreUnreachableError: The store at the URL cannot be reached (fails at once
            rather than never becoming ready).
    """

    def __init__(
        self,
        snapshot_dir: str | Path,
        *,
        storage_options: Mapping[str, Any] | None = None,
        poll_interval_s: float = RELOAD_INTERVAL_S,
        pin_version: int | None = None,
        device: str | torch.device = "cpu",
        n_features: int | None = None,
        clock: Clock | None = None,
        start: bool = True,
        on_swapped: Callable[[ModelSwapped], None] | None = None,
        on_refused: Callable[[ReloadRefused], None] | None = None,
        int8: bool = False,
    ) -> None:
        if poll_interval_s <= 0:
            raise ValueError(f"poll_interval_s must be positive, got {poll_interval_s}")
        self._reader = open_snapshot_reader(
            snapshot_dir, storage_options=storage_options, weights_only=True, int8=int8
        )
        self._int8 = int8
        self._poll_interval_s = poll_interval_s
        self._device = torch.device(device)
        self._n_features = n_features
        self._clock = clock or SystemClock()
        self._on_swapped, self._on_refused = on_swapped, on_refused
        self._served: ServedModel | None = None
        self._previous: ServedModel | None = None
        self._pinned: int | None = None
        self._newest_served = -1
        self._refused_versions: set[int] = set()
        self._refused_by_reason: dict[str, int] = {}
        self._reloads = 0
        # Serialises pins, rollbacks and reloads (never predict); re-entrant so that a callback
        # may pin or roll back.
        self._update_lock = threading.RLock()
        self._ready = threading.Event()
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        if pin_version is not None:
            self.pin(pin_version)
        else:
            self.refresh()
        if start:
            self.start()

    def predict(self, x: Any) -> Predictions:
        """Predict a batch (array-like, nested lists or a tensor) of shape ``(n, n_features)``.

        Raises:
            ModelNotReadyError: No snapshot has been served yet.
            ValueError: ``x`` is not a numeric batch of the serving model's width.
        """
        served = self._served  # read once: a swap during this call does not affect it
        if served is None:
            raise ModelNotReadyError(f"no snapshot served yet from {self._reader.directory}")
        return served.predict(x, self._device)

    @property
    def ready(self) -> bool:
        """Whether a model is serving."""
        return self._served is not None

    @property
    def version(self) -> int | None:
        """The version serving now; None before the first."""
        served = self._served
        return None if served is None else served.version

    @property
    def manifest(self) -> Mapping[str, Any]:
        """The serving snapshot's manifest (read-only; empty before the first)."""
        served = self._served
        return MappingProxyType(dict(served.manifest) if served is not None else {})

    @property
    def created_at(self) -> float | None:
        """When the serving snapshot was written (epoch seconds), if recorded."""
        served = self._served
        return None if served is None else served.number("created_at")

    @property
    def watermark(self) -> float | None:
        """The newest event timestamp the serving snapshot learned from, if recorded."""
        served = self._served
        return None if served is None else served.number("watermark")

    @property
    def n_features(self) -> int | None:
        """Features per row the serving model takes; None before the first."""
        served = self._served
        return None if served is None else served.n_features

    @property
    def pinned(self) -> int | None:
        """The pinned version, or None while following ``LATEST``."""
        return self._pinned

    @property
    def reloads(self) -> int:
        """Swaps after the first model (following LATEST, pins and rollbacks)."""
        return self._reloads

    @property
    def refused(self) -> int:
        """Snapshots refused so far."""
        return sum(self._refused_by_reason.values())

    @property
    def refused_by_reason(self) -> dict[str, int]:
        """Refusals so far, by reason."""
        return dict(self._refused_by_reason)

    def refresh(self) -> bool:
        """Serve the version ``LATEST`` names if it is new and sound; True if it swapped.

        Before the first model, the newest readable version is served even when ``LATEST``
        names a refused one. Does nothing while pinned.
        """
        with self._update_lock:
            if self._pinned is not None:
                return False
            latest = self._reader.latest_version()
            if self._served is None:
                older = sorted(self._reader.versions(), reverse=True)
                candidates = ([] if latest is None else [latest]) + older
            elif latest is not None and latest != self._served.version:
                candidates = [latest]
            else:
                return False
            for version in dict.fromkeys(candidates):
                if version not in self._refused_versions and self._try_serve(version):
                    return True
            return False

    def pin(self, version: int) -> None:
        """Serve ``version`` and stop following ``LATEST`` until :meth:`unpin`.

        Raises:
            SnapshotError: It cannot be served (its ``reason`` says why); nothing changes.
        """
        with self._update_lock:
            served = self._served
            if served is None or served.version != version:
                try:
                    candidate = self._load(version)
                except SnapshotRefusedError as refused:
                    self._refuse(version, refused, remember=False)
                    raise SnapshotError(refused.detail, refused.reason) from None
                self._swap(candidate, "pin")
            self._pinned = version

    def unpin(self) -> None:
        """Follow ``LATEST`` again (the background thread checks at once)."""
        with self._update_lock:
            self._pinned = None
        self._wake.set()

    def rollback(self) -> None:
        """Serve the previously served version again, and pin it.

        Raises:
            RuntimeError: Only one version has been served.
        """
        with self._update_lock:
            previous = self._previous
            if previous is None:
                raise RuntimeError("no previously served version to roll back to")
            self._swap(previous, "rollback")
            self._pinned = previous.version

    def wait_ready(self, timeout_s: float | None = None) -> bool:
        """Block until a model is serving or ``timeout_s`` passed; True when serving."""
        return self._ready.wait(timeout_s)

    def start(self) -> None:
        """Start the background thread that follows ``LATEST`` (no-op if running)."""
        if self._thread is not None or self._closed:
            return
        self._thread = threading.Thread(target=self._follow, name="driftd-hot-model", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop reloading (the serving model still predicts); safe to call twice."""
        self._closed = True
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _follow(self) -> None:
        while True:
            self._wake.wait(self._poll_interval_s)
            self._wake.clear()
            if self._closed:
                return
            try:
                self.refresh()
            except Exception:  # the reload thread must outlive any surprise
                log.exception("snapshot reload check failed; retrying")

    def _try_serve(self, version: int) -> bool:
        try:
            candidate = self._load(version)
        except SnapshotRefusedError as refused:
            if refused.reason == "missing" and self._reader.latest_version() != version:
                return False  # retention removed it under us: LATEST moved on, try that next
            if refused.reason == "unpublished":  # held back by the quality gate: not a fault
                self._refused_versions.add(version)
                return False
            self._refuse(version, refused, remember=True)
            return False
        self._swap(candidate, "latest")
        return True

    def _load(self, version: int) -> ServedModel:
        """Read, verify and build ``version`` off to the side (nothing served changes)."""
        serving = self._served or self._previous
        contract = serving.contract if serving else ServingContract(n_features=self._n_features)
        return load_served_model(
            self._reader, version, contract=contract, device=self._device, clock=self._clock,
            int8=self._int8,
        )  # fmt: skip

    def _swap(self, candidate: ServedModel, cause: str) -> None:
        """Make ``candidate`` the serving model: one reference assignment (lock held)."""
        previous = self._served
        self._served = candidate  # the swap: predict() reads this reference once
        if previous is not None and previous.version != candidate.version:
            self._previous = previous
            self._reloads += 1
        newest = candidate.version > self._newest_served
        self._newest_served = max(self._newest_served, candidate.version)
        self._ready.set()
        swap = ModelSwapped(
            version=candidate.version,
            previous_version=None if previous is None else previous.version,
            created_at=candidate.number("created_at"),
            watermark=candidate.number("watermark"),
            served_at=self._clock.time(),
            load_seconds=candidate.load_seconds if cause != "rollback" else 0.0,
            cause=cause,
            newest=newest,
        )
        log.info(
            "serving snapshot %d (%s, was %s, loaded in %.3f s)",
            swap.version, cause, swap.previous_version, swap.load_seconds,
            extra={"event": "model_served", "version": swap.version, "cause": cause,
                   "previous_version": swap.previous_version},
        )  # fmt: skip
        _notify(self._on_swapped, swap)

    def _refuse(self, version: int, refused: SnapshotRefusedError, *, remember: bool) -> None:
        if remember:
            self._refused_versions.add(version)
        reasons = self._refused_by_reason
        reasons[refused.reason] = reasons.get(refused.reason, 0) + 1
        log.warning(
            "refused snapshot %d (%s): %s; still serving %s",
            version, refused.reason, refused.detail, self.version,
            extra={"event": "reload_refused", "version": version, "reason": refused.reason},
        )  # fmt: skip
        _notify(self._on_refused, ReloadRefused(version, refused.reason, refused.detail))


def _notify(callback: Callable[[Any], None] | None, event: object) -> None:
    if callback is None:
        return
    try:
        callback(event)
    except Exception:  # a broken observer must not stop reloads
        log.exception("HotModel callback %r failed", callback)
