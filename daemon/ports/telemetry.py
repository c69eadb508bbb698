"""The training loop's telemetry port: what it reports (Prometheus or a recorder listens)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from driftd.records import TopicPartition

if TYPE_CHECKING:  # annotations only: the CLI and the consumer child start without numpy
    import numpy as np


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

    def trainer_ranks(self, world_size: int) -> None:
        """This trainer is one of ``world_size`` ranks learning one model."""
        ...

    def model_synced(self, mode: str, seconds: float) -> None:
        """The ranks' replicas were made one (``average`` or ``allreduce``) in ``seconds``."""
        ...
