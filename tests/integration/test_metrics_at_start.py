"""Every metric the dashboard and the alerts name is scraped from a daemon that saw no event yet."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from driftd.adapters.memory_source import InMemoryRecordSource
from driftd.app import build_trainer
from driftd.infer import build_inference_worker
from driftd.settings.root import Settings, load_settings

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
# Series named by labels only known later: the assigned partitions, the live domain.
LABELLED_LATER = {"driftd_consumer_lag", "driftd_active_domain"}
Exposed = dict[str, list[tuple[dict[str, str], float]]]


def named_metrics() -> set[str]:
    """Every ``driftd_*`` name in the Grafana dashboard and the Prometheus alert rules."""
    files = [DEPLOY / "grafana" / "driftd.json", *sorted((DEPLOY / "prometheus").glob("*.yml"))]
    names: set[str] = set()
    for path in files:
        names.update(re.findall(r"\bdriftd_[a-z0-9_]*[a-z0-9]", path.read_text()))
    return names


def scrape(port: int) -> Exposed:
    """Sample name -> (labels, value) of every sample on ``/metrics``."""
    with OPENER.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    found: Exposed = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def settings(tmp_path: Path) -> Settings:
    return load_settings(
        model={"n_classes": 3},
        snapshots={"dir": str(tmp_path / "snapshots")},
        metrics={"port": 0},
        infer={"input_topics": ["events"], "output_topic": "predictions"},
    )


@pytest.fixture
def exposed(tmp_path: Path) -> Iterator[Exposed]:
    """The trainer's and the inference worker's samples, scraped before any event."""
    configured = settings(tmp_path)
    trainer = build_trainer(configured, source=InMemoryRecordSource([]), serve_metrics=True)
    worker = build_inference_worker(configured, serve_metrics=True)
    try:
        assert trainer.server is not None
        assert worker.server is not None
        both = scrape(trainer.server.port)
        for name, samples in scrape(worker.server.port).items():
            both.setdefault(name, []).extend(samples)
        yield both
    finally:
        trainer.close()
        worker.close()


def test_every_dashboard_and_alert_metric_exists_before_any_event(exposed: Exposed) -> None:
    named = named_metrics()
    assert len(named) >= 30  # the parse found the files' metrics
    missing = sorted(name for name in named - LABELLED_LATER if name not in exposed)
    assert missing == []


def test_counters_start_at_zero_for_each_known_label(exposed: Exposed) -> None:
    def zeros(name: str, label: str) -> set[str]:
        return {labels[label] for labels, value in exposed[name] if value == 0}

    assert zeros("driftd_steps_skipped_total", "reason") == {"non_finite_loss"}
    assert {"ENOSPC", "EACCES", "EROFS"} <= zeros("driftd_snapshot_failures_total", "reason")
    assert zeros("driftd_snapshots_unpublished_total", "reason") == {
        "non_finite", "unscored", "below_baseline", "regressed",
    }  # fmt: skip
    assert zeros("driftd_model_reloads_refused_total", "reason") == {
        "missing", "corrupt", "unsupported", "incompatible", "bad_model",
    }  # fmt: skip
    assert {"not_json", "missing_x", "unknown_label"} <= zeros(
        "driftd_events_invalid_total", "reason"
    )
    # The default monitor: HDDM_A on the errors, ADWIN on the inputs' mean and RMS.
    drifts = exposed["driftd_drift_detected_total"]
    pairs = {(labels["detector"], labels["signal"]) for labels, _ in drifts}
    assert pairs == {("hddm_a", "error"), ("adwin", "input_mean"), ("adwin", "input_rms")}
    assert all(value == 0 for _, value in drifts)


def test_no_created_series(exposed: Exposed) -> None:
    assert [name for name in exposed if name.endswith("_created")] == []
