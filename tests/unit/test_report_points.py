"""`driftd report` draws per-step points, separates concept drifts from input alarms, shows
units and model size, and gives every meaning its own colour."""

from __future__ import annotations

import json
import re
from html import unescape
from typing import Any

from driftd.tools.report import render_html
from driftd.tools.report_svg import _CYCLES, _FIXED, _SERIES_COLOURS, LANES, Palette, lane_of
from driftd.tools.timeline import timeline_from_log
from tests.unit.test_report import parse


def line(event: str, **fields: Any) -> str:
    return json.dumps({"event": event, **fields})


# A demo-like run: accuracy dips after step 50 and recovers, seen only between snapshots.
PROGRESS = [
    line("progress", step=step, accuracy=0.9 if not 50 <= step < 80 else 0.4, loss=0.3, lr=0.005,
         parameters=1000 - step, flops=2000 - 2 * step, events_consumed=64 * step,
         events_learned=64 * step)
    for step in range(10, 160, 10)
]  # fmt: skip
RUN = [
    line("start"),
    *PROGRESS,
    line("snapshot_written", version=1, step=100, published=True, accuracy=0.85, loss=0.3,
         lr=0.005, parameters=900, sparsity=0.0),
    line("snapshot_written", version=2, step=150, published=True, accuracy=0.9, loss=0.3,
         lr=0.005, parameters=850, sparsity=0.0),
    line("drift_detected", kind="drift", detector="adwin", signal="loss", step=52),
    line("drift_detected", kind="drift", detector="adwin", signal="input_mean", step=51),
    line("drift_detected", kind="drift", detector="adwin", signal="input_rms", step=51),
    line("stopped", events_consumed=9_700, events_learned=9_600, events_invalid=9),
]  # fmt: skip


def summary_rows(html: str) -> dict[str, str]:
    rows = re.findall(r"<tr><th>(.*?)</th><td>(.*?)</td></tr>", html)
    return {unescape(key): unescape(value) for key, value in rows}


def test_progress_lines_are_points_so_a_dip_between_snapshots_shows() -> None:
    timeline = timeline_from_log(RUN)
    accuracy = dict(timeline.series["accuracy"])
    assert sorted(accuracy) == list(range(10, 160, 10))  # 15 steps; snapshots share 100, 150
    assert min(accuracy.values()) == 0.4
    assert accuracy[100] == 0.85  # the snapshot line at the same step wins (it comes later)
    page = parse(render_html(timeline))
    (polyline,) = page.find("polyline", data_series="accuracy")
    assert len(polyline["points"].split()) == 15


def test_concept_drifts_and_input_alarms_are_apart() -> None:
    html = render_html(timeline_from_log(RUN))
    rows = summary_rows(html)
    assert rows["concept drifts"] == "1 (and 0 warnings)"
    assert rows["input alarms"] == "2 (the inputs' distribution moved)"
    timeline = timeline_from_log(RUN)
    lanes = {m.category: LANES[lane_of(m) or 0] for m in timeline.markers if m.step in (51, 52)}
    assert lanes == {
        "adwin/loss": "concept drift",
        "adwin/input_mean": "input alarm",
        "adwin/input_rms": "input alarm",
    }
    text = " ".join(parse(html).text)
    assert "input alarm: adwin/input_mean" in text
    assert "concept drift: adwin/loss" in text


def test_input_alarms_the_error_did_not_confirm_are_counted_apart() -> None:
    unconfirmed = line("drift_detected", kind="warning", detector="adwin", signal="input_mean",
                       step=80)  # fmt: skip
    rows = summary_rows(render_html(timeline_from_log([*RUN[:-1], unconfirmed, RUN[-1]])))
    assert rows["concept drifts"] == "1 (and 0 warnings)"
    assert rows["input alarms"] == (
        "2 (the inputs' distribution moved; 1 more the error did not confirm)"
    )


def test_the_summary_is_filled_for_a_demo_run() -> None:
    rows = summary_rows(render_html(timeline_from_log(RUN)))
    assert rows["runs (start lines)"] == "1"
    assert rows["events consumed"] == "9,700"
    assert rows["events learned"] == "9,600"
    assert rows["events invalid"] == "9"
    assert rows["final prequential accuracy"] == "0.9000 (step 150)"
    assert rows["final model size"] == "850 parameters, 1,700 FLOPs per event"


def test_structured_pruning_shows_parameters_and_flops_not_a_flat_sparsity() -> None:
    html = render_html(timeline_from_log(RUN))
    page = parse(html)
    drawn = {polyline["data-series"] for polyline in page.find("polyline")}
    assert drawn == {"accuracy", "loss", "lr", "parameters", "flops"}
    assert "Sparsity stayed 0 and is not drawn" in html
    # A run with real sparsity keeps its panel.
    sparse = [*RUN, line("snapshot_written", version=3, step=160, sparsity=0.5, parameters=800)]
    drawn = {
        p["data-series"] for p in parse(render_html(timeline_from_log(sparse))).find("polyline")
    }
    assert "sparsity" in drawn


def test_axes_carry_units() -> None:
    text = parse(render_html(timeline_from_log(RUN))).text
    for title in (
        "prequential accuracy (fraction correct, recent window)",
        "prequential loss (mean per labelled event, recent window)",
        "learning rate (optimizer step size)",
        "parameters (count)",
        "FLOPs per event (dense, one forward pass)",
        "step (gradient steps, one per mini-batch)",
    ):
        assert title in text


def test_every_colour_means_one_thing() -> None:
    series = list(_SERIES_COLOURS.values())
    fixed = list(_FIXED.values())
    cycles = [colour for cycle in _CYCLES.values() for colour in cycle]
    every = series + fixed + cycles
    assert len(every) == len(set(every))
    # Categories assigned on the fly take their own lane's colours, never another's.
    palette = Palette()
    timeline = timeline_from_log(
        [
            line("drift_detected", kind="drift", detector=d, signal=s, step=1)
            for d in ("adwin", "kswin")
            for s in ("loss", "input_mean")
        ]
    )
    colours = {m.category: palette.marker_colour(m) for m in timeline.markers}
    assert colours["adwin/loss"] in _CYCLES["concept drift"]
    assert colours["kswin/loss"] in _CYCLES["concept drift"]
    assert colours["adwin/input_mean"] in _CYCLES["input alarm"]
    assert colours["kswin/input_mean"] in _CYCLES["input alarm"]
    assert len(set(colours.values())) == 4
