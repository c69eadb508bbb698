"""The ports the training loop talks to; adapters implement them by technology."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from driftd.records import Record, Rejection, TopicPartition


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
    """

    version: int
    weights: Mapping[str, torch.Tensor]
    training: Mapping[str, torch.Tensor] = field(default_factory=dict)
    manifest: Mapping[str, Any] = field(default_factory=dict)


class SnapshotStore(Protocol):
    """Where snapshots are kept: save atomically, load the newest readable one."""

    def save(self, snapshot: Snapshot) -> Snapshot:
        """Make ``snapshot`` durable and newest; return it with store-added manifest fields.

        When this returns, a crash cannot lose the snapshot and readers never see it half
        written. Raises ``OSError`` (or a subclass) when it could not be saved; the previous
        snapshots are then intact.
        """
        ...

    def load_latest(self) -> Snapshot | None:
        """Return the newest complete, verified snapshot, or ``None`` if there is none."""
        ...

    def versions(self) -> list[int]:
        """Versions of the complete snapshots present, oldest first."""
        ...


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

    def learning_rate(self, lr: float) -> None:
        """The learning rate now in force."""
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
