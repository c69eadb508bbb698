"""``InferenceTelemetry`` exported to Prometheus: the metrics of ``driftd infer``.

Freshness, defined: ``driftd_event_to_serving_seconds`` is observed once per snapshot version,
when this worker starts serving a version newer than any it served before. The observation is
``served_at - watermark``, the watermark being the newest event timestamp that snapshot learned
from: how long the newest learned event took to reach serving. Older versions served again (a pin
or rollback) are not observed; they bring no event to serving for the first time.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from driftd.adapters.bulk_histogram import BulkHistogram
from driftd.adapters.prometheus_consumer_metrics import PrometheusConsumerMetrics
from driftd.ports import Clock, ModelSwapped, ReloadRefused, SystemClock

if TYPE_CHECKING:
    from driftd.ports import InferenceTelemetry

#: Event timestamp to prediction: 1 ms (live stream) to 10 min (catching up a backlog).
PREDICTION_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)  # fmt: skip
#: Event timestamp to serving a model that learned it: snapshot interval plus reload, to hours.
EVENT_TO_SERVING_BUCKETS = (
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip


#: Why a snapshot is refused (``driftd.ports.ReloadRefused``).
REFUSAL_REASONS = ("missing", "corrupt", "unsupported", "incompatible", "bad_model")


class PrometheusInferenceTelemetry(PrometheusConsumerMetrics):
    """Implements ``driftd.ports.InferenceTelemetry`` on ``registry`` (not the global).

    ``driftd_model_version`` reads 0 and ``driftd_model_age_seconds`` NaN until a model serves;
    the age is computed at scrape time, so it keeps growing while no newer snapshot arrives.
    Each known refusal reason starts at 0.

    Args:
        registry: Where to register every metric.
        clock: Wall clock of the model age.
    """

    def __init__(self, registry: CollectorRegistry, *, clock: Clock | None = None) -> None:
        self._clock = clock if clock is not None else SystemClock()
        self._created_at: float | None = None
        super().__init__(registry, consumed_help="Records read from the input topics.")
        r = registry
        self._predictions = Counter(
            "driftd_predictions", "Predictions acknowledged by the output topic.", registry=r
        )
        self._latency = BulkHistogram(
            "driftd_prediction_latency_seconds",
            "Delay from an event's timestamp to its prediction.",
            PREDICTION_LATENCY_BUCKETS,
            registry=r,
        )
        self._delivery_failures = Counter(
            "driftd_prediction_delivery_failures",
            "Batches of predictions the output topic did not acknowledge (retried).",
            registry=r,
        )
        self._version = Gauge(
            "driftd_model_version", "Snapshot version serving now (0: none yet).", registry=r
        )
        self._age = Gauge(
            "driftd_model_age_seconds",
            "Now minus the serving snapshot's created_at (NaN: none yet).",
            registry=r,
        )
        self._age.set_function(self._model_age)
        self._reloads = Counter(
            "driftd_model_reloads",
            "Snapshots swapped in after the first (new versions, pins, rollbacks).",
            registry=r,
        )
        self._refused = Counter(
            "driftd_model_reloads_refused",
            "Snapshots refused, by reason; the serving model stayed.",
            ["reason"],
            registry=r,
        )
        for reason in REFUSAL_REASONS:
            self._refused.labels(reason)
        self._event_to_serving = Histogram(
            "driftd_event_to_serving_seconds",
            "Per new snapshot version: serving start minus its watermark (newest learned event).",
            buckets=EVENT_TO_SERVING_BUCKETS,
            registry=r,
        )

    def predictions_made(self, latencies: np.ndarray) -> None:
        """Count acknowledged predictions; bin their latencies (negative ones as 0, NaN skipped)."""
        self._predictions.inc(len(latencies))
        self._latency.observe_many(np.maximum(latencies, 0.0))

    def delivery_failed(self) -> None:
        """A batch of predictions was not acknowledged."""
        self._delivery_failures.inc()

    def model_swapped(self, swap: ModelSwapped) -> None:
        """Record the serving version, its age's origin, a reload and, if new, its freshness."""
        self._version.set(swap.version)
        self._created_at = swap.created_at
        if swap.previous_version is not None:
            self._reloads.inc()
        if swap.newest and swap.watermark is not None and math.isfinite(swap.watermark):
            self._event_to_serving.observe(max(0.0, swap.served_at - swap.watermark))

    def reload_refused(self, refusal: ReloadRefused) -> None:
        """Count a refused snapshot by reason."""
        self._refused.labels(refusal.reason).inc()

    def _model_age(self) -> float:
        created_at = self._created_at
        return math.nan if created_at is None else self._clock.time() - created_at


if TYPE_CHECKING:
    _conforms: InferenceTelemetry = PrometheusInferenceTelemetry(CollectorRegistry())
