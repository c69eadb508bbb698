"""``Telemetry`` exported to Prometheus: the metric names in DESIGN.md are a public contract."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from driftd.adaptation.outcomes import ADAPTATION_KINDS
from driftd.adapters.bulk_histogram import BulkHistogram
from driftd.adapters.prometheus_consumer_metrics import PrometheusConsumerMetrics
from driftd.ports import Clock, SystemClock

if TYPE_CHECKING:
    from driftd.ports import Telemetry

#: One mini-batch step: 0.1 ms (tiny model) to 5 s (large batch on a slow CPU).
STEP_SECONDS_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
#: Event timestamp to model update: 1 ms (live stream) to 10 min (catching up a backlog).
EVENT_TO_UPDATE_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip
#: Writing one snapshot: 5 ms (small model, local disk) to 1 min (large model, network disk).
SNAPSHOT_WRITE_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


#: Replica syncs of a trainer group: microseconds (a small all-reduce) to seconds (a big model).
SYNC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: The ``mode`` label of ``driftd_model_syncs_total`` (the ``distributed.sync`` setting).
SYNC_MODES = ("average", "allreduce")
PRUNE_OUTCOMES = ("kept", "recovered", "rolled_back", "interrupted")
#: Why a gradient step is skipped (``driftd.learning.learner``).
SKIP_REASONS = ("non_finite_loss",)
#: Why a snapshot failed: the errno name of the failed save (``driftd.loop.failure_reason``);
#: these are the ones a full, read-only or lost disk gives. (A dead-letter outage no longer
#: fails snapshots: see ``driftd_dead_letter_backlog``.)
SNAPSHOT_FAILURE_REASONS = ("ENOSPC", "EDQUOT", "EACCES", "EROFS", "EIO")
#: The quality gate's refusals (``driftd.serving.publish_gate``).
UNPUBLISHED_REASONS = ("non_finite", "unscored", "below_baseline", "regressed")
#: Exception names of a failed publish notification; the one an unreachable broker gives.
NOTIFICATION_FAILURE_REASONS = ("KafkaTimeoutError",)


class PrometheusTelemetry(PrometheusConsumerMetrics):
    """Implements ``driftd.ports.Telemetry`` with prometheus-client metrics on ``registry``.

    Every metric is created here, on the given registry (never the global one), so tests and
    several daemons in one process stay independent. Gauges whose value is unknown until the
    first step (accuracy, loss, learning rate, model shape) read NaN until then; the snapshot
    version and last-success timestamp read 0 until the first snapshot.

    Every labelled counter starts with its known label values at 0 (the ``*_REASONS`` tuples,
    the adaptation kinds, the prune outcomes and the ``drift_signals`` given), so a dashboard
    shows 0 rather than "No data" and ``increase()`` counts the first event too. A label value
    outside those (an unusual errno) gets its series when it first happens.

    Args:
        registry: Where to register every metric.
        clock: Source of the snapshot success timestamp; the system clock by default.
        drift_signals: The ``(detector, signal)`` pairs the drift monitor watches.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        clock: Clock | None = None,
        drift_signals: Iterable[tuple[str, str]] = (),
    ) -> None:
        self._clock = clock if clock is not None else SystemClock()
        super().__init__(registry, consumed_help="Records read from the source.")
        r = registry
        self._learned = Counter(
            "driftd_events_learned", "Labelled events that went into a gradient step.", registry=r
        )
        self._skipped = Counter(
            "driftd_steps_skipped", "Gradient steps skipped, by reason.", ["reason"], registry=r
        )
        self._steps = Counter("driftd_steps", "Mini-batches predicted and learned.", registry=r)
        self._accuracy = Gauge(
            "driftd_prequential_accuracy",
            "Test-then-train accuracy over the recent window (NaN until the first step).",
            registry=r,
        )
        self._loss = Gauge(
            "driftd_prequential_loss",
            "Test-then-train mean loss over the recent window (NaN until the first step).",
            registry=r,
        )
        self._lr = Gauge("driftd_learning_rate", "Learning rate now in force.", registry=r)
        self._step_size = Gauge(
            "driftd_step_size_events", "Events per gradient step (micro-batch) now.", registry=r
        )
        # Regression quality (classification leaves them NaN; regression leaves accuracy NaN).
        self._mae = Gauge(
            "driftd_prequential_mae",
            "Test-then-train mean absolute error over the recent window (regression; else NaN).",
            registry=r,
        )
        self._rmse = Gauge(
            "driftd_prequential_rmse",
            "Test-then-train root mean squared error over the recent window (regression).",
            registry=r,
        )
        self._r2 = Gauge(
            "driftd_prequential_r2",
            "Test-then-train R² (1 - SSE/SST) over the recent window (regression; NaN while the "
            "targets are constant).",
            registry=r,
        )
        for gauge in (self._mae, self._rmse, self._r2):
            gauge.set(math.nan)
        self._parameters = Gauge(
            "driftd_model_parameters", "Number of model parameters.", registry=r
        )
        self._sparsity = Gauge(
            "driftd_model_sparsity", "Fraction of model weights that are exactly zero.", registry=r
        )
        for gauge in (self._accuracy, self._loss, self._lr, self._parameters, self._sparsity):
            gauge.set(math.nan)
        self._snapshot_version = Gauge(
            "driftd_snapshot_version",
            "Version of the newest durable snapshot (0: none).",
            registry=r,
        )
        self._snapshot_timestamp = Gauge(
            "driftd_snapshot_last_success_timestamp_seconds",
            "Epoch seconds when the newest snapshot became durable (0: none yet).",
            registry=r,
        )
        self._snapshot_failures = Counter(
            "driftd_snapshot_failures",
            "Snapshots that could not be written, by reason.",
            ["reason"],
            registry=r,
        )
        self._snapshot_seconds = Histogram(
            "driftd_snapshot_write_seconds",
            "Time to write one snapshot durably.",
            buckets=SNAPSHOT_WRITE_BUCKETS,
            registry=r,
        )
        self._dead_letter_backlog = Gauge(
            "driftd_dead_letter_backlog",
            "Rejected records waiting for the dead-letter topic to acknowledge them.",
            registry=r,
        )
        self._dead_letter_backpressure = Gauge(
            "driftd_dead_letter_backpressure",
            "1 while consuming is stopped because the dead-letter backlog is full, else 0.",
            registry=r,
        )
        self._published_version = Gauge(
            "driftd_snapshot_published_version",
            "Version LATEST names: the snapshot inference follows (0: none published yet).",
            registry=r,
        )
        self._unpublished = Counter(
            "driftd_snapshots_unpublished",
            "Durable snapshots the quality gate kept but did not publish, by reason.",
            ["reason"],
            registry=r,
        )
        self._notification_failures = Counter(
            "driftd_snapshot_notification_failures",
            "Publish notifications that could not be sent, by reason.",
            ["reason"],
            registry=r,
        )
        self._step_seconds = Histogram(
            "driftd_step_seconds",
            "Wall time of one predict-then-learn mini-batch step.",
            buckets=STEP_SECONDS_BUCKETS,
            registry=r,
        )
        self._event_to_update = BulkHistogram(
            "driftd_event_to_update_seconds",
            "Delay from an event's timestamp to the model update that learned from it.",
            EVENT_TO_UPDATE_BUCKETS,
            registry=r,
        )
        self._drift_detected_total = Counter(
            "driftd_drift_detected",
            "Drifts detected, by detector and monitored signal.",
            ["detector", "signal"],
            registry=r,
        )
        self._drift_warnings_total = Counter(
            "driftd_drift_warnings",
            "Drift warnings (binary detectors), by detector and monitored signal.",
            ["detector", "signal"],
            registry=r,
        )
        self._adaptations_total = Counter(
            "driftd_adaptations", "Re-adaptations after drift, by kind.", ["kind"], registry=r
        )
        self._active_domain = Gauge(
            "driftd_active_domain",
            "1 for the domain whose head is live (one series: the previous one is removed).",
            ["domain"],
            registry=r,
        )
        self._domain: str | None = None
        self._prune_total = Counter(
            "driftd_prune", "Pruning events, by outcome.", ["outcome"], registry=r
        )
        for family, values in (
            (self._prune_total, PRUNE_OUTCOMES),
            (self._adaptations_total, ADAPTATION_KINDS),
            (self._skipped, SKIP_REASONS),
            (self._snapshot_failures, SNAPSHOT_FAILURE_REASONS),
            (self._unpublished, UNPUBLISHED_REASONS),
            (self._notification_failures, NOTIFICATION_FAILURE_REASONS),
        ):
            for value in values:  # fixed series: increase() sees the first event too
                family.labels(value)
        for detector, signal in drift_signals:
            self._drift_detected_total.labels(detector, signal)
            self._drift_warnings_total.labels(detector, signal)
        self._flops = Gauge(
            "driftd_model_flops_per_event",
            "Dense-equivalent FLOPs of one event through the live model.",
            registry=r,
        )
        self._ranks = Gauge(
            "driftd_trainer_ranks", "Ranks of the trainer group learning this model.", registry=r
        )
        self._ranks.set(1)
        self._syncs = Counter(
            "driftd_model_syncs",
            "Times the trainer group's replicas were made one, by mode.",
            ["mode"],
            registry=r,
        )
        for mode in SYNC_MODES:
            self._syncs.labels(mode)
        self._sync_seconds = Histogram(
            "driftd_model_sync_seconds",
            "Time of one replica sync (a model average, or a round's gradient all-reduces).",
            buckets=SYNC_BUCKETS,
            registry=r,
        )

    def events_learned(self, n: int) -> None:
        """``n`` labelled events went into a gradient step."""
        self._learned.inc(n)

    def step_skipped(self, reason: str) -> None:
        """A gradient step was skipped (e.g. a non-finite loss)."""
        self._skipped.labels(reason).inc()

    def step_completed(self, seconds: float, accuracy: float | None, loss: float | None) -> None:
        """A mini-batch was predicted and learned; ``None`` keeps the previous window value."""
        self._steps.inc()
        self._step_seconds.observe(seconds)
        if accuracy is not None:
            self._accuracy.set(accuracy)
        if loss is not None:
            self._loss.set(loss)

    def regression_metrics(self, mae: float | None, rmse: float | None, r2: float | None) -> None:
        """Regression quality over the window; ``None`` keeps the previous value."""
        for gauge, value in ((self._mae, mae), (self._rmse, rmse), (self._r2, r2)):
            if value is not None:
                gauge.set(value)

    def learning_rate(self, lr: float) -> None:
        """The learning rate now in force."""
        self._lr.set(lr)

    def step_size(self, events: int) -> None:
        """Events per gradient step (the micro-batch size) now in force."""
        self._step_size.set(events)

    def event_latencies(self, seconds: np.ndarray) -> None:
        """Bin one step's event-to-update delays without a Python call per value.

        Negative delays (producer clock ahead of ours) count as 0: a negative observation would
        lower ``_sum``, which ``rate()`` reads as a counter reset.
        """
        self._event_to_update.observe_many(np.maximum(seconds, 0.0))

    def model_shape(self, parameters: int, sparsity: float) -> None:
        """The model's parameter count and fraction of zero weights."""
        self._parameters.set(parameters)
        self._sparsity.set(sparsity)

    def snapshot_written(self, version: int, seconds: float) -> None:
        """A snapshot became durable: record its version, write time and the wall time now."""
        self._snapshot_version.set(version)
        self._snapshot_seconds.observe(seconds)
        self._snapshot_timestamp.set(self._clock.time())

    def snapshot_failed(self, reason: str) -> None:
        """A snapshot could not be written; training goes on."""
        self._snapshot_failures.labels(reason).inc()

    def dead_letter_backlog(self, n: int, *, paused: bool) -> None:
        """Rejections waiting for the dead-letter topic; whether consuming is stopped for them."""
        self._dead_letter_backlog.set(n)
        self._dead_letter_backpressure.set(1 if paused else 0)

    def snapshot_published(self, version: int) -> None:
        """``LATEST`` now names ``version``."""
        self._published_version.set(version)

    def snapshot_unpublished(self, reason: str) -> None:
        """Count a durable snapshot the gate did not publish."""
        self._unpublished.labels(reason).inc()

    def snapshot_notification_failed(self, reason: str) -> None:
        """Count a publish notification that could not be sent."""
        self._notification_failures.labels(reason).inc()

    def drift_detected(self, detector: str, signal: str, kind: str) -> None:
        """Count a drift (``driftd_drift_detected_total``) or a warning (``..._warnings_total``)."""
        family = self._drift_detected_total if kind == "drift" else self._drift_warnings_total
        family.labels(detector, signal).inc()

    def adapted(self, kind: str) -> None:
        """Count one adaptation of ``kind``."""
        self._adaptations_total.labels(kind).inc()

    def pruned(self, outcome: str) -> None:
        """A pruning event ended with ``outcome``."""
        self._prune_total.labels(outcome).inc()

    def trainer_ranks(self, world_size: int) -> None:
        """This trainer is one of ``world_size`` ranks."""
        self._ranks.set(world_size)

    def model_synced(self, mode: str, seconds: float) -> None:
        """The replicas were made one in ``seconds``."""
        self._syncs.labels(mode).inc()
        self._sync_seconds.observe(seconds)

    def model_flops(self, flops_per_event: int) -> None:
        """Dense-equivalent FLOPs per event of the live model."""
        self._flops.set(flops_per_event)

    def active_domain(self, name: str) -> None:
        """Expose ``name`` as the live domain; the previous domain's series is removed."""
        if self._domain is not None and self._domain != name:
            self._active_domain.remove(self._domain)
        self._active_domain.labels(name).set(1)
        self._domain = name


if TYPE_CHECKING:
    _conforms: Telemetry = PrometheusTelemetry(CollectorRegistry())
