"""Soak: `driftd run` on a continuously produced drifting stream, drift, adaptation and pruning
on, snapshots frequent. Memory, file descriptors, the replay buffer, the stored domains and the
metrics' series must stay bounded.

Normal runs last ``SOAK_SECONDS`` (60 s); ``DRIFTD_FAULTS_HEAVY=1`` runs
``DRIFTD_SOAK_SECONDS`` (default one hour). RSS (VmRSS) and open fds of the daemon and its
consumer child are sampled every second; after a warm-up a least-squares slope is fitted and
printed (``pytest -s``).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from driftd.adapters.embedded_broker import EmbeddedBroker
from driftd.tools.streams import DriftingStream
from tests.faults.s3_broker import HEAVY, newest_manifest, open_fds, process_tree, rss_kib
from tests.integration.driftd_process import DriftdProcess, scrape

SOAK_SECONDS = float(os.environ.get("DRIFTD_SOAK_SECONDS", "3600")) if HEAVY else 60.0
WARM_UP_SECONDS = min(20.0, SOAK_SECONDS / 3)
EVENTS_PER_SECOND = 400
MAX_HEADS, REPLAY_SIZE, DOMAINS = 3, 256, 6  # more domains than heads: the LRU must evict
# Generous: a leak of a few KiB per event would be ~10x this. Long runs get a tighter bound.
MAX_RSS_SLOPE_MIB_PER_MIN = 2.0 if HEAVY else 12.0
MAX_FD_SPREAD = 4  # sockets may be reopened, but the count must not climb


@dataclass
class Samples:
    """Per-second readings of the daemon's process tree, with their times."""

    times: list[float] = field(default_factory=list)
    rss_mib: list[float] = field(default_factory=list)  # the daemon itself
    tree_rss_mib: list[float] = field(default_factory=list)  # with its consumer child
    fds: list[int] = field(default_factory=list)

    def take(self, pid: int, now: float) -> None:
        tree = process_tree(pid)
        self.times.append(now)
        self.rss_mib.append(rss_kib(pid) / 1024)
        self.tree_rss_mib.append(sum(rss_kib(p) for p in tree) / 1024)
        self.fds.append(sum(open_fds(p) for p in tree))

    def after(self, start: float) -> Samples:
        keep = [i for i, t in enumerate(self.times) if t >= start]
        return Samples(
            [self.times[i] for i in keep],
            [self.rss_mib[i] for i in keep],
            [self.tree_rss_mib[i] for i in keep],
            [self.fds[i] for i in keep],
        )


def slope_per_minute(times: list[float], values: list[float]) -> float:
    """Least-squares slope of ``values`` over ``times`` (seconds), per minute."""
    n = len(times)
    mean_t, mean_v = sum(times) / n, sum(values) / n
    covariance = sum((t - mean_t) * (v - mean_v) for t, v in zip(times, values, strict=True))
    variance = sum((t - mean_t) ** 2 for t in times)
    return 60.0 * covariance / variance


def test_slope_of_a_line_is_its_rate_per_minute() -> None:
    assert slope_per_minute([0.0, 1.0, 2.0, 3.0], [5.0, 5.5, 6.0, 6.5]) == pytest.approx(30.0)
    assert slope_per_minute([0.0, 1.0, 2.0], [3.0, 3.0, 3.0]) == 0.0


class StreamProducer(threading.Thread):
    """Produces the drifting stream at a steady rate until stopped; a few records are bad."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.topic = topic
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
        self.stopping = threading.Event()
        self.good = self.bad = 0

    def run(self) -> None:
        stream = DriftingStream(n_events=10**9, change_every=3_000, seed=3)
        started = time.monotonic()
        for index, event in enumerate(stream.events()):
            if self.stopping.is_set():
                break
            concept = stream.concept_at(index)
            domain = f"dom-{(concept + (index // 9_000) * 3) % DOMAINS}"
            if index % 100 == 99:
                self.producer.produce(self.topic, value=b'{"x": "not numbers", "y": 0}')
                self.bad += 1
            value = orjson.dumps({**event, "domain": domain, "ts": time.time()})
            self.producer.produce(self.topic, value=value, key=str(index).encode())
            self.good += 1
            self.producer.poll(0)
            ahead = (self.good + self.bad) / EVENTS_PER_SECOND - (time.monotonic() - started)
            if ahead > 0:
                self.stopping.wait(ahead)
        assert self.producer.flush(30) == 0


def _series(port: int) -> set[str]:
    return set(scrape(port))


def _adaptation(manifest: dict[str, Any]) -> dict[str, Any]:
    adaptation = manifest["adaptation"]
    assert isinstance(adaptation, dict)
    return adaptation


@pytest.mark.integration
@pytest.mark.faults_heavy
def test_soak_memory_fds_buffers_and_series_stay_bounded(
    broker: EmbeddedBroker,
    unique_topic: Callable[..., str],
    start_driftd: Callable[..., DriftdProcess],
    tmp_path: Path,
) -> None:
    topic, snapshots = unique_topic(partitions=2), tmp_path / "soak-snapshots"
    daemon = start_driftd(
        "run",
        {
            "DRIFTD_KAFKA__TOPICS": topic,
            "DRIFTD_KAFKA__GROUP_ID": f"soak-{uuid.uuid4().hex[:8]}",
            "DRIFTD_MODEL__N_CLASSES": "3",
            "DRIFTD_LEARNER__BATCH_SIZE": "64",
            "DRIFTD_SNAPSHOTS__DIR": str(snapshots),
            "DRIFTD_SNAPSHOTS__EVERY_STEPS": "50",
            "DRIFTD_SNAPSHOTS__EVERY_SECONDS": "1",
            "DRIFTD_SNAPSHOTS__KEEP": "3",
            "DRIFTD_DRIFT__ENABLED": "true",
            "DRIFTD_ADAPTATION__ENABLED": "true",
            "DRIFTD_ADAPTATION__MAX_HEADS": str(MAX_HEADS),
            "DRIFTD_ADAPTATION__REPLAY_SIZE": str(REPLAY_SIZE),
            "DRIFTD_PRUNING__ENABLED": "true",
            "DRIFTD_PRUNING__EVERY_STEPS": "50",
            "DRIFTD_METRICS__LAG_EVERY_SECONDS": "1",
        },
    )
    port = daemon.port
    producer = StreamProducer(broker.bootstrap_servers, topic)
    producer.start()
    samples, started = Samples(), time.monotonic()
    series_at_warm_up: set[str] | None = None
    try:
        while (now := time.monotonic()) - started < SOAK_SECONDS:
            assert daemon.process.poll() is None, daemon.logs[-5:]
            samples.take(daemon.process.pid, now - started)
            if series_at_warm_up is None and now - started >= WARM_UP_SECONDS:
                series_at_warm_up = _series(port)
            time.sleep(1.0)
        series_at_end = _series(port)
        metrics = scrape(port)
    finally:
        producer.stopping.set()
        producer.join(60)
    assert daemon.stop(timeout=60) == 0

    steady = samples.after(WARM_UP_SECONDS)
    rss_slope = slope_per_minute(steady.times, steady.rss_mib)
    tree_slope = slope_per_minute(steady.times, steady.tree_rss_mib)
    manifest = newest_manifest(snapshots)
    assert manifest is not None
    adaptation = _adaptation(manifest)
    stored_domains = adaptation["heads"]
    assert series_at_warm_up is not None
    new_series = sorted(series_at_end - series_at_warm_up)
    print(
        f"\nsoak: {SOAK_SECONDS:.0f} s, {producer.good} good + {producer.bad} bad events, "
        f"learned {manifest['events_learned']}, steps {manifest['step']}, "
        f"sparsity {manifest['sparsity']:.3f}, prunes {_prunes(metrics)}, "
        f"drifts {_total(metrics, 'driftd_drift_detected_total')}\n"
        f"soak: RSS {steady.rss_mib[0]:.0f} -> {steady.rss_mib[-1]:.0f} MiB, slope "
        f"{rss_slope:+.2f} MiB/min (with consumer child {tree_slope:+.2f} MiB/min, "
        f"{steady.tree_rss_mib[-1]:.0f} MiB); fds {min(steady.fds)}..{max(steady.fds)}; "
        f"replay {adaptation['replay']['size']}/{adaptation['replay']['capacity']}, "
        f"heads {len(stored_domains)}/{MAX_HEADS}, domains {len(manifest['domains'])}; "
        f"series {len(series_at_warm_up)} -> {len(series_at_end)} (new: {new_series})"
    )
    assert manifest["events_learned"] > EVENTS_PER_SECOND * SOAK_SECONDS / 4  # it kept up
    assert rss_slope < MAX_RSS_SLOPE_MIB_PER_MIN
    assert tree_slope < MAX_RSS_SLOPE_MIB_PER_MIN
    assert max(steady.fds) - min(steady.fds) <= MAX_FD_SPREAD
    assert adaptation["replay"]["capacity"] == REPLAY_SIZE
    assert adaptation["replay"]["size"] <= REPLAY_SIZE
    assert len(stored_domains) <= MAX_HEADS
    assert len(manifest["domains"]) <= MAX_HEADS + 1  # stored heads + the live one
    assert sum(1 for s in series_at_end if s.startswith("driftd_active_domain")) == 1
    assert len(series_at_end) <= len(series_at_warm_up) + 10, new_series


def _total(metrics: dict[str, float], name: str) -> float:
    return sum(value for key, value in metrics.items() if key.split("{")[0] == name)


def _prunes(metrics: dict[str, float]) -> dict[str, float]:
    return {
        key.split("outcome=")[1].rstrip("}"): value
        for key, value in metrics.items()
        if key.startswith("driftd_prune_total{")
    }
