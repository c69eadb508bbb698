"""Parsing a run's JSON log and manifests into a timeline: exact points, markers and counts."""

from __future__ import annotations

import json
from typing import Any

from driftd.tools.timeline import build_timeline, parse_log_lines, timeline_from_log
from driftd.tools.timeline_events import Marker


def _line(event: str, **fields: Any) -> str:
    return json.dumps({"ts": 1.0, "level": "info", "logger": "driftd", "event": event, **fields})


def _snapshot(version: int, step: int, **fields: Any) -> str:
    return _line("snapshot_written", version=version, step=step, published=True, **fields)


RUN = [
    _line("start", message="driftd 0.1.0 starting"),
    _snapshot(1, 100, accuracy=0.8, loss=0.5, lr=0.005, parameters=1000, sparsity=0.0),
    "Traceback (most recent call last):",  # someone's print on stderr
    _line("drift_detected", kind="drift", detector="adwin", signal="loss", step=150),
    _line("drift_detected", kind="warning", detector="ddm", signal="error", step=140),
    _line("adapted", kind="new_head", domain="d1", step=150),
    _line("snapshot_written", version=2, step=200, published=False, accuracy=0.6, loss=0.9),
    _line("pruned", step=250, targets={"shared": 0.5, "head": 0.25}, removed=400, parameters=600),
    _line("prune_verdict", step=270, action="recover", outcome=None),  # on the way
    _line("prune_verdict", step=280, action="keep", outcome="recovered"),
    _snapshot(3, 300, accuracy=0.9, loss=0.3, lr=0.0005, parameters=600, sparsity=0.4),
    _line("model_served", version=3),  # not ours: ignored
    "",
    _line("stopped", message="stopped: 20000 events consumed, 19200 learned, 4 invalid, x"),
]


def test_points_come_from_snapshot_lines_and_pruning_in_step_order() -> None:
    timeline = timeline_from_log(RUN)

    assert timeline.series["accuracy"] == [(100, 0.8), (200, 0.6), (300, 0.9)]
    assert timeline.series["loss"] == [(100, 0.5), (200, 0.9), (300, 0.3)]
    assert timeline.series["lr"] == [(100, 0.005), (300, 0.0005)]
    assert timeline.series["parameters"] == [(100, 1000.0), (250, 600.0), (300, 600.0)]
    assert timeline.series["sparsity"] == [(100, 0.0), (300, 0.4)]
    assert timeline.step_range() == (100, 300)


def test_markers_carry_step_event_category_and_kind() -> None:
    timeline = timeline_from_log(RUN)

    assert [(m.step, m.event, m.category, m.minor) for m in timeline.markers] == [
        (100, "snapshot", "published", False),
        (140, "drift_detected", "ddm/error", True),
        (150, "drift_detected", "adwin/loss", False),
        (150, "adapted", "new_head", False),
        (200, "snapshot", "not published", True),
        (250, "pruned", "pruned", False),
        (270, "prune_verdict", "recover", True),
        (280, "prune_verdict", "recovered", False),
        (300, "snapshot", "published", False),
    ]
    pruned = next(m for m in timeline.markers if m.event == "pruned")
    assert pruned.detail == "pruned (shared 50%, head 25%) at step 250: 400 removed, 600 left"


def test_summary_counts_each_kind_and_reads_the_stopped_line() -> None:
    summary = timeline_from_log(RUN).summary

    assert (summary.runs, summary.drifts, summary.warnings) == (1, 1, 1)
    assert summary.adaptations == {"new_head": 1}
    assert (summary.pruned, summary.prunes) == (1, {"recovered": 1})
    assert (summary.snapshots, summary.published) == (3, 2)
    assert (summary.events_consumed, summary.events_learned, summary.events_invalid) == (
        20_000,
        19_200,
        4,
    )
    assert (summary.final_step, summary.final_accuracy) == (300, 0.9)


def test_malformed_lines_are_counted_not_fatal() -> None:
    timeline = timeline_from_log(RUN)

    assert (timeline.log_lines, timeline.malformed_lines) == (13, 1)
    lines = ["{", "[1, 2]", "null", "  ", '{"event": "x"}', '{"a": ' + "[" * 100_000]
    entries, seen, malformed = parse_log_lines(lines)
    assert (entries, seen, malformed) == ([{"event": "x"}], 5, 4)


def test_a_prefix_before_the_json_object_is_skipped() -> None:
    entries, _, malformed = parse_log_lines(['trainer-1  | {"event": "start"}'])

    assert (entries, malformed) == ([{"event": "start"}], 0)


def test_missing_or_unusable_fields_mean_missing_points_and_unplaced_markers() -> None:
    timeline = build_timeline(
        [
            {"event": "snapshot_written", "version": 1, "step": 10, "accuracy": "high"},
            {"event": "snapshot_written", "version": 2, "step": 20, "loss": float("nan")},
            {"event": "snapshot_written", "version": 3, "step": 30, "accuracy": True},
            {"event": "snapshot_written", "step": 40, "accuracy": 0.5},  # no version
            {"event": "drift_detected", "detector": "adwin", "signal": "loss"},  # no step
            {"event": "adapted", "kind": "lr_boost", "step": -3},
            {"event": "prune_verdict", "step": 2.5, "outcome": "kept"},
            {"event": "drift_detected", "step": 50},  # no detector or signal
            {"event": "stopped", "message": "stopped early"},
            {"no_event": 1},
        ]
    )

    assert timeline.series["accuracy"] == [(40, 0.5)]
    assert timeline.series["loss"] == []
    assert timeline.unplaced == 4  # the version-less snapshot, drift, adaptation, verdict
    assert [(m.step, m.event, m.category) for m in timeline.markers] == [
        (10, "snapshot", "published"),
        (20, "snapshot", "published"),
        (30, "snapshot", "published"),
        (50, "drift_detected", "?/?"),
    ]
    assert timeline.summary.events_consumed is None


def test_snapshot_unpublished_line_marks_its_version() -> None:
    timeline = build_timeline(
        [
            {"event": "snapshot_written", "version": 7, "step": 70, "published": True},
            {"event": "snapshot_unpublished", "version": 7, "reason": "worse"},
        ]
    )

    assert timeline.markers == [
        Marker(70, "snapshot", "not published", "snapshot 7 at step 70 (not published)", True)
    ]


def test_manifests_add_points_and_place_snapshots_the_log_did_not() -> None:
    manifests = [
        {
            "version": 4,
            "step": 400,
            "published": False,
            "metrics": {"prequential_accuracy": 0.7, "prequential_loss": 0.6},
            "parameters": 900,
            "sparsity": 0.1,
            "events_learned": 25_600,
            "events_rejected": 3,
        },
        {"version": 5, "step": 500, "metrics": {"learning_rate": 0.001}, "events_learned": 32_000},
        {"version": 6, "metrics": "corrupt"},
    ]
    log = [{"event": "snapshot_written", "version": 5, "published": True}]  # an older driftd

    timeline = build_timeline(log, manifests)

    assert timeline.series["accuracy"] == [(400, 0.7)]
    assert timeline.series["lr"] == [(500, 0.001)]
    assert timeline.series["parameters"] == [(400, 900.0)]
    assert [(m.step, m.category) for m in timeline.markers] == [
        (400, "not published"),
        (500, "published"),
    ]
    assert timeline.unplaced == 1  # version 6: no step anywhere
    summary = timeline.summary
    assert (summary.events_learned, summary.events_invalid) == (32_000, None)


def test_the_log_wins_over_a_manifest_and_a_replayed_step_takes_the_newer_value() -> None:
    log = [
        {"event": "snapshot_written", "version": 1, "step": 100, "accuracy": 0.5},
        {"event": "snapshot_written", "version": 2, "step": 200, "accuracy": 0.6},
        # killed, resumed from version 1: step 200 is learned again
        {"event": "snapshot_written", "version": 2, "step": 200, "accuracy": 0.65},
    ]
    manifests = [{"version": 1, "step": 100, "metrics": {"prequential_accuracy": 0.1}}]

    timeline = build_timeline(log, manifests)

    assert timeline.series["accuracy"] == [(100, 0.5), (200, 0.65)]
    assert timeline.summary.snapshots == 2


def test_stopped_lines_with_fields_are_summed_over_runs() -> None:
    timeline = build_timeline(
        [
            {"event": "start"},
            {"event": "stopped", "events_consumed": 10, "events_learned": 8, "events_invalid": 2},
            {"event": "start"},
            {"event": "stopped", "message": "stopped: 5 events consumed, 5 learned, 0 invalid"},
        ]
    )

    summary = timeline.summary
    assert summary.runs == 2
    assert (summary.events_consumed, summary.events_learned, summary.events_invalid) == (15, 13, 2)


def test_an_empty_log_is_an_empty_timeline() -> None:
    timeline = timeline_from_log([])

    assert timeline.step_range() is None
    assert timeline.markers == []
    assert all(points == [] for points in timeline.series.values())
    assert timeline.summary.final_accuracy is None


def test_points_measured_elsewhere_fill_in_where_the_log_has_none() -> None:
    log = [{"event": "snapshot_written", "version": 1, "step": 2, "accuracy": 0.75}]
    measured = {"accuracy": [(1, 0.5), (2, 0.0), (3, 1.0)], "not_a_series": [(1, 1.0)]}

    timeline = build_timeline(log, points=measured)

    assert timeline.series["accuracy"] == [(1, 0.5), (2, 0.75), (3, 1.0)]
    assert "not_a_series" not in timeline.series
