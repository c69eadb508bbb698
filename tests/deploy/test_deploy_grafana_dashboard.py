"""deploy/grafana/driftd.json is importable as is: structure, variables, and every PromQL parses.

No Grafana server can be installed here (see NOTES.md), so the dashboard is checked the way
Grafana reads it: unique panel ids, panels that fit the 24-column grid without overlapping,
every query bound to the ``$datasource`` variable and filtered by ``$job`` and ``$instance``,
and every expression (after Grafana's variable substitution) parsed by a PromQL parser. That
every expression also returns data is checked against a live daemon and Prometheus in
tests/integration/test_prometheus_queries.py.
"""

from __future__ import annotations

import promql_parser
import pytest

from tests.deploy.deploy_files import (
    DEPLOY,
    dashboard,
    dashboard_queries,
    load_yaml,
    metric_names,
    selectors,
    substitute,
)

BOARD = dashboard()
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GRID_COLUMNS = 24


def test_identity_and_refresh_are_set_for_provisioning() -> None:
    assert BOARD["uid"] == "driftd"
    assert BOARD["title"] == "driftd"
    assert isinstance(BOARD["schemaVersion"], int)
    assert BOARD["schemaVersion"] >= 36
    assert BOARD["refresh"]
    assert BOARD["time"]["from"].startswith("now-")
    assert "id" not in BOARD or BOARD["id"] is None, "a fixed id breaks import elsewhere"


def test_variables_datasource_job_instance_topic() -> None:
    variables = {v["name"]: v for v in BOARD["templating"]["list"]}
    assert list(variables) == ["datasource", "job", "instance", "topic"]
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "instance", "topic"):
        variable = variables[name]
        assert variable["type"] == "query"
        assert variable["datasource"] == DATASOURCE
        assert variable["includeAll"]
        assert variable["multi"]
        assert variable["allValue"] == ".*"
        assert variable["query"]["query"] == variable["definition"]
    assert "$job" in variables["instance"]["definition"], "instance follows the job choice"
    assert "$instance" in variables["topic"]["definition"]


def test_panel_ids_are_unique() -> None:
    ids = [panel["id"] for panel in BOARD["panels"]]
    assert len(ids) == len(set(ids)), ids
    assert all(isinstance(i, int) and i > 0 for i in ids)


def test_panels_fit_the_grid_without_overlapping() -> None:
    cells: dict[tuple[int, int], int] = {}
    for panel in BOARD["panels"]:
        grid = panel["gridPos"]
        assert min(grid["w"], grid["h"]) > 0, panel["title"]
        assert 0 <= grid["x"] <= GRID_COLUMNS - grid["w"], panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"panel {panel['id']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["id"]
    rows = [panel for panel in BOARD["panels"] if panel["type"] == "row"]
    assert all(row["gridPos"]["w"] == GRID_COLUMNS and row["gridPos"]["h"] == 1 for row in rows)


def test_every_panel_and_target_uses_the_datasource_variable() -> None:
    for panel in BOARD["panels"]:
        if panel["type"] == "row":
            assert not panel.get("targets"), panel["title"]
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, (panel["title"], target["refId"])
            assert target["legendFormat"], (panel["title"], target["refId"])
    for annotation in BOARD["annotations"]["list"][1:]:
        assert annotation["datasource"] == DATASOURCE, annotation["name"]


@pytest.mark.parametrize("query", dashboard_queries(BOARD), ids=lambda q: q.where)
def test_every_expression_parses_and_filters_by_job_and_instance(query) -> None:
    expr = substitute(query.expr)
    promql_parser.parse(expr)  # raises ValueError on a syntax error
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    if query.where.startswith("variable $job"):
        return
    for selector in selectors(substitute(query.expr, {"job": "JOB", "instance": "INSTANCE"})):
        matchers = {(m.name, m.value) for m in selector.matchers.matchers}
        assert ("job", "JOB") in matchers, f"{query.where}: {selector.name} ignores $job"
        if not query.where.startswith("variable $instance"):
            assert ("instance", "INSTANCE") in matchers, f"{query.where}: ignores $instance"
    assert all(name.startswith("driftd_") for name in metric_names(expr)), expr


def test_lag_is_filtered_by_topic_and_split_by_partition() -> None:
    lag = [q for q in dashboard_queries(BOARD) if "driftd_consumer_lag" in q.expr]
    panel_queries = [q for q in lag if q.where.startswith("panel")]
    assert panel_queries
    for query in panel_queries:
        assert 'topic=~"$topic"' in query.expr
        assert "partition" in query.expr


def test_the_panels_an_operator_needs_are_there() -> None:
    exprs = " ".join(q.expr for q in dashboard_queries(BOARD))
    for metric in (
        "driftd_events_consumed_total", "driftd_events_learned_total", "driftd_consumer_lag",
        "driftd_prequential_accuracy", "driftd_prequential_loss", "driftd_learning_rate",
        "driftd_drift_detected_total", "driftd_adaptations_total", "driftd_active_domain",
        "driftd_model_sparsity", "driftd_model_parameters", "driftd_model_flops_per_event",
        "driftd_prune_total", "driftd_snapshot_version", "driftd_model_version",
        "driftd_model_age_seconds", "driftd_model_reloads_total",
        "driftd_event_to_serving_seconds_bucket", "driftd_events_invalid_total",
        "driftd_step_seconds_bucket", "driftd_event_to_update_seconds_bucket",
        "driftd_dead_letter_backlog", "driftd_dead_letter_backpressure",
        "driftd_trainer_ranks", "driftd_model_syncs_total", "driftd_model_sync_seconds_bucket",
    ):  # fmt: skip
        assert metric in exprs, f"no panel shows {metric}"
    annotations = {a["name"]: a for a in BOARD["annotations"]["list"]}
    assert "driftd_drift_detected_total" in annotations["Drifts"]["expr"]
    assert annotations["Drifts"]["enable"] is True


def _panel(title: str) -> dict:
    (panel,) = [panel for panel in BOARD["panels"] if panel["title"] == title]
    return panel


def test_a_trainer_group_is_shown_per_rank_and_added_up_where_it_adds_up() -> None:
    # Counters of a group's ranks add up per job; the per-rank panel splits them by rank.
    for target in _panel("Throughput")["targets"]:
        assert target["expr"].startswith("sum by (job) (rate("), target["expr"]
    for target in _panel("Events/s per rank")["targets"]:
        assert target["expr"].startswith("sum by (job, instance, rank) (rate("), target["expr"]
    # Every rank counts every sync: the group's rate is one rank's, not their sum.
    (syncs,) = _panel("Model syncs")["targets"]
    assert syncs["expr"].startswith("max by (job, mode) (rate(driftd_model_syncs_total")
    sync_time = [t["expr"] for t in _panel("Model sync time")["targets"]]
    assert any("by (job, instance, rank, le)" in expr for expr in sync_time), "a slow rank"
    # Accuracy is a gauge per rank: each line, and the group's weighted by learned events.
    accuracy = {t["refId"]: t["expr"] for t in _panel("Prequential accuracy / R²")["targets"]}
    assert accuracy["A"].startswith("driftd_prequential_accuracy{")
    group = accuracy["C"]
    assert group.startswith("sum by (job) (driftd_prequential_accuracy{")
    assert metric_names(substitute(group)) == {
        "driftd_prequential_accuracy",
        "driftd_events_learned_total",
    }


def test_compose_provisioning_points_at_the_dashboard() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    datasource = load_yaml(provisioning / "datasources" / "prometheus.yml")["datasources"][0]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    provider = load_yaml(provisioning / "dashboards" / "driftd.yml")["providers"][0]
    compose = load_yaml(DEPLOY / "docker-compose.yml")
    mounts = compose["services"]["grafana"]["volumes"]
    dashboard_mount = next(m for m in mounts if m.startswith("./grafana/driftd.json:"))
    container_path = dashboard_mount.split(":")[1]
    assert container_path.startswith(provider["options"]["path"] + "/")
