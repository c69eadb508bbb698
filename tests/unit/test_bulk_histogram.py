"""BulkHistogram must expose exactly what prometheus_client's Histogram.observe would."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from driftd.adapters.bulk_histogram import BulkHistogram

BUCKETS = (0.001, 0.01, 0.1, 1.0, 10.0)


def scrape(registry: CollectorRegistry, name: str) -> tuple[dict[str, float], float, float]:
    """Return ({le: cumulative count}, count, sum) of histogram ``name`` from the exposition."""
    text = generate_latest(registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    family = families[name]
    assert family.type == "histogram"
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name == f"{name}_bucket"}
    (count,) = [s.value for s in family.samples if s.name == f"{name}_count"]
    (total,) = [s.value for s in family.samples if s.name == f"{name}_sum"]
    return buckets, count, total


def reference(values: np.ndarray, buckets: tuple[float, ...] = BUCKETS):
    """The same values through prometheus_client's own Histogram.observe, one by one."""
    registry = CollectorRegistry()
    histogram = Histogram("ref_seconds", "reference", buckets=buckets, registry=registry)
    for value in values.tolist():
        histogram.observe(value)
    return scrape(registry, "ref_seconds")


def bulk(batches: list[np.ndarray], buckets: tuple[float, ...] = BUCKETS):
    registry = CollectorRegistry()
    histogram = BulkHistogram("bulk_seconds", "bulk", buckets, registry=registry)
    for batch in batches:
        histogram.observe_many(batch)
    return scrape(registry, "bulk_seconds")


def test_matches_reference_on_random_batches() -> None:
    rng = np.random.default_rng(7)
    batches = [rng.lognormal(mean=-3.0, sigma=3.0, size=n) for n in (1, 500, 4096, 37)]
    expected_buckets, expected_count, expected_sum = reference(np.concatenate(batches))
    buckets, count, total = bulk(batches)
    assert buckets == expected_buckets
    assert count == expected_count == 4634
    # Summation order differs (numpy is pairwise), so the last bits may too.
    assert total == pytest.approx(expected_sum, rel=1e-12)


def test_values_on_bucket_bounds_are_inclusive_and_sum_is_exact_for_dyadic_values() -> None:
    # Every bound, just below and just above it, zero, a negative value and one past the top.
    values = np.array(
        [b for bound in BUCKETS for b in (bound, np.nextafter(bound, 0), np.nextafter(bound, 99))]
        + [0.0, -0.5, 1000.0]
    )
    expected_buckets, expected_count, _ = reference(values)
    buckets, count, _ = bulk([values])
    assert buckets == expected_buckets
    assert buckets == {"0.001": 4, "0.01": 7, "0.1": 10, "1.0": 13, "10.0": 16, "+Inf": 18}
    assert count == expected_count == 18

    dyadic = np.array([0.25, 0.5, 0.5, 2.0, 16.0, 0.0078125])
    assert bulk([dyadic[:2], dyadic[2:]])[2] == reference(dyadic)[2] == 19.2578125


def test_non_finite_values_are_ignored() -> None:
    values = np.array([0.5, np.nan, np.inf, -np.inf, 2.0])
    buckets, count, total = bulk([values])
    assert count == 2
    assert total == 2.5
    assert buckets["1.0"] == 1
    assert buckets["+Inf"] == 2


def test_empty_state_and_empty_batches() -> None:
    buckets, count, total = bulk([np.empty(0), np.array([np.nan])])
    assert set(buckets.values()) == {0.0}
    assert len(buckets) == len(BUCKETS) + 1
    assert (count, total) == (0, 0.0)


def test_accepts_any_shape_and_single_observe() -> None:
    histogram = BulkHistogram("x_seconds", "x", BUCKETS)
    histogram.observe_many(np.full((3, 4), 0.05))
    histogram.observe(20.0)
    histogram.observe(math.nan)
    counts, total = histogram.values()
    assert counts == [0, 0, 12, 12, 12, 13]
    assert total == pytest.approx(12 * 0.05 + 20.0)


def test_concurrent_writers_lose_nothing() -> None:
    histogram = BulkHistogram("c_seconds", "c", BUCKETS)
    batch = np.array([0.0005, 0.5, 50.0])

    def write() -> None:
        for _ in range(500):
            histogram.observe_many(batch)

    threads = [threading.Thread(target=write) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counts, total = histogram.values()
    assert counts == [2000, 2000, 2000, 4000, 4000, 6000]
    assert total == pytest.approx(2000 * 50.5005)


def test_trailing_inf_bound_is_accepted_and_le_labels_match_histogram() -> None:
    values = np.array([1e-5, 3e-4, 7.0])
    buckets = (1e-5, 2.5e-4, 0.5, math.inf)
    assert bulk([values], buckets)[0] == reference(values, buckets)[0]


@pytest.mark.parametrize("buckets", [(), (math.inf,), (1.0, 1.0), (2.0, 1.0), (math.nan,)])
def test_rejects_bad_buckets(buckets: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="bucket"):
        BulkHistogram("bad_seconds", "bad", buckets)


def test_registers_its_name_so_duplicates_are_caught() -> None:
    registry = CollectorRegistry()
    BulkHistogram("dup_seconds", "first", BUCKETS, registry=registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Histogram("dup_seconds", "second", registry=registry)
