"""Every PromQL expression of deploy/ returns data from a real Prometheus scraping real daemons.

A `driftd run` trainer and a `driftd infer` worker run as subprocesses on the real broker; a
drifting stream (two concepts, a few malformed records) goes through them, with pruning on
and every snapshot published, so drifts, adaptations, invalid events, reloads and lag all
happen. A real Prometheus (Debian's binary) scrapes both every second and loads
deploy/prometheus/alerts.yml. Then:

- every dashboard expression (panel targets, annotations, variable queries) must return at
  least one sample, after Grafana's variables are substituted (All for job/instance/topic);
- every alert rule is checked through the *signals* it compares (the operands of each
  threshold comparison, see ``deploy_files.alert_signals``): each must return data, while
  the full expression must only be accepted by Prometheus. A healthy run rightly fires none
  of these alerts, so requiring data from the full expressions would need a broken system
  per alert (promtool's unit tests in alerts_test.yml cover the firing logic instead); what a
  live system can prove is that every metric and label an alert compares really exists;
- Prometheus reports every rule of alerts.yml loaded and evaluated with health "ok".

An expression that returns nothing passes only when each of its metrics without series is in
one of the two named allow-lists below, and even then Prometheus must know the metric from a
scrape's HELP/TYPE (so a misspelled name still fails).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from driftd.adapters.embedded_broker import EmbeddedBroker
from driftd.tools.streams import DriftingStream
from tests.deploy.deploy_files import (
    ALERTS,
    alert_rules,
    alert_signals,
    dashboard_queries,
    metric_names,
    substitute,
)
from tests.integration.driftd_process import DriftdProcess, produce, scrape
from tests.integration.prometheus_server import PrometheusServer, require_prometheus

pytestmark = pytest.mark.integration

PHASE = 4_000  # events per concept (as in test_adaptation_e2e: enough for a detected drift)
BAD_RECORDS = [b"not json", b'{"x": [1, 2]}', b"", b'{"y": 1}']
JOBS = {"trainer": "driftd-trainer", "infer": "driftd-infer"}
LIVE_VALUES = {"job": "|".join(JOBS.values()), "instance": ".*", "topic": ".*"}

#: Series that exist only once something goes wrong (or with another detector): a healthy run
#: has none. An expression over them may return nothing; Prometheus must still know the name.
FAILURE_ONLY_METRICS = {
    "driftd_snapshot_failures_total",
    "driftd_snapshot_notification_failures_total",
    "driftd_model_reloads_refused_total",
    "driftd_steps_skipped_total",
    "driftd_snapshots_unpublished_total",  # the gate is off here: every snapshot is published
    "driftd_drift_warnings_total",  # warnings come from binary detectors (ddm, ...), not adwin
}
#: Metrics of features still being wired into the daemon: their expressions may return nothing
#: and the names may be unknown until they land. Empty now: `driftd run` with pruning.enabled
#: exports driftd_prune_total and driftd_model_flops_per_event, and both return data here.
PENDING_METRICS: set[str] = set()


def _stream_payloads() -> list[bytes]:
    stream = DriftingStream(n_events=2 * PHASE, change_every=PHASE, n_concepts=2, seed=3)
    return [orjson.dumps({**event, "ts": time.time()}) for event in stream.events()]


def _wait(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _total(samples: dict[str, float], prefix: str) -> float:
    return sum(value for name, value in samples.items() if name.startswith(prefix))


@pytest.fixture
def live_stack(
    broker: EmbeddedBroker,
    unique_topic: Callable[..., str],
    start_driftd: Callable[..., DriftdProcess],
    tmp_path: Path,
) -> Iterator[tuple[PrometheusServer, str]]:
    """Trainer + inference worker + Prometheus, after a drifting stream went through them."""
    require_prometheus()
    topic, snapshots = unique_topic(partitions=2), tmp_path / "snapshots"
    common = {
        "DRIFTD_MODEL__N_CLASSES": "3",
        "DRIFTD_SNAPSHOTS__DIR": str(snapshots),
        "DRIFTD_METRICS__LAG_EVERY_SECONDS": "0.5",
        "DRIFTD_LEARNER__BATCH_SIZE": "32",
    }
    trainer = start_driftd(
        "run",
        {
            **common,
            "DRIFTD_KAFKA__TOPICS": topic,
            "DRIFTD_KAFKA__GROUP_ID": f"driftd-{uuid.uuid4().hex[:8]}",
            "DRIFTD_MODEL__SEED": "3",
            "DRIFTD_LEARNER__METRICS_WINDOW": "500",
            "DRIFTD_SNAPSHOTS__EVERY_STEPS": "8",
            "DRIFTD_SNAPSHOTS__EVERY_SECONDS": "0.5",
            "DRIFTD_SNAPSHOTS__GATE_ENABLED": "false",  # publish all: the worker reloads
            "DRIFTD_PRUNING__ENABLED": "true",
            "DRIFTD_PRUNING__EVERY_STEPS": "20",
        },
    )
    worker = start_driftd(
        "infer",
        {
            **common,
            "DRIFTD_INFER__INPUT_TOPICS": topic,
            "DRIFTD_INFER__OUTPUT_TOPIC": f"predictions-{uuid.uuid4().hex[:8]}",
            "DRIFTD_INFER__GROUP_ID": f"infer-{uuid.uuid4().hex[:8]}",
        },
    )
    ports = {"trainer": trainer.port, "infer": worker.port}
    prometheus = PrometheusServer(
        tmp_path,
        {JOBS[name]: [f"127.0.0.1:{port}"] for name, port in ports.items()},
        rule_files=[ALERTS],
    ).start()
    try:
        payloads = _stream_payloads()
        produce(broker.bootstrap_servers, topic, payloads[:PHASE] + BAD_RECORDS)
        _wait(
            lambda: scrape(ports["trainer"]).get("driftd_events_learned_total", 0) >= PHASE,
            "the first concept to be learned",
        )
        produce(broker.bootstrap_servers, topic, payloads[PHASE:])

        def drifted_and_served() -> bool:
            learned = scrape(ports["trainer"])
            served = scrape(ports["infer"])
            return (
                learned.get("driftd_events_learned_total", 0) >= 2 * PHASE
                and _total(learned, "driftd_drift_detected_total") >= 1
                and served.get("driftd_predictions_total", 0) >= 2 * PHASE
                and served.get("driftd_model_reloads_total", 0) >= 1
            )

        _wait(drifted_and_served, "the drift to be learned and the stream predicted")
        # Prometheus has scraped that state (both jobs) once their counters show it.
        _wait(
            lambda: len(prometheus.query(f"driftd_events_consumed_total >= {2 * PHASE}")) == 2,
            "Prometheus to scrape the final counters of both daemons",
            timeout=30,
        )
        yield prometheus, topic
    finally:
        prometheus.stop()


def _problems(prometheus: PrometheusServer, where: str, expr: str) -> list[str]:
    """Why ``expr`` fails the check (empty: it returned data, or is excused; see above)."""
    if prometheus.query(expr):
        return []
    missing = {name for name in metric_names(expr) if not prometheus.has_series(name)}
    unexcused = missing - FAILURE_ONLY_METRICS - PENDING_METRICS
    unknown = {name for name in missing & FAILURE_ONLY_METRICS if not prometheus.knows_metric(name)}
    if not missing:
        return [f"{where}: no data although its metrics have series: {expr}"]
    return [
        f"{where}: no data; {name} {why}"
        for names, why in ((unexcused, "has no series"), (unknown, "is unknown to Prometheus"))
        for name in sorted(names)
    ]


def test_every_dashboard_and_alert_expression_returns_data_and_rules_are_healthy(
    live_stack: tuple[PrometheusServer, str],
) -> None:
    prometheus, topic = live_stack
    problems: list[str] = []
    queries = dashboard_queries()
    for query in queries:
        problems += _problems(prometheus, query.where, substitute(query.expr, LIVE_VALUES))
    for rule in alert_rules():
        prometheus.query(rule["expr"])  # valid: a syntax or type error raises here
        for index, signal in enumerate(alert_signals(rule["expr"])):
            problems += _problems(prometheus, f"alert {rule['alert']} signal {index}", signal)
    assert problems == [], "\n".join(problems)
    assert len(queries) >= 40

    # The variables list what a user picks from: both jobs, and the stream's topic.
    jobs = prometheus.query("group by (job) (driftd_build_info)")
    assert {sample["metric"]["job"] for sample in jobs} == set(JOBS.values())
    topics = prometheus.query("group by (topic) (driftd_consumer_lag)")
    assert {sample["metric"]["topic"] for sample in topics} == {topic}
    partitions = prometheus.query(
        f'group by (job, partition) (driftd_consumer_lag{{topic="{topic}"}})'
    )
    assert {(s["metric"]["job"], s["metric"]["partition"]) for s in partitions} == {
        (job, partition) for job in JOBS.values() for partition in ("0", "1")
    }
    # Drifts show as annotations: the annotation query finds this run's concept drift (the
    # inputs' ADWIN may mark the switch too), and only the trainer's.
    (drifts,) = [q for q in queries if q.where == "annotation 'Drifts'"]
    marked = prometheus.query(substitute(drifts.expr, LIVE_VALUES))
    assert {s["metric"]["job"] for s in marked} == {"driftd-trainer"}
    assert "hddm_a" in {s["metric"]["detector"] for s in marked}
    # So do pruning rounds (every 20 steps here), and no series that never increased.
    (pruning,) = [q for q in queries if q.where == "annotation 'Pruning'"]
    rounds = prometheus.query(substitute(pruning.expr, LIVE_VALUES))
    assert rounds, "no pruning round marked"
    assert all(float(s["value"][1]) > 0 for s in rounds)

    # Prometheus loaded every rule of alerts.yml and evaluates each without error.
    def evaluated() -> list[dict]:
        groups = prometheus.api("rules", type="alert")["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return rules if rules and all(rule["health"] != "unknown" for rule in rules) else []

    _wait(lambda: bool(evaluated()), "every rule to be evaluated once", timeout=15)
    rules = evaluated()
    assert {rule["name"] for rule in rules} == {rule["alert"] for rule in alert_rules()}
    unhealthy = {rule["name"]: rule.get("lastError") for rule in rules if rule["health"] != "ok"}
    assert unhealthy == {}
