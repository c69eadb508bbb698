"""The report page: well-formed, self-contained HTML whose SVG has one element per point list
and one group per marker, a legend and a summary table; and the `driftd report` command."""

from __future__ import annotations

import io
import json
import re
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from driftd.cli import main
from driftd.tools.report import read_manifests, render_html, write_report
from driftd.tools.report_axes import format_value, log_ticks, thin_points, ticks
from driftd.tools.timeline import timeline_from_log

VOID = {"meta", "br", "hr", "img", "input", "link"}


class _Page(HTMLParser):
    """Checks that tags nest and close, and collects the elements the tests count."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.errors: list[str] = []
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))
        if tag not in VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.open[-1:] or 'nothing'}")
        else:
            self.open.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def find(self, tag: str, **wanted: str) -> list[dict[str, str]]:
        return [
            attrs
            for name, attrs in self.elements
            if name == tag and all(attrs.get(k.replace("_", "-")) == v for k, v in wanted.items())
        ]


def parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    page.close()
    assert page.errors == []
    assert page.open == []
    return page


def _line(event: str, **fields: Any) -> str:
    return json.dumps({"event": event, **fields})


SNAPSHOTS = [
    _line("snapshot_written", version=v, step=100 * v, published=v != 2, accuracy=0.5 + v / 20,
          loss=1.0 / v, lr=0.01 / v**2, parameters=1000 - 100 * v, sparsity=0.1 * v)
    for v in range(1, 6)
]  # fmt: skip
RUN = [
    _line("start"),
    *SNAPSHOTS,
    _line("drift_detected", kind="drift", detector="adwin", signal="loss", step=150),
    _line("drift_detected", kind="drift", detector="adwin", signal="loss", step=320),
    _line("drift_detected", kind="warning", detector="<ddm>", signal="err&r", step=330),
    _line("adapted", kind="new_head", domain="d1", step=150),
    _line("adapted", kind="lr_boost", domain="d1", step=151),
    _line("pruned", step=250, targets="shared", removed=400, parameters=600),
    _line("prune_verdict", step=260, outcome="kept"),
    _line("prune_verdict", step=460, outcome="rolled_back"),
    "not json",
    _line("stopped", message="stopped: 3200 events consumed, 3100 learned, 7 invalid"),
]


def test_the_page_is_well_formed_and_needs_nothing_from_the_network() -> None:
    html = render_html(timeline_from_log(RUN), title="run <1>", sources="log run.jsonl")

    page = parse(html)
    assert html.startswith("<!DOCTYPE html>")
    assert [tag for tag, _ in page.elements].count("svg") == 1
    assert "<title>run &lt;1&gt;</title>" in html
    assert not [a for _, a in page.elements if "src" in a or "href" in a]
    assert "<script" not in html


def test_one_polyline_per_series_with_one_point_per_value() -> None:
    page = parse(render_html(timeline_from_log(RUN)))

    counts = {line["data-series"]: len(line["points"].split()) for line in page.find("polyline")}
    # parameters: five snapshots plus the pruned line's count at step 250
    assert counts == {"accuracy": 5, "loss": 5, "lr": 5, "parameters": 6, "sparsity": 5}
    assert len(page.find("circle", **{"class": "dot"})) == 26


def test_points_are_placed_left_to_right_and_higher_values_higher() -> None:
    page = parse(render_html(timeline_from_log(RUN)))

    (accuracy,) = page.find("polyline", data_series="accuracy")
    points = [tuple(map(float, pair.split(","))) for pair in accuracy["points"].split()]
    xs, ys = [x for x, _ in points], [y for _, y in points]
    assert xs == sorted(xs)
    assert len(set(xs)) == 5
    assert ys == sorted(ys, reverse=True)  # rising accuracy: SVG y grows downwards


def test_one_marker_group_per_event_with_its_category() -> None:
    page = parse(render_html(timeline_from_log(RUN)))

    def markers(event: str) -> list[tuple[str, str]]:
        found = page.find("g", **{"class": "marker", "data-event": event})
        return [(g["data-step"], g["data-category"]) for g in found]

    assert markers("drift_detected") == [
        ("150", "adwin/loss"),
        ("320", "adwin/loss"),
        ("330", "<ddm>/err&r"),
    ]
    assert markers("adapted") == [("150", "new_head"), ("151", "lr_boost")]
    assert markers("pruned") == [("250", "pruned")]
    assert markers("prune_verdict") == [("260", "kept"), ("460", "rolled_back")]
    assert [c for _, c in markers("snapshot")] == ["published", "not published"] + ["published"] * 3
    dashed = page.find("line", **{"stroke-dasharray": "4 3"})
    assert len(dashed) == 1  # the warning


def test_legend_and_summary_say_what_happened() -> None:
    html = render_html(timeline_from_log(RUN))
    text = " ".join(parse(html).text)

    for label in ("concept drift: adwin/loss", "concept drift: <ddm>/err&r", "adaptation: new_head",
                  "pruning: kept", "pruning: rolled_back", "snapshot: not published"):  # fmt: skip
        assert label in text
    rows = re.findall(r"<tr><th>(.*?)</th><td>(.*?)</td></tr>", html)
    summary = {unescape(key): unescape(value) for key, value in rows}
    assert summary["events consumed"] == "3,200"
    assert summary["events learned"] == "3,100"
    assert summary["events invalid"] == "7"
    assert summary["concept drifts"] == "2 (and 1 warnings)"
    assert summary["input alarms"] == "0 (the inputs' distribution moved)"
    assert summary["adaptations"] == "2: lr_boost 1, new_head 1"
    assert summary["pruning events"] == "1: kept 1, rolled_back 1"
    assert summary["snapshots"] == "5 (4 published)"
    assert summary["final prequential accuracy"] == "0.7500 (step 500)"
    assert "1 of 16 log lines were not JSON" in text


def test_an_empty_timeline_still_renders_a_page_that_says_so() -> None:
    page = parse(render_html(timeline_from_log([])))

    assert page.find("polyline") == []
    assert "Nothing to draw" in " ".join(page.text)


def test_a_wide_learning_rate_range_is_drawn_on_a_log_scale() -> None:
    page = parse(render_html(timeline_from_log(RUN)))  # lr from 1e-2 to 4e-4

    assert "learning rate (optimizer step size) (log scale)" in page.text


def test_ticks_are_round_numbers_inside_the_range() -> None:
    assert ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert ticks(95.0, 1005.0, integer=True) == [200.0, 400.0, 600.0, 800.0, 1000.0]
    assert ticks(3.0, 5.0, integer=True) == [3.0, 4.0, 5.0]
    assert log_ticks(0.0004, 0.012) == [0.0005, 0.001, 0.002, 0.005, 0.01]
    assert [format_value(v) for v in (2_500_000, 35_000, 1_500, 0.25, 0.0005, 0.00005)] == [
        "2.5M", "35k", "1,500", "0.25", "0.0005", "5e-05",
    ]  # fmt: skip


def _manifest(directory: Path, name: str, manifest: Any) -> None:
    (directory / name).mkdir(parents=True)
    (directory / name / "manifest.json").write_text(
        manifest if isinstance(manifest, str) else json.dumps(manifest)
    )


def test_read_manifests_skips_temp_entries_and_counts_unreadable_ones(tmp_path: Path) -> None:
    _manifest(tmp_path, "0000000001", {"version": 1, "step": 10})
    _manifest(tmp_path, "0000000002", "{half a manifest")
    _manifest(tmp_path, "0000000003", [1, 2])
    _manifest(tmp_path, ".tmp-0000000004", {"version": 4, "step": 40})

    assert read_manifests(tmp_path) == ([{"version": 1, "step": 10}], 2)
    assert read_manifests(tmp_path / "absent") == ([], 0)


def test_write_report_joins_log_and_manifests(tmp_path: Path) -> None:
    log = tmp_path / "run.jsonl"
    log.write_text("\n".join(RUN) + "\n")
    snapshots = tmp_path / "snapshots"
    _manifest(snapshots, "0000000009", {"version": 9, "step": 900, "published": True,
                                        "metrics": {"prequential_accuracy": 0.99}})  # fmt: skip
    _manifest(snapshots, "0000000010", "not json")
    out = tmp_path / "report.html"

    timeline = write_report(log=log, snapshots=snapshots, out=out)

    assert timeline.series["accuracy"][-1] == (900, 0.99)
    assert timeline.malformed_manifests == 1
    page = parse(out.read_text())
    assert len(page.find("g", **{"class": "marker", "data-event": "snapshot"})) == 6
    assert "1 snapshot manifests could not be read." in page.text


def test_cli_report_writes_the_page_and_says_what_it_found(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "run.jsonl"
    log.write_text("\n".join(RUN) + "\n")
    out = tmp_path / "out.html"

    assert main(["report", "--log", str(log), "--out", str(out)]) == 0

    assert capsys.readouterr().out == (
        f"driftd report: {out}: 16 log lines (1 not JSON), 2 concept drifts, 0 input alarms, "
        "2 adaptations, 5 snapshots\n"
    )
    assert len(parse(out.read_text()).find("g", **{"class": "marker"})) == 13


def test_cli_report_needs_a_source_and_a_readable_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", "--out", str(tmp_path / "x.html")]) == 2
    assert "give --log, --snapshots or both" in capsys.readouterr().err

    assert main(["report", "--log", str(tmp_path / "missing.jsonl")]) == 1
    assert "missing.jsonl" in capsys.readouterr().err
    assert not (tmp_path / "x.html").exists()


def test_cli_report_reads_the_log_from_stdin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(RUN) + "\n"))
    out = tmp_path / "stdin.html"

    assert main(["report", "--log", "-", "--out", str(out)]) == 0

    assert "16 log lines (1 not JSON), 2 concept drifts" in capsys.readouterr().out
    assert len(parse(out.read_text()).find("g", **{"class": "marker"})) == 13


def test_markers_at_the_same_step_share_a_line_and_sit_side_by_side() -> None:
    same_step = [_line("adapted", kind=kind, step=150) for kind in ("a", "b", "c")]
    html = render_html(timeline_from_log([*SNAPSHOTS, *same_step]))
    groups = re.findall(r'<g class="marker" data-event="adapted".*?</g>', html)

    lines = [re.search(r'<line x1="([\d.]+)"', group) for group in groups]
    diamonds = [re.search(r'<polygon points="([\d.]+),', group) for group in groups]
    line_x = [float(found.group(1)) for found in lines if found]
    left_corner = [float(found.group(1)) for found in diamonds if found]
    assert len(set(line_x)) == 1
    assert [round(x - left_corner[0], 1) for x in left_corner] == [0.0, 10.0, 20.0]


def test_long_series_keep_each_pixel_columns_extremes() -> None:
    points = [(step, float(step % 7)) for step in range(10_000)]
    points[5_003] = (5_003, 100.0)  # a spike must survive

    thinned = thin_points(points, lambda step: step / 100, limit=1_000)

    assert len(thinned) == 2 * 101  # columns 0..100, lowest and highest in each
    assert (5_003, 100.0) in thinned
    assert [step for step, _ in thinned] == sorted(step for step, _ in thinned)
    assert thin_points(points[:10], lambda step: step, limit=10) == points[:10]


def test_past_the_cap_one_marker_per_pixel_and_kind_is_drawn_and_the_rest_counted() -> None:
    storm = [_line("drift_detected", kind="drift", detector="adwin", signal="loss", step=s)
             for s in range(3_000)]  # fmt: skip
    html = render_html(timeline_from_log([*SNAPSHOTS, *storm]))
    page = parse(html)

    drawn = page.find("g", **{"class": "marker", "data-event": "drift_detected"})
    assert 800 < len(drawn) < 1_000  # about one per pixel column of the plot
    assert f"{3_005 - len(drawn) - 5:,} markers fall on a pixel" in html
    rows = dict(re.findall(r"<tr><th>(.*?)</th><td>(.*?)</td></tr>", html))
    assert rows["concept drifts"] == "3,000 (and 0 warnings)"


def test_known_kinds_keep_their_colour_from_one_report_to_the_next() -> None:
    def colours(kinds: list[str]) -> dict[str, str]:
        lines = [_line("adapted", kind=kind, step=10 * i) for i, kind in enumerate(kinds)]
        groups = parse(render_html(timeline_from_log(lines))).elements
        found = {}
        for index, (tag, attrs) in enumerate(groups):
            if tag == "g" and attrs.get("data-event") == "adapted":
                found[attrs["data-category"]] = groups[index + 3][1]["fill"]  # g, title, line
        return found

    one, other = colours(["new_head", "replay", "x"]), colours(["replay", "y", "new_head"])
    assert one["new_head"] == other["new_head"]
    assert one["replay"] == other["replay"]
    assert len(set(one.values())) == 3
