"""The metrics every driftd process that consumes a topic exposes: the trainer and the worker."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Info

from driftd import __version__
from driftd.records import TopicPartition

#: The decoder's rejection reasons (``driftd.decode``): each series exists from the start.
INVALID_REASONS = (
    "empty", "oversized", "not_json", "not_object", "missing_x", "wrong_type",
    "wrong_dimension", "missing_feature", "non_finite", "unknown_label",
)  # fmt: skip


class PrometheusConsumerMetrics:
    """Records read and rejected, consumer lag per partition, and the build info.

    Each known rejection reason starts at 0; lag series come with the assigned partitions.

    Args:
        registry: Where to register them.
        consumed_help: The help text of ``driftd_events_consumed_total`` (what is read).
    """

    def __init__(self, registry: CollectorRegistry, *, consumed_help: str) -> None:
        self._consumed = Counter("driftd_events_consumed", consumed_help, registry=registry)
        self._invalid = Counter(
            "driftd_events_invalid", "Records rejected, by reason.", ["reason"], registry=registry
        )
        for reason in INVALID_REASONS:
            self._invalid.labels(reason)
        self._lag = Gauge(
            "driftd_consumer_lag",
            "Records not yet read, per assigned partition.",
            ["topic", "partition"],
            registry=registry,
        )
        self._lag_series: set[tuple[str, str]] = set()
        Info("driftd_build", "driftd build information.", registry=registry).info(
            {"version": __version__}
        )

    def events_consumed(self, n: int) -> None:
        """``n`` records were read from the source."""
        self._consumed.inc(n)

    def events_invalid(self, reason: str, n: int = 1) -> None:
        """``n`` records were rejected for ``reason``."""
        self._invalid.labels(reason).inc(n)

    def consumer_lag(self, lag: Mapping[TopicPartition, int]) -> None:
        """Set the lag of each reported partition and drop the series of the others.

        Dropping keeps cardinality bounded across rebalances and stops a revoked partition from
        showing a frozen lag forever.
        """
        current = {(tp.topic, str(tp.partition)): value for tp, value in lag.items()}
        for labels, value in current.items():
            self._lag.labels(*labels).set(value)
        for labels in self._lag_series - current.keys():
            self._lag.remove(*labels)
        self._lag_series = set(current)
