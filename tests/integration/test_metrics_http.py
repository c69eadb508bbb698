"""Scrape PrometheusTelemetry over real HTTP from MetricsServer and check every contract series."""

from __future__ import annotations

import gzip
import math
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

import driftd
from driftd.adaptation.outcomes import ADAPTATION_KINDS
from driftd.adapters.http_endpoint import MetricsServer
from driftd.adapters.prometheus_telemetry import PRUNE_OUTCOMES, PrometheusTelemetry
from driftd.records import TopicPartition

pytestmark = pytest.mark.integration

SNAPSHOT_TIME = 1_700_000_000.5
# Loopback must never go through an HTTP proxy from the environment.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class FixedClock:
    def monotonic(self) -> float:
        return 0.0

    def time(self) -> float:
        return SNAPSHOT_TIME


class Probes:
    """Switchable health/readiness callbacks."""

    def __init__(self) -> None:
        self.healthy: tuple[bool, str] = (True, "")
        self.ready: tuple[bool, str] = (False, "no partitions assigned")
        self.error: Exception | None = None

    def health(self) -> tuple[bool, str]:
        if self.error is not None:
            raise self.error
        return self.healthy

    def readiness(self) -> tuple[bool, str]:
        return self.ready


def get(port: int, path: str, headers: dict[str, str] | None = None):
    """GET over real HTTP; return (status, headers, body) whatever the status."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with OPENER.open(request, timeout=5) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers, error.read()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(scraped: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str):
    return scraped[(name, frozenset(labels.items()))]


def buckets(scraped: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str):
    """Cumulative counts of a label-less histogram at each ``le`` where it grows, and +Inf.

    That pins the whole distribution while keeping expectations short.
    """
    found = {
        dict(labels)["le"]: v
        for (sample, labels), v in scraped.items()
        if sample == f"{name}_bucket"
    }
    previous = 0.0
    changed = {}
    for le, count in found.items():  # exposition order is ascending le
        if count != previous or le == "+Inf":
            changed[le] = count
        previous = count
    return changed


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def telemetry(registry: CollectorRegistry) -> PrometheusTelemetry:
    return PrometheusTelemetry(registry, clock=FixedClock())


@pytest.fixture
def probes() -> Probes:
    return Probes()


@pytest.fixture
def port(registry: CollectorRegistry, probes: Probes) -> Iterator[int]:
    server = MetricsServer(
        registry, "127.0.0.1", 0, health=probes.health, readiness=probes.readiness
    )
    bound = server.start()
    yield bound
    server.stop()


def feed(telemetry: PrometheusTelemetry) -> None:
    telemetry.events_consumed(100)
    telemetry.events_consumed(28)
    telemetry.events_learned(120)
    telemetry.events_invalid("not_json", 3)
    telemetry.events_invalid("missing_x")
    telemetry.step_skipped("non_finite_loss")
    telemetry.step_skipped("non_finite_loss")
    telemetry.step_completed(0.002, 0.75, 0.5)
    telemetry.step_completed(0.2, None, None)  # None keeps the window values
    telemetry.learning_rate(0.01)
    telemetry.event_latencies(np.array([0.004, 0.004, 2.0, np.nan, 700.0, -1.0]))
    telemetry.model_shape(1234, 0.5)
    telemetry.snapshot_written(3, 0.04)
    telemetry.snapshot_failed("disk_full")
    telemetry.consumer_lag({TopicPartition("events", 0): 5, TopicPartition("events", 1): 7})


def test_every_contract_series_has_the_fed_value(telemetry: PrometheusTelemetry, port: int) -> None:
    feed(telemetry)
    status, headers, body = get(port, "/metrics")
    assert status == 200
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    m = samples(body.decode())

    assert value(m, "driftd_events_consumed_total") == 128
    assert value(m, "driftd_events_learned_total") == 120
    assert value(m, "driftd_events_invalid_total", reason="not_json") == 3
    assert value(m, "driftd_events_invalid_total", reason="missing_x") == 1
    assert value(m, "driftd_steps_skipped_total", reason="non_finite_loss") == 2
    assert value(m, "driftd_steps_total") == 2
    assert value(m, "driftd_prequential_accuracy") == 0.75
    assert value(m, "driftd_prequential_loss") == 0.5
    assert value(m, "driftd_learning_rate") == 0.01
    assert value(m, "driftd_model_parameters") == 1234
    assert value(m, "driftd_model_sparsity") == 0.5
    assert value(m, "driftd_snapshot_version") == 3
    assert value(m, "driftd_snapshot_last_success_timestamp_seconds") == SNAPSHOT_TIME
    assert value(m, "driftd_snapshot_failures_total", reason="disk_full") == 1
    assert value(m, "driftd_consumer_lag", topic="events", partition="0") == 5
    assert value(m, "driftd_consumer_lag", topic="events", partition="1") == 7
    assert value(m, "driftd_build_info", version=driftd.__version__) == 1

    assert buckets(m, "driftd_step_seconds") == {"0.0025": 1, "0.25": 2, "+Inf": 2}
    assert value(m, "driftd_step_seconds_count") == 2
    assert value(m, "driftd_step_seconds_sum") == pytest.approx(0.202)
    assert buckets(m, "driftd_snapshot_write_seconds") == {"0.05": 1, "+Inf": 1}
    assert value(m, "driftd_snapshot_write_seconds_sum") == 0.04
    # NaN dropped; -1 (clock skew) counts as 0.
    assert buckets(m, "driftd_event_to_update_seconds") == {
        "0.001": 1, "0.005": 3, "2.5": 4, "+Inf": 5,
    }  # fmt: skip
    assert value(m, "driftd_event_to_update_seconds_count") == 5
    assert value(m, "driftd_event_to_update_seconds_sum") == pytest.approx(702.008)


def test_contract_families_exist_before_any_report(port: int, telemetry: PrometheusTelemetry):
    _, _, body = get(port, "/metrics")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    for name in ("driftd_drift_detected", "driftd_adaptations", "driftd_prune"):
        assert families[name].type == "counter"
    # Detector/signal pairs depend on the settings: those series appear with the first drift.
    assert families["driftd_drift_detected"].samples == []
    # Known kinds and outcomes start at zero, so increase() also counts the first event.
    for name, label, known in (
        ("driftd_adaptations", "kind", ADAPTATION_KINDS),
        ("driftd_prune", "outcome", PRUNE_OUTCOMES),
    ):
        totals = {
            s.labels[label]: s.value for s in families[name].samples if s.name.endswith("_total")
        }
        assert totals == dict.fromkeys(known, 0.0)
    text = body.decode()
    assert "# TYPE driftd_drift_detected_total counter" in text
    m = samples(text)
    for unknown in ("accuracy", "loss"):
        assert math.isnan(value(m, f"driftd_prequential_{unknown}"))
    assert math.isnan(value(m, "driftd_learning_rate"))
    assert value(m, "driftd_snapshot_version") == 0
    assert value(m, "driftd_snapshot_last_success_timestamp_seconds") == 0
    assert value(m, "driftd_event_to_update_seconds_count") == 0
    assert not any(name == "driftd_consumer_lag" for name, _ in m)


def test_dropped_partition_series_disappears(telemetry: PrometheusTelemetry, port: int) -> None:
    telemetry.consumer_lag({TopicPartition("events", 0): 5, TopicPartition("events", 1): 7})
    telemetry.consumer_lag({TopicPartition("events", 0): 2, TopicPartition("other", 3): 9})
    m = samples(get(port, "/metrics")[2].decode())
    lag = {frozenset(labels): v for (name, labels), v in m.items() if name == "driftd_consumer_lag"}
    assert lag == {
        frozenset({("topic", "events"), ("partition", "0")}): 2,
        frozenset({("topic", "other"), ("partition", "3")}): 9,
    }
    telemetry.consumer_lag({})
    m = samples(get(port, "/metrics")[2].decode())
    assert not any(name == "driftd_consumer_lag" for name, _ in m)


def test_openmetrics_and_gzip_on_request(telemetry: PrometheusTelemetry, port: int) -> None:
    telemetry.events_consumed(7)
    status, headers, body = get(
        port, "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert status == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    assert body.endswith(b"# EOF\n")
    families = {f.name: f for f in openmetrics_families(body.decode())}
    (total,) = [s for s in families["driftd_events_consumed"].samples if s.name.endswith("_total")]
    assert total.value == 7

    status, headers, body = get(port, "/metrics", {"Accept-Encoding": "gzip"})
    assert (status, headers["Content-Encoding"]) == (200, "gzip")
    assert value(samples(gzip.decompress(body).decode()), "driftd_events_consumed_total") == 7


def test_probes_follow_their_callbacks(probes: Probes, port: int) -> None:
    assert get(port, "/healthz")[::2] == (200, b"ok\n")
    assert get(port, "/readyz")[::2] == (503, b"no partitions assigned\n")
    probes.ready = (True, "")
    probes.healthy = (False, "source closed")
    assert get(port, "/readyz")[::2] == (200, b"ok\n")
    assert get(port, "/healthz")[::2] == (503, b"source closed\n")
    probes.error = RuntimeError("boom")
    assert get(port, "/healthz")[::2] == (503, b"probe raised RuntimeError: boom\n")
    assert get(port, "/nope")[0] == 404
    assert get(port, "/metrics?name[]=x")[0] == 200


def test_start_stop_context_manager_and_port_zero(registry: CollectorRegistry) -> None:
    def ok() -> tuple[bool, str]:
        return True, ""

    with MetricsServer(registry, "127.0.0.1", 0, health=ok, readiness=ok) as server:
        port = server.port
        assert port > 0
        assert get(port, "/healthz")[0] == 200
        with pytest.raises(RuntimeError, match="already started"):
            server.start()
    with pytest.raises(urllib.error.URLError):
        get(port, "/healthz")  # the listening socket is closed
    server.stop()  # idempotent


def test_promtool_accepts_the_exposition(telemetry: PrometheusTelemetry, port: int) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is not on PATH (Debian package `prometheus`)")
        pytest.skip("promtool is not on PATH (Debian package `prometheus`)")
    feed(telemetry)
    body = get(port, "/metrics")[2]
    result = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == b""  # no lint findings either
