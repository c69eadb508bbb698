"""``RankLabelledCollector``: a registry's metrics with a ``rank`` label on every sample.

When ``driftd run`` is one rank of a torchrun trainer group, every rank exports the same metric
names. The rank's telemetry registers its metrics in a registry of its own, as it always does;
this collector, registered in the registry that is served, re-exports them with
``rank="<rank>"`` added, so the ranks' series stay apart in Prometheus without any metric
knowing about ranks.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

RANK_LABEL = "rank"


class RankLabelConflictError(ValueError):
    """A metric of the inner registry already has a ``rank`` label."""


class RankLabelledCollector:
    """Yields every metric family of ``registry`` with ``rank="<rank>"`` on each sample.

    Every sample gets the label: counters (``_total``, ``_created``), gauges, histograms
    (``_bucket``, ``_count``, ``_sum``, ``_created``), summaries, info and state-set metrics,
    and the registry's ``target_info``. Names, types, help texts, values, timestamps and
    exemplars are unchanged. The label is checked at collection, the only time the labels of
    a sample are known (a labelled metric's children come and go): a metric that already has a
    ``rank`` label makes ``collect()`` raise :class:`RankLabelConflictError`, so a scrape
    fails loudly instead of exporting two series that claim different ranks.

    Args:
        registry: The rank's own registry; this collector reads it on every collection.
        rank: This process's rank in the trainer group.

    Raises:
        ValueError: If ``rank`` is negative.
    """

    def __init__(self, registry: CollectorRegistry, rank: int) -> None:
        if rank < 0:
            raise ValueError(f"rank must be >= 0, got {rank}")
        self._registry = registry
        self._rank = str(rank)

    def collect(self) -> Iterator[Metric]:
        """The inner registry's metric families, copied with the rank label added.

        Raises:
            RankLabelConflictError: If a sample already carries a ``rank`` label.
        """
        rank = self._rank
        for family in self._registry.collect():
            labelled = copy.copy(family)
            labelled.samples = []
            for sample in family.samples:
                if RANK_LABEL in sample.labels:
                    raise RankLabelConflictError(
                        f"metric {family.name!r} already has a {RANK_LABEL!r} label "
                        f"({sample.name}{sample.labels}): cannot add {RANK_LABEL}={rank!r}; "
                        f"rename that label"
                    )
                labelled.samples.append(sample._replace(labels={RANK_LABEL: rank, **sample.labels}))
            yield labelled

    def describe(self) -> list[Metric]:
        """Nothing: registering this collector never collects the inner registry.

        Without ``describe`` a registry built with ``auto_describe=True`` would call
        :meth:`collect` at registration, reading every metric before the daemon runs. The
        price: the outer registry cannot check this collector's names against its other
        collectors'. Serve a registry holding only this collector (the inner registry checks
        its own metrics for duplicates); its names may also grow after registration, which a
        description taken then would miss anyway.
        """
        return []
