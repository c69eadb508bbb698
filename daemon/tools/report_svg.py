"""The SVG chart of a :class:`~driftd.tools.timeline.Timeline`, drawn by hand (plain strings).

One ``<svg>``: a panel per series that has points (units in its title), stacked over a shared
step axis, then one lane per kind of event: concept drifts (the loss or error moved) apart from
input alarms (the inputs' distribution moved). Series and markers never share a colour.

Each point list becomes one ``<polyline class="series">``; each marker one
``<g class="marker" data-event=... data-category=... data-step=...>`` holding its lane symbol,
a vertical line through every panel (all but snapshots, which would crowd the chart) and a
``<title>`` tooltip. Tests count these elements, so keep one element per point list and
one group per marker.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from html import escape

from driftd.tools.report_axes import format_value, log_ticks, thin_markers, thin_points, ticks
from driftd.tools.timeline import SERIES, Timeline
from driftd.tools.timeline_events import Marker, input_alarm

LANES = ("concept drift", "input alarm", "adaptation", "pruning", "snapshot")
"""Event lanes under the panels, top to bottom (see :func:`lane_of`)."""
_LANE_OF_EVENT = {"adapted": 2, "pruned": 3, "prune_verdict": 3, "snapshot": 4}

_LABELS = {
    "accuracy": "prequential accuracy (fraction correct, recent window)",
    "loss": "prequential loss (mean per labelled event, recent window)",
    "lr": "learning rate (optimizer step size)",
    "parameters": "parameters (count)",
    "flops": "FLOPs per event (dense, one forward pass)",
    "sparsity": "sparsity (fraction of weights at zero)",
}
STEP_LABEL = "step (gradient steps, one per mini-batch)"
_SERIES_COLOURS = {
    "accuracy": "#1f77b4",
    "loss": "#d62728",
    "lr": "#2ca02c",
    "parameters": "#9467bd",
    "flops": "#e377c2",
    "sparsity": "#8c564b",
}
# Every colour means one thing: markers avoid the series colours (a marker never reads as a
# curve) and each other's. Known categories keep their colour from one report to the next;
# others take the next free one of their lane's cycle.
_CYCLES = {
    "concept drift": ("#e6550d", "#a50f15", "#fdae6b", "#7b4173"),
    "input alarm": ("#bcbd22", "#8c6d31", "#dbdb8d", "#e7cb94"),
    "adaptation": ("#e7969c", "#ad494a", "#9c9ede", "#cedb9c"),
}
_FIXED = {
    ("adapted", "lr_boost"): "#17becf",
    ("adapted", "lr_restart"): "#6baed6",
    ("adapted", "trunk_freeze"): "#393b79",
    ("adapted", "trunk_unfreeze"): "#756bb1",
    ("adapted", "new_head"): "#637939",
    ("adapted", "reuse_head"): "#b5cf6b",
    ("adapted", "evict_head"): "#843c39",
    ("adapted", "replay"): "#e7ba52",
    ("adapted", "grow_classes"): "#ce6dbd",
    ("adapted", "score_heads"): "#5254a3",
    ("adapted", "keep_head"): "#8ca252",
    ("pruned", "pruned"): "#7f7f7f",
    ("prune_verdict", "kept"): "#1b9e77",
    ("prune_verdict", "recovered"): "#fd8d3c",
    ("prune_verdict", "rolled_back"): "#67000d",
    ("prune_verdict", "interrupted"): "#9e9ac8",
    ("prune_verdict", "recover"): "#fdd0a2",
    ("snapshot", "published"): "#333333",
    ("snapshot", "not published"): "#999999",
}
_FIXED_RANGE = {"accuracy": (0.0, 1.0), "sparsity": (0.0, 1.0)}

WIDTH, LEFT, RIGHT, TOP = 960, 96, 16, 8
PANEL_HEIGHT, PANEL_GAP, LANE_HEIGHT, AXIS_HEIGHT = 104, 24, 20, 36
_SQUARE = ((-3.5, -3.5), (3.5, -3.5), (3.5, 3.5), (-3.5, 3.5))
SYMBOL_SPACING = 10.0  # px between lane symbols at (nearly) the same step
DOTS_UP_TO = 120
MARKERS_UP_TO = 2_000  # points per series drawn as dots too (sparse, snapshot-based series)


def lane_of(marker: Marker) -> int | None:
    """The index in :data:`LANES` of the lane ``marker`` is drawn in (None: not drawn)."""
    if marker.event == "drift_detected":
        return 1 if input_alarm(marker) else 0
    return _LANE_OF_EVENT.get(marker.event)


def drawn_series(timeline: Timeline) -> list[str]:
    """The series that get a panel: those with points, but not a sparsity that stayed 0.

    Structured pruning removes whole units: the parameters and FLOPs panels tell, not sparsity.
    """
    drawn = [name for name in SERIES if timeline.series.get(name)]
    if "sparsity" in drawn and sparsity_stayed_zero(timeline):
        drawn.remove("sparsity")
    return drawn


def sparsity_stayed_zero(timeline: Timeline) -> bool:
    """Sparsity is 0 at every point while the parameters or FLOPs series have points."""
    sparsity = timeline.series.get("sparsity") or []
    sized = timeline.series.get("parameters") or timeline.series.get("flops")
    return bool(sparsity) and bool(sized) and all(value == 0 for _, value in sparsity)


class Palette:
    """Colours: fixed per series and outcome, assigned in order of appearance otherwise."""

    def __init__(self) -> None:
        self._assigned: dict[tuple[str, str], str] = {}

    def series_labels(self) -> list[tuple[str, str]]:
        """(series name, label) in drawing order."""
        return [(name, _LABELS[name]) for name in SERIES]

    def series_colour(self, name: str) -> str:
        """The colour of a time series."""
        return _SERIES_COLOURS.get(name, "#333333")

    def marker_colour(self, marker: Marker) -> str:
        """The colour of a marker's category (stable for the palette's life)."""
        key = (marker.event, marker.category)
        if key in _FIXED:
            return _FIXED[key]
        if key not in self._assigned:
            lane = lane_of(marker)
            name = LANES[lane] if lane is not None else ""
            cycle = _CYCLES.get(name, ("#7f7f7f",))
            used = sum(1 for other in self._assigned.values() if other in cycle)
            self._assigned[key] = cycle[used % len(cycle)]
        return self._assigned[key]


def render_svg(timeline: Timeline, palette: Palette) -> tuple[str, int]:
    """The chart (panels, lanes, markers, step axis) and how many markers it left out.

    Up to :data:`MARKERS_UP_TO` markers every one is drawn; past it, one per pixel column
    per kind (a week of snapshots would otherwise weigh megabytes and draw the same pixels).
    """
    drawn = drawn_series(timeline)
    lanes_top = TOP + len(drawn) * (PANEL_HEIGHT + PANEL_GAP) + PANEL_GAP
    bottom = lanes_top + len(LANES) * LANE_HEIGHT
    height = bottom + AXIS_HEIGHT
    first, last = map(float, timeline.step_range() or (0, 1))
    margin = max(1.0, (last - first) * 0.015)  # markers at either end stay whole
    first, last = first - margin, last + margin

    def x(step: float) -> float:
        return LEFT + (step - first) / (last - first) * (WIDTH - LEFT - RIGHT)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" role="img" aria-label="run timeline">'
    ]
    for step in ticks(first, last, count=8, integer=True):
        parts.append(_vline("grid", x(step), TOP + PANEL_GAP, bottom))
        parts.append(_text(x(step), bottom + 14, f"{int(step):,}", anchor="middle"))
    parts.append(_text((LEFT + WIDTH - RIGHT) / 2, bottom + 30, STEP_LABEL, anchor="middle"))
    for index, name in enumerate(drawn):
        top = TOP + index * (PANEL_HEIGHT + PANEL_GAP) + PANEL_GAP
        parts.append(_panel(name, timeline.series[name], top, x, palette))
    for index, lane in enumerate(LANES):
        middle = lanes_top + index * LANE_HEIGHT + LANE_HEIGHT / 2
        parts.append(_text(LEFT - 6, middle + 4, lane, anchor="end"))
        parts.append(_hline("grid", middle))
    previous: dict[int, float] = {}  # per lane, where the last symbol went
    markers = timeline.markers
    if len(markers) > MARKERS_UP_TO:
        markers = thin_markers(markers, x)
    for marker in markers:
        row = lane_of(marker)
        if row is not None:
            middle = lanes_top + row * LANE_HEIGHT + LANE_HEIGHT / 2
            at = x(marker.step)
            # Side by side rather than on top of each other (the line keeps the true step),
            # unless a burst would push symbols far from their steps.
            beside = previous.get(row, -math.inf) + SYMBOL_SPACING
            symbol = beside if at < beside <= at + 3 * SYMBOL_SPACING else at
            previous[row] = symbol
            parts.append(_marker(marker, at, symbol, middle, TOP + PANEL_GAP, palette))
    parts.append("</svg>")
    return "\n".join(parts), len(timeline.markers) - len(markers)


def _panel(
    name: str,
    points: list[tuple[int, float]],
    top: float,
    x: Callable[[float], float],
    palette: Palette,
) -> str:
    """One series: frame, y ticks, title, the polyline and (when sparse) its dots."""
    values = [value for _, value in points]
    log_scale = name == "lr" and min(values) > 0 and max(values) / min(values) >= 20
    low, high = _value_range(name, values, log_scale=log_scale)
    to_unit = (lambda v: math.log10(v)) if log_scale else (lambda v: v)
    span = to_unit(high) - to_unit(low)

    def y(value: float) -> float:
        clamped = min(max(value, low), high)
        return top + PANEL_HEIGHT - (to_unit(clamped) - to_unit(low)) / span * PANEL_HEIGHT

    colour = palette.series_colour(name)
    parts = [f'<g class="panel" data-series="{name}">']
    for tick in log_ticks(low, high) if log_scale else ticks(low, high):
        parts.append(_hline("grid", y(tick)))
        parts.append(_text(LEFT - 6, y(tick) + 4, format_value(tick), anchor="end"))
    width = WIDTH - LEFT - RIGHT
    parts.append(
        f'<rect class="frame" x="{LEFT}" y="{top}" width="{width}" height="{PANEL_HEIGHT}"/>'
    )
    title = _LABELS[name] + (" (log scale)" if log_scale else "")
    parts.append(_text(LEFT, top - 6, title, anchor="start"))
    drawn = thin_points(points, x, limit=2 * (WIDTH - LEFT - RIGHT))
    coordinates = " ".join(f"{x(step):.1f},{y(value):.1f}" for step, value in drawn)
    parts.append(
        f'<polyline class="series" data-series="{name}" stroke="{colour}" points="{coordinates}"/>'
    )
    if len(points) <= DOTS_UP_TO:
        for step, value in points:
            tooltip = f"{_LABELS[name].split(' (')[0]} {format_value(value)} at step {step:,}"
            parts.append(
                f'<circle class="dot" cx="{x(step):.1f}" cy="{y(value):.1f}" r="2" fill="{colour}">'
                f"<title>{escape(tooltip)}</title></circle>"
            )
    parts.append("</g>")
    return "\n".join(parts)


def _marker(
    marker: Marker, at: float, symbol: float, middle: float, top: float, palette: Palette
) -> str:
    """A marker's group: tooltip, vertical line at ``at`` (not for snapshots), lane symbol."""
    colour = palette.marker_colour(marker)
    attributes = (
        f'class="marker" data-event="{escape(marker.event)}" '
        f'data-category="{escape(marker.category)}" data-step="{marker.step}"'
    )
    parts = [f"<g {attributes}><title>{escape(marker.detail)}</title>"]
    if marker.event != "snapshot":
        warning = marker.minor and marker.event == "drift_detected"
        dash = ' stroke-dasharray="4 3"' if warning else ""
        dash = ' stroke-dasharray="1 2"' if marker.event == "adapted" else dash
        parts.append(
            f'<line x1="{at:.1f}" x2="{at:.1f}" y1="{top}" y2="{middle:.1f}" stroke="{colour}" '
            f'opacity="0.5"{dash}/>'
        )
    r = 4.5
    if marker.event == "drift_detected":  # a triangle pointing down at the step
        shape = _polygon((symbol - r, middle - r), (symbol + r, middle - r), (symbol, middle + r))
    elif marker.event == "adapted":  # a diamond
        shape = _polygon(
            (symbol, middle - r), (symbol + r, middle), (symbol, middle + r), (symbol - r, middle)
        )
    elif marker.event == "pruned":  # a square
        shape = _polygon(*((symbol + dx, middle + dy) for dx, dy in _SQUARE))
    else:
        shape = f'<circle cx="{symbol:.1f}" cy="{middle:.1f}" r="{r - 1}"'
    fill = "white" if hollow(marker) else colour
    parts.append(f'{shape} fill="{fill}" stroke="{colour}"/></g>')
    return "".join(parts)


def hollow(marker: Marker) -> bool:
    """Drawn as an outline: a snapshot not published, a pruning verdict on the way."""
    return marker.minor and marker.event in ("snapshot", "prune_verdict")


def _value_range(name: str, values: list[float], *, log_scale: bool) -> tuple[float, float]:
    """The y range of a panel: fixed for fractions, the data (padded) otherwise."""
    low, high = min(values), max(values)
    if name in _FIXED_RANGE and _FIXED_RANGE[name][0] <= low and high <= _FIXED_RANGE[name][1]:
        return _FIXED_RANGE[name]
    if log_scale:
        return low / 1.2, high * 1.2
    if low >= 0 and name == "loss":
        low = 0.0
    pad = (high - low) * 0.05 or max(abs(high) * 0.05, 1e-9)
    return low - pad if low != 0 else low, high + pad


def _polygon(*corners: tuple[float, float]) -> str:
    """An unclosed ``<polygon`` tag (the caller adds fill and stroke)."""
    return '<polygon points="' + " ".join(f"{px:.1f},{py:.1f}" for px, py in corners) + '"'


def _vline(css: str, at: float, top: float, bottom: float) -> str:
    return f'<line class="{css}" x1="{at:.1f}" x2="{at:.1f}" y1="{top}" y2="{bottom}"/>'


def _hline(css: str, at: float) -> str:
    return f'<line class="{css}" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{at:.1f}" y2="{at:.1f}"/>'


def _text(at: float, baseline: float, text: str, *, anchor: str) -> str:
    return f'<text x="{at:.1f}" y="{baseline:.1f}" text-anchor="{anchor}">{escape(text)}</text>'
