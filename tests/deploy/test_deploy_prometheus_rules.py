"""deploy/prometheus: promtool accepts the config and the rules, and every alert is unit-tested.

promtool (Debian's ``prometheus`` package) checks the syntax and runs alerts_test.yml; the
Python checks make sure that file really covers every alert both firing and not firing, and
that every alert carries the annotations an on-call engineer reads.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.deploy.deploy_files import ALERTS, DEPLOY, alert_rules, load_yaml, metric_names

PROMETHEUS_DIR = DEPLOY / "prometheus"
ALERTS_TEST = PROMETHEUS_DIR / "alerts_test.yml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is not on PATH (Debian package `prometheus`)")
        pytest.skip("promtool is not on PATH (Debian package `prometheus`)")
    return subprocess.run(
        [binary, *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=60
    )


def test_promtool_accepts_the_rules() -> None:
    result = promtool("check", "rules", ALERTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_accepts_the_compose_prometheus_config() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "is valid prometheus config file syntax" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", ALERTS_TEST.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    suite = load_yaml(ALERTS_TEST)
    assert suite["rule_files"] == [ALERTS.name]
    firing: set[str] = set()
    silent: set[str] = set()
    for test in suite["tests"]:
        for case in test["alert_rule_test"]:
            (firing if case["exp_alerts"] else silent).add(case["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - firing == set(), "alerts never tested firing"
    assert names - silent == set(), "alerts never tested not firing"
    assert firing | silent <= names, "tests of alerts that do not exist"


def test_the_required_alerts_exist() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    required = {
        "DriftdDown", "DriftdDriftStorm", "DriftdAccuracyDrop", "DriftdConsumerLagGrowing",
        "DriftdNoRecentSnapshot", "DriftdServingModelTooOld", "DriftdInvalidEventRateHigh",
        "DriftdSnapshotFailures", "DriftdDeadLettersUndelivered", "DriftdDeadLetterBackpressure",
    }  # fmt: skip
    assert required <= names


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_alert_has_runbook_text_severity_and_driftd_metrics(rule: dict) -> None:
    assert {"summary", "description", "runbook"} <= set(rule["annotations"])
    assert len(rule["annotations"]["runbook"].split()) >= 20, "a runbook says what to do"
    assert rule["labels"]["severity"] in {"warning", "critical"}
    names = metric_names(rule["expr"])
    assert names, rule["expr"]
    assert all(name.startswith("driftd_") or name == "up" for name in names), names
