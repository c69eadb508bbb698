"""The snapshot ports: what a snapshot is, where it is kept, and who hears it was published."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # annotations only: the CLI starts without torch
    import torch


@dataclass(frozen=True)
class Snapshot:
    """What is saved: model weights, training state and a JSON manifest.

    Attributes:
        version: Monotonically increasing snapshot number.
        weights: The model's tensors (all an inference process needs), by state_dict key.
        training: Tensors needed only to resume training (optimizer moments, ...).
        manifest: JSON-serialisable description: architecture, offsets, counters, metrics.
        serving: An optional int8 copy of the model for CPU inference (empty: none).
    """

    version: int
    weights: Mapping[str, torch.Tensor]
    training: Mapping[str, torch.Tensor] = field(default_factory=dict)
    manifest: Mapping[str, Any] = field(default_factory=dict)
    serving: Mapping[str, torch.Tensor] = field(default_factory=dict)


class UnreadableSnapshotsError(RuntimeError):
    """Snapshots exist but none can be read: starting a blank model would silently lose them."""


class SnapshotStoreUnreachableError(UnreadableSnapshotsError):
    """The snapshot store does not answer (or its bucket does not exist): nothing can be read."""


class SnapshotStore(Protocol):
    """Where snapshots are kept: save atomically, load the newest readable one.

    Two "newest" exist once the quality gate refuses some snapshots: the *published* one
    (``LATEST``: what inference follows, :meth:`load_latest`) and the newest *durable* one
    (what training resumes from, since it holds the newest offsets, :meth:`load_newest`).
    Retention never deletes the published version.
    """

    def save(self, snapshot: Snapshot, *, publish: bool = True) -> Snapshot:
        """Make ``snapshot`` durable (and, if ``publish``, the published one); return it.

        The returned manifest holds the store-added fields, ``published`` among them. When this
        returns, a crash cannot lose the snapshot and readers never see it half written.
        Raises ``OSError`` (or a subclass) when it could not be saved; the previous snapshots
        and the published pointer are then intact.
        """
        ...

    def load_latest(self) -> Snapshot | None:
        """Return the published snapshot (else the newest older published one), or ``None``."""
        ...

    def load_newest(self) -> Snapshot | None:
        """Return the newest complete, verified snapshot, published or not, or ``None``."""
        ...

    def versions(self) -> list[int]:
        """Versions of the complete snapshots present, oldest first."""
        ...

    def latest_version(self) -> int | None:
        """The published version (not verified), or ``None``."""
        ...

    def location(self, version: int) -> str:
        """Where ``version`` lives, for people and notifications (a path or URL)."""
        ...


@dataclass(frozen=True)
class SnapshotPublished:
    """A snapshot became the published one (the notification payload).

    Attributes:
        version: The snapshot version.
        path: Where it lives (the store's :meth:`SnapshotStore.location`).
        created_at: Epoch seconds when it was taken.
        metrics: The manifest's ``metrics`` (recent prequential loss, accuracy, ...).
        watermark: Newest event timestamp it learned from (None: unknown).
    """

    version: int
    path: str
    created_at: float
    metrics: Mapping[str, Any]
    watermark: float | None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object sent to the notification topic."""
        return {
            "version": self.version,
            "path": self.path,
            "created_at": self.created_at,
            "metrics": dict(self.metrics),
            "watermark": self.watermark,
        }


class SnapshotNotifier(Protocol):
    """Tells interested parties that a snapshot was published (e.g. on a Kafka topic).

    Best effort: implementations never raise from :meth:`published` and never block training
    for long; failures are logged and counted.
    """

    def published(self, event: SnapshotPublished) -> None:
        """Announce ``event`` (may be sent asynchronously)."""
        ...

    def close(self) -> None:
        """Send what is pending (bounded wait) and release resources; safe to call twice."""
        ...


class NullSnapshotNotifier:
    """The default notifier: nobody is told."""

    def published(self, event: SnapshotPublished) -> None:
        """Do nothing."""

    def close(self) -> None:
        """Do nothing."""
