"""``Telemetry`` kept in memory, exactly: for tests, the in-process benchmark and dry runs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from driftd.records import TopicPartition

if TYPE_CHECKING:
    from driftd.ports import Telemetry


@dataclass
class RecordingTelemetry:
    """Records every report in plain attributes; read them directly.

    It mirrors ``PrometheusTelemetry``: counters add up, gauges keep the last value (``None``
    until first reported), ``lag`` holds only the partitions of the latest report, and
    non-finite latencies are dropped (negative ones are kept as reported). Latencies are all
    kept, one array per step, so percentiles are exact; memory grows with the events seen.
    Meant for one writer thread.

    Attributes:
        consumed: Records read from the source.
        learned: Labelled events that went into a gradient step.
        invalid: Rejected records, by reason.
        skipped: Skipped gradient steps, by reason.
        steps: Completed mini-batch steps.
        step_seconds: Duration of each completed step, in order.
        accuracy: Latest prequential accuracy.
        loss: Latest prequential loss.
        mae: Latest prequential mean absolute error (regression).
        rmse: Latest prequential root mean squared error (regression).
        r2: Latest prequential R² (regression).
        lr: Latest learning rate.
        parameters: Latest parameter count.
        sparsity: Latest fraction of zero weights.
        snapshot_version: Version of the latest durable snapshot.
        snapshot_seconds: Write time of each durable snapshot, in order.
        snapshot_failures: Failed snapshots, by reason.
        dead_letter_backlogs: Every ``(backlog, paused)`` report, in order.
        published_version: Version LATEST names (the latest published report).
        unpublished: Durable snapshots not published, by reason.
        notification_failures: Publish notifications not sent, by reason.
        lag: Lag per partition, from the latest report only.
        drifts: Drift detections, by ``(detector, signal)``.
        warnings: Drift warnings, by ``(detector, signal)``.
        adaptations: Adaptations, by kind.
        domain: The latest active domain.
        domains: Every active-domain report, in order.
        prunes: Pruning events by outcome.
        flops_per_event: The latest dense-equivalent FLOPs per event.
        ranks: The trainer group's size (1 outside a group).
        syncs: Replica syncs, by mode.
        sync_seconds: Duration of each replica sync, in order.
    """

    consumed: int = 0
    learned: int = 0
    invalid: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    steps: int = 0
    step_seconds: list[float] = field(default_factory=list)
    accuracy: float | None = None
    loss: float | None = None
    mae: float | None = None
    rmse: float | None = None
    r2: float | None = None
    lr: float | None = None
    step_sizes: list[int] = field(default_factory=list)
    parameters: int | None = None
    sparsity: float | None = None
    snapshot_version: int | None = None
    snapshot_seconds: list[float] = field(default_factory=list)
    snapshot_failures: Counter[str] = field(default_factory=Counter)
    dead_letter_backlogs: list[tuple[int, bool]] = field(default_factory=list)
    published_version: int | None = None
    unpublished: Counter[str] = field(default_factory=Counter)
    notification_failures: Counter[str] = field(default_factory=Counter)
    lag: dict[TopicPartition, int] = field(default_factory=dict)
    drifts: Counter[tuple[str, str]] = field(default_factory=Counter)
    warnings: Counter[tuple[str, str]] = field(default_factory=Counter)
    adaptations: Counter[str] = field(default_factory=Counter)
    domain: str | None = None
    domains: list[str] = field(default_factory=list)
    prunes: Counter[str] = field(default_factory=Counter)
    flops_per_event: int | None = None
    ranks: int = 1
    syncs: Counter[str] = field(default_factory=Counter)
    sync_seconds: list[float] = field(default_factory=list)
    _latencies: list[np.ndarray] = field(default_factory=list, repr=False)

    def events_consumed(self, n: int) -> None:
        """``n`` records were read from the source."""
        self.consumed += n

    def events_learned(self, n: int) -> None:
        """``n`` labelled events went into a gradient step."""
        self.learned += n

    def events_invalid(self, reason: str, n: int = 1) -> None:
        """``n`` records were rejected for ``reason``."""
        self.invalid[reason] += n

    def step_skipped(self, reason: str) -> None:
        """A gradient step was skipped."""
        self.skipped[reason] += 1

    def step_completed(self, seconds: float, accuracy: float | None, loss: float | None) -> None:
        """A mini-batch was predicted and learned; ``None`` keeps the previous window value."""
        self.steps += 1
        self.step_seconds.append(seconds)
        if accuracy is not None:
            self.accuracy = accuracy
        if loss is not None:
            self.loss = loss

    def regression_metrics(self, mae: float | None, rmse: float | None, r2: float | None) -> None:
        """Regression quality over the window; ``None`` keeps the previous value."""
        self.mae = mae if mae is not None else self.mae
        self.rmse = rmse if rmse is not None else self.rmse
        self.r2 = r2 if r2 is not None else self.r2

    def learning_rate(self, lr: float) -> None:
        """The learning rate now in force."""
        self.lr = lr

    def step_size(self, events: int) -> None:
        """Events per gradient step (the micro-batch size) now in force."""
        self.step_sizes.append(events)

    def event_latencies(self, seconds: np.ndarray) -> None:
        """Keep a copy of the finite delays of one step."""
        values = np.asarray(seconds, dtype=np.float64).ravel()
        self._latencies.append(values[np.isfinite(values)])  # boolean indexing copies

    def model_shape(self, parameters: int, sparsity: float) -> None:
        """The model's parameter count and fraction of zero weights."""
        self.parameters = parameters
        self.sparsity = sparsity

    def pruned(self, outcome: str) -> None:
        """A pruning event ended with ``outcome``."""
        self.prunes[outcome] += 1

    def trainer_ranks(self, world_size: int) -> None:
        """This trainer is one of ``world_size`` ranks."""
        self.ranks = world_size

    def model_synced(self, mode: str, seconds: float) -> None:
        """The replicas were made one in ``seconds``."""
        self.syncs[mode] += 1
        self.sync_seconds.append(seconds)

    def model_flops(self, flops_per_event: int) -> None:
        """Dense-equivalent FLOPs per event of the live model."""
        self.flops_per_event = flops_per_event

    def snapshot_written(self, version: int, seconds: float) -> None:
        """A snapshot became durable."""
        self.snapshot_version = version
        self.snapshot_seconds.append(seconds)

    def snapshot_failed(self, reason: str) -> None:
        """A snapshot could not be written."""
        self.snapshot_failures[reason] += 1

    def dead_letter_backlog(self, n: int, *, paused: bool) -> None:
        """Rejections waiting for the dead-letter sink, and whether consuming is stopped."""
        self.dead_letter_backlogs.append((n, paused))

    def snapshot_published(self, version: int) -> None:
        """``LATEST`` now names ``version``."""
        self.published_version = version

    def snapshot_unpublished(self, reason: str) -> None:
        """A durable snapshot was not published."""
        self.unpublished[reason] += 1

    def snapshot_notification_failed(self, reason: str) -> None:
        """A publish notification could not be sent."""
        self.notification_failures[reason] += 1

    def consumer_lag(self, lag: Mapping[TopicPartition, int]) -> None:
        """Replace the per-partition lag with the latest report."""
        self.lag = dict(lag)

    def drift_detected(self, detector: str, signal: str, kind: str) -> None:
        """Count a drift or a warning."""
        (self.drifts if kind == "drift" else self.warnings)[(detector, signal)] += 1

    def adapted(self, kind: str) -> None:
        """Count one adaptation."""
        self.adaptations[kind] += 1

    def active_domain(self, name: str) -> None:
        """Keep the live domain and its history."""
        self.domain = name
        self.domains.append(name)

    @property
    def latencies(self) -> np.ndarray:
        """Every finite event-to-update delay reported so far, in report order."""
        if not self._latencies:
            return np.empty(0, dtype=np.float64)
        return np.concatenate(self._latencies)


if TYPE_CHECKING:
    _conforms: Telemetry = RecordingTelemetry()
