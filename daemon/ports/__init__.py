"""The ports the training loop talks to; adapters implement them by technology."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from driftd.records import Record, Rejection, TopicPartition

if TYPE_CHECKING:  # annotations only: the CLI and the consumer child start without torch
    import numpy as np
    import torch


class Clock(Protocol):
    """Time, injected so tests never sleep."""

    def monotonic(self) -> float:
        """Seconds on a monotonic clock, for durations."""
        ...

    def time(self) -> float:
        """Wall-clock epoch seconds, for timestamps."""
        ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        """Seconds on the process's monotonic clock."""
        return time.monotonic()

    def time(self) -> float:
        """Epoch seconds."""
        return time.time()


class RecordSource(Protocol):
    """Where records come from (a Kafka consumer, or an in-memory replay).

    A source starts at the offsets it was built with (the newest snapshot's), else at its own
    committed position, else at its reset policy.
    """

    def poll(self, max_records: int, timeout_s: float) -> Sequence[Record]:
        """Return up to ``max_records`` records, waiting at most ``timeout_s`` for the first."""
        ...

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Record durable progress: each offset is the *next* record to read in its partition."""
        ...

    def lag(self) -> Mapping[TopicPartition, int]:
        """Records not yet read, per assigned partition (best effort, may be empty)."""
        ...

    @property
    def ready(self) -> bool:
        """Whether the source is connected and has partitions assigned."""
        ...

    def close(self) -> None:
        """Release connections; safe to call twice."""
        ...


class DeadLetterSink(Protocol):
    """Where rejected records go, with their reason, so nothing is lost silently."""

    def send(self, rejection: Rejection) -> None:
        """Queue one rejected record; may buffer."""
        ...

    def flush(self, timeout_s: float) -> None:
        """Block until every queued rejection is durable; raise if it cannot be made so."""
        ...

    @property
    def pending(self) -> int:
        """Rejections sent but not yet known to be durable (the dead-letter backlog)."""
        ...

    def undelivered(self) -> Sequence[Rejection]:
        """The rejections not yet known to be durable, oldest first (kept in snapshots)."""
        ...

    def close(self) -> None:
        """Flush what is pending and release resources."""
        ...


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


class Telemetry(Protocol):
    """What the loop reports; Prometheus or an in-memory recorder implements it."""

    def events_consumed(self, n: int) -> None:
        """``n`` records were read from the source."""
        ...

    def events_learned(self, n: int) -> None:
        """``n`` labelled events went into a gradient step."""
        ...

    def events_invalid(self, reason: str, n: int = 1) -> None:
        """``n`` records were rejected for ``reason``."""
        ...

    def step_skipped(self, reason: str) -> None:
        """A gradient step was skipped (e.g. a non-finite loss)."""
        ...

    def step_completed(self, seconds: float, accuracy: float | None, loss: float | None) -> None:
        """A mini-batch was predicted and learned; the prequential window is given."""
        ...

    def regression_metrics(self, mae: float | None, rmse: float | None, r2: float | None) -> None:
        """Regression quality over the prequential window (None: not known yet)."""
        ...

    def learning_rate(self, lr: float) -> None:
        """The learning rate now in force."""
        ...

    def step_size(self, events: int) -> None:
        """Events per gradient step (the micro-batch size) now in force."""
        ...

    def event_latencies(self, seconds: np.ndarray) -> None:
        """Event-timestamp-to-model-update delays of the events in one step."""
        ...

    def model_shape(self, parameters: int, sparsity: float) -> None:
        """The model's parameter count and fraction of zero weights."""
        ...

    def snapshot_written(self, version: int, seconds: float) -> None:
        """A snapshot became durable."""
        ...

    def snapshot_failed(self, reason: str) -> None:
        """A snapshot could not be written; training goes on."""
        ...

    def dead_letter_backlog(self, n: int, *, paused: bool) -> None:
        """``n`` rejections wait for the dead-letter sink; ``paused``: consuming stopped for it."""
        ...

    def snapshot_published(self, version: int) -> None:
        """``LATEST`` now names ``version`` (it passed the quality gate)."""
        ...

    def snapshot_unpublished(self, reason: str) -> None:
        """A durable snapshot was kept but not published, for ``reason``."""
        ...

    def snapshot_notification_failed(self, reason: str) -> None:
        """A publish notification could not be sent; training goes on."""
        ...

    def consumer_lag(self, lag: Mapping[TopicPartition, int]) -> None:
        """Per-partition lag of the source."""
        ...

    def drift_detected(self, detector: str, signal: str, kind: str) -> None:
        """A drift detector fired on ``signal``; ``kind`` is ``warning`` or ``drift``."""
        ...

    def adapted(self, kind: str) -> None:
        """The adaptation policy acted (``new_head``, ``reuse_head``, ``lr_boost``, ...)."""
        ...

    def active_domain(self, name: str) -> None:
        """The domain whose head is now live."""
        ...

    def pruned(self, outcome: str) -> None:
        """A pruning event ended: ``kept``, ``recovered``, ``rolled_back`` or ``interrupted``."""
        ...

    def model_flops(self, flops_per_event: int) -> None:
        """Dense-equivalent FLOPs of one event through the live model."""
        ...
