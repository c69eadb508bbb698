"""RankLabelledCollector: every sample of a registry gets rank="<rank>", nothing else changes."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Enum,
    Gauge,
    Histogram,
    Info,
    Summary,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families

from driftd.adapters.prometheus_rank_labels import RankLabelConflictError, RankLabelledCollector


def rank_registry() -> CollectorRegistry:
    """A fresh registry with one metric of each kind, some samples in each."""
    registry = CollectorRegistry()
    events = Counter("t_events", "Events.", ["reason"], registry=registry)
    events.labels(reason="ok").inc(5)
    events.labels(reason="not_json").inc(2)
    Counter("t_steps", "Steps.", registry=registry).inc(3)
    latency = Histogram("t_latency_seconds", "Latency.", buckets=(0.1, 1.0), registry=registry)
    for value in (0.05, 0.5, 0.5, 4.0):
        latency.observe(value)
    Summary("t_batch_seconds", "Batch time.", registry=registry).observe(0.25)
    Gauge("t_learning_rate", "LR.", registry=registry).set(0.001)
    Info("t_build", "Build.", registry=registry).info({"version": "1.2.3"})
    Enum("t_state", "State.", states=["warm", "cold"], registry=registry).state("cold")
    return registry


def served(registry: CollectorRegistry, rank: int) -> CollectorRegistry:
    outer = CollectorRegistry()
    outer.register(RankLabelledCollector(registry, rank))
    return outer


def parse(text: bytes) -> dict[str, Metric]:
    return {family.name: family for family in text_string_to_metric_families(text.decode())}


def test_every_sample_gets_the_rank_and_nothing_else_changes() -> None:
    inner = rank_registry()

    before = parse(generate_latest(inner))
    after = parse(generate_latest(served(inner, 3)))

    assert after.keys() == before.keys()
    assert {"t_events", "t_latency_seconds", "t_build_info", "t_state"} <= after.keys()
    sample_names = set()
    for name, family in before.items():
        labelled = after[name]
        assert (labelled.type, labelled.documentation) == (family.type, family.documentation)
        assert [(s.name, {**s.labels, "rank": "3"}, s.value) for s in family.samples] == [
            (s.name, s.labels, s.value) for s in labelled.samples
        ]
        sample_names |= {s.name for s in labelled.samples}
    # Every kind of sample went through: buckets, counts, sums, created, info, total.
    assert {
        "t_events_total",
        "t_events_created",
        "t_latency_seconds_bucket",
        "t_latency_seconds_count",
        "t_latency_seconds_sum",
        "t_latency_seconds_created",
        "t_batch_seconds_count",
        "t_learning_rate",
        "t_build_info",
        "t_state",
    } <= sample_names
    buckets = {
        s.labels["le"]: s.value
        for s in after["t_latency_seconds"].samples
        if s.name.endswith("_bucket")
    }
    assert buckets == {"0.1": 1.0, "1.0": 3.0, "+Inf": 4.0}
    assert after["t_build_info"].samples[0].labels == {"rank": "3", "version": "1.2.3"}


def test_the_collector_reads_the_registry_at_every_scrape() -> None:
    inner = CollectorRegistry()
    outer = served(inner, 0)
    steps = Counter("t_steps", "Steps.", registry=inner)  # registered after the wrapper
    steps.inc()
    first = parse(generate_latest(outer))["t_steps"].samples
    steps.inc(2)
    second = parse(generate_latest(outer))["t_steps"].samples

    assert [(s.labels, s.value) for s in first if s.name == "t_steps_total"] == [({"rank": "0"}, 1)]
    assert [(s.labels, s.value) for s in second if s.name == "t_steps_total"] == [
        ({"rank": "0"}, 3)
    ]


def test_openmetrics_exposition_parses_too() -> None:
    text = generate_openmetrics(served(rank_registry(), 1)).decode()

    families = list(parse_om(text))

    assert len(families) == 7
    assert all(s.labels["rank"] == "1" for f in families for s in f.samples)


def test_promtool_accepts_the_exposition() -> None:
    binary = shutil.which("promtool")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is not on PATH (Debian package `prometheus`)")
        pytest.skip("promtool is not on PATH (Debian package `prometheus`)")
    text = generate_latest(served(rank_registry(), 2))

    result = subprocess.run(
        [binary, "check", "metrics"], input=text, capture_output=True, timeout=30, check=False
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_a_metric_with_its_own_rank_label_is_refused_at_collection() -> None:
    inner = CollectorRegistry()
    ranked = Counter("t_ranked", "Has a rank label.", ["rank"], registry=inner)
    outer = served(inner, 0)
    assert b"t_ranked" in generate_latest(outer)  # no child yet: no sample carries the label

    ranked.labels(rank="1").inc()

    with pytest.raises(RankLabelConflictError, match="'t_ranked' already has a 'rank' label"):
        generate_latest(outer)


def test_registering_never_collects_the_inner_registry() -> None:
    class Spy:
        collections = 0

        def collect(self) -> list[Metric]:
            Spy.collections += 1
            return []

    inner = CollectorRegistry()
    inner.register(Spy())  # a collector without describe() is not collected by default
    outer = CollectorRegistry(auto_describe=True)

    outer.register(RankLabelledCollector(inner, 0))

    assert Spy.collections == 0
    generate_latest(outer)
    assert Spy.collections == 1


def test_a_negative_rank_is_refused() -> None:
    with pytest.raises(ValueError, match="-1"):
        RankLabelledCollector(CollectorRegistry(), -1)
