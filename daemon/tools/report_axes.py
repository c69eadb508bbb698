"""Helpers of the report chart: round tick values, short number text, thinned points/markers."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from driftd.tools.timeline_events import Marker


def ticks(low: float, high: float, *, count: int = 5, integer: bool = False) -> list[float]:
    """About ``count`` round values (1, 2 or 5 times a power of ten) between low and high."""
    raw = (high - low) / count
    if raw <= 0:
        return [low]
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    if integer:
        step = max(1.0, round(step))
    start = math.ceil(low / step) * step
    ticks = []
    value = start
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    return ticks


def log_ticks(low: float, high: float) -> list[float]:
    """Powers of ten in the range, with 2x and 5x between them when there are few."""
    decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
    ticks = [10.0**k for k in decades if low <= 10.0**k <= high]
    if len(ticks) < 3:
        ticks = sorted(
            m * 10.0**k for k in decades for m in (1, 2, 5) if low <= m * 10.0**k <= high
        )
    return ticks


def format_value(value: float) -> str:
    """Short tick and tooltip text: 1.2M, 35k, 1,500, 0.25, 0.0005, 5e-05."""
    size = abs(value)
    if size >= 1e6:
        return f"{value / 1e6:.3g}M"
    if size >= 1e4:
        return f"{value / 1e3:.3g}k"
    if size >= 1e3:
        return f"{value:,.0f}"
    if 0 < size < 1e-4:
        return f"{value:.0e}"
    return f"{value:.3g}"


def thin_points(
    points: Sequence[tuple[int, float]], x: Callable[[float], float], *, limit: int
) -> Sequence[tuple[int, float]]:
    """``points`` as drawn: past ``limit`` points, the lowest and highest of each pixel column.

    A long run's series can hold far more points than the chart has pixels; keeping each
    column's extremes (in step order) draws the same picture, spikes and dips included.
    """
    if len(points) <= limit:
        return points
    columns: dict[int, list[tuple[int, float]]] = {}
    for point in points:
        columns.setdefault(round(x(point[0])), []).append(point)
    thinned: list[tuple[int, float]] = []
    for column in columns.values():  # in step order: points are sorted by step
        low = min(column, key=lambda point: point[1])
        high = max(column, key=lambda point: point[1])
        thinned.extend(sorted({low, high}))
    return thinned


def thin_markers(markers: Sequence[Marker], x: Callable[[float], float]) -> list[Marker]:
    """The first marker of each kind (event, category, variant) in each pixel column."""
    seen: set[tuple[str, str, bool, int]] = set()
    kept = []
    for marker in markers:
        key = (marker.event, marker.category, marker.minor, round(x(marker.step)))
        if key not in seen:
            seen.add(key)
            kept.append(marker)
    return kept
