"""``driftd report``: one self-contained HTML page that shows a run's timeline.

Aligned panels over the step axis (prequential accuracy and loss, learning rate, parameters,
FLOPs per event, sparsity; each with its unit), drawn from the log's per-N-events ``progress``
lines and the snapshots, event lanes below them (concept drifts and input alarms per
detector/signal, adaptations per kind, pruning outcomes, snapshots published or not) with
vertical lines through every panel, a legend and a summary table. The chart is inline SVG
written here: the page needs no script, no font and no network, so it opens offline, in a CI
artifact viewer or as an e-mail attachment.

:func:`render_html` is pure; :func:`write_report` is the file edge the CLI calls.
"""

from __future__ import annotations

import io
import json
import re
import sys
from html import escape
from pathlib import Path
from typing import Any

from driftd.tools.report_svg import (
    LANES,
    Palette,
    drawn_series,
    hollow,
    lane_of,
    render_svg,
    sparsity_stayed_zero,
)
from driftd.tools.run_summary import RunSummary
from driftd.tools.timeline import Timeline, timeline_from_log
from driftd.tools.timeline_events import Marker

_VERSION_DIR = re.compile(r"\d{10}")  # FileSnapshotStore's version directories
_STYLE = """
body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1040px; }
h1 { font-size: 1.3em; margin-bottom: .2em; } p.sources { color: #555; margin-top: 0; }
p.note { color: #8a4b00; }
svg text { font: 11px system-ui, sans-serif; fill: #444; }
svg .grid { stroke: #e4e4e4; } svg .frame { fill: none; stroke: #999; }
svg .series { fill: none; stroke-width: 1.6; } svg .marker line { stroke-width: 1.2; }
svg .marker:hover line { stroke-width: 3; opacity: 1; }
ul.legend { list-style: none; padding: 0; columns: 3; } ul.legend li { margin: .15em 0; }
span.swatch { display: inline-block; width: .9em; height: .9em; margin-right: .4em;
  vertical-align: -.1em; border: 1px solid #666; }
table.summary { border-collapse: collapse; } table.summary th, table.summary td {
  border: 1px solid #ccc; padding: .25em .7em; text-align: left; }
"""


def render_html(timeline: Timeline, *, title: str = "driftd run", sources: str = "") -> str:
    """The report page for ``timeline``; ``sources`` says which files it was drawn from."""
    palette = Palette()
    svg, left_out = render_svg(timeline, palette)
    notes = _notes(timeline)
    if left_out:
        notes.append(
            f"{left_out:,} markers fall on a pixel already holding one of the same kind and are "
            "not drawn (the summary counts them all)."
        )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        '<head><meta charset="utf-8">',
        f"<title>{escape(title)}</title>",
        f"<style>{_STYLE}</style></head>",
        "<body>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="sources">{escape(sources)}</p>' if sources else "",
        *(f'<p class="note">{escape(note)}</p>' for note in notes),
        svg,
        "<h2>Legend</h2>",
        _legend(timeline.markers, palette, drawn_series(timeline)),
        "<h2>Summary</h2>",
        _summary_table(timeline.summary),
        "</body>",
        "</html>",
    ]
    return "\n".join(part for part in parts if part) + "\n"


def write_report(*, log: Path | None, snapshots: Path | None, out: Path) -> Timeline:
    """Read a run's JSON-lines log (``-``: stdin) and manifests, write the page to ``out``.

    Raises:
        OSError: The log or the output cannot be read or written.
    """
    manifests, unreadable = read_manifests(snapshots) if snapshots is not None else ([], 0)
    if log is None:
        timeline = timeline_from_log((), manifests)
    elif str(log) == "-":
        if isinstance(sys.stdin, io.TextIOWrapper):
            sys.stdin.reconfigure(errors="replace")  # as for a file: bad bytes, bad lines
        timeline = timeline_from_log(sys.stdin, manifests)
    else:
        with log.open(encoding="utf-8", errors="replace") as lines:  # streamed: logs get big
            timeline = timeline_from_log(lines, manifests)
    timeline.malformed_manifests = unreadable
    named = [f"log {log}" if log is not None else "", f"snapshots {snapshots}" if snapshots else ""]
    sources = "Drawn from " + " and ".join(name for name in named if name) + "."
    out.write_text(render_html(timeline, title="driftd run report", sources=sources), "utf-8")
    return timeline


def read_manifests(directory: Path) -> tuple[list[dict[str, Any]], int]:
    """Every ``<version>/manifest.json`` under ``directory``; and how many could not be read.

    A version being written or deleted meanwhile counts as unreadable; it is not an error.
    """
    manifests: list[dict[str, Any]] = []
    unreadable = 0
    paths = directory.glob("*/manifest.json") if directory.is_dir() else []
    for path in sorted(paths):
        if not _VERSION_DIR.fullmatch(path.parent.name):
            continue  # temp entries of a snapshot being written
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            unreadable += 1
            continue
        if isinstance(manifest, dict):
            manifests.append(manifest)
        else:
            unreadable += 1
    return manifests, unreadable


def _notes(timeline: Timeline) -> list[str]:
    """What the reader should know about the sources: gaps, junk, an empty run."""
    notes = []
    if timeline.malformed_lines:
        notes.append(
            f"{timeline.malformed_lines} of {timeline.log_lines} log lines were not JSON and "
            "were skipped (driftd writes JSON lines with DRIFTD_LOG__JSON=true)."
        )
    if timeline.malformed_manifests:
        notes.append(f"{timeline.malformed_manifests} snapshot manifests could not be read.")
    if timeline.unplaced:
        notes.append(f"{timeline.unplaced} events carried no step and are not drawn.")
    if sparsity_stayed_zero(timeline):
        notes.append(
            "Sparsity stayed 0 and is not drawn: structured pruning removes whole units rather "
            "than zeroing weights, so the parameters and FLOPs panels show what it did."
        )
    if timeline.step_range() is None:
        notes.append("Nothing to draw: no points and no events with a step were found.")
    return notes


def _legend(markers: list[Marker], palette: Palette, shown: list[str]) -> str:
    """A swatch per series drawn (``shown``) and per marker category present."""
    items = []
    for name, label in palette.series_labels():
        if name in shown:
            items.append(_legend_item(palette.series_colour(name), label, filled=True))
    seen: set[tuple[str, str]] = set()
    for index, lane in enumerate(LANES):
        for marker in markers:
            key = (marker.event, marker.category)
            if lane_of(marker) == index and key not in seen:
                seen.add(key)
                colour = palette.marker_colour(marker)
                label = f"{lane}: {marker.category}"
                items.append(_legend_item(colour, label, filled=not hollow(marker)))
    warning = any(m.event == "drift_detected" and m.minor for m in markers)
    if warning:
        items.append("<li>dashed drift line: a warning, not a drift</li>")
    return '<ul class="legend">' + "".join(items) + "</ul>"


def _legend_item(colour: str, label: str, *, filled: bool) -> str:
    fill = colour if filled else "transparent"
    return (
        f'<li><span class="swatch" style="background:{fill};border-color:{colour}"></span>'
        f"{escape(label)}</li>"
    )


def _size(summary: RunSummary) -> str:
    parts = []
    if summary.final_parameters is not None:
        parts.append(f"{summary.final_parameters:,} parameters")
    if summary.final_flops is not None:
        parts.append(f"{summary.final_flops:,} FLOPs per event")
    return ", ".join(parts) or "-"


def _summary_table(summary: RunSummary) -> str:
    """The figures people ask first: how much came in, what happened, where it ended."""

    def count(value: int | None) -> str:
        return f"{value:,}" if value is not None else "-"

    def by_kind(counts: dict[str, int]) -> str:
        return ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items())) or "none"

    accuracy = (
        f"{summary.final_accuracy:.4f} (step {summary.final_step:,})"
        if summary.final_accuracy is not None and summary.final_step is not None
        else "-"
    )
    rows = [
        ("runs (start lines)", count(summary.runs)),
        ("events consumed", count(summary.events_consumed)),
        ("events learned", count(summary.events_learned)),
        ("events invalid", count(summary.events_invalid)),
        ("concept drifts", f"{summary.drifts:,} (and {summary.warnings:,} warnings)"),
        ("input alarms", _input_alarms(summary)),
        ("adaptations", f"{sum(summary.adaptations.values()):,}: {by_kind(summary.adaptations)}"),
        ("pruning events", f"{summary.pruned:,}: {by_kind(summary.prunes)}"),
        ("snapshots", f"{summary.snapshots:,} ({summary.published:,} published)"),
        ("final prequential accuracy", accuracy),
        ("final model size", _size(summary)),
    ]
    body = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows)
    return f'<table class="summary">{body}</table>'


def _input_alarms(summary: RunSummary) -> str:
    """The input alarms, and those the error did not confirm (reported as warnings)."""
    text = f"{summary.input_alarms:,} (the inputs' distribution moved"
    if summary.input_warnings:
        text += f"; {summary.input_warnings:,} more the error did not confirm"
    return text + ")"
