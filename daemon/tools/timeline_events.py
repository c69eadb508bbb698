"""What one driftd log line says, for :mod:`driftd.tools.timeline`: markers and tolerant numbers.

Log fields are read defensively: a field may be absent, null, or of another type in a log
written by another driftd version; the helpers here turn that into None or ``?``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# `stopped` lines carry their counters in the message; extra fields, if present, come first.
_STOPPED_TEXT = re.compile(r"(\d+) events consumed, (\d+) learned, (\d+) invalid")
_COUNTERS = ("events_consumed", "events_learned", "events_invalid")


@dataclass(frozen=True)
class Marker:
    """Something that happened at a step, drawn as a vertical marker.

    Attributes:
        step: The learner's step.
        event: ``drift_detected``, ``adapted``, ``pruned``, ``prune_verdict`` or ``snapshot``.
        category: What colours it: ``detector/signal`` of a drift, the adaptation kind, the
            pruning outcome, ``published`` or ``not published`` for a snapshot.
        detail: One line for people (the marker's tooltip).
        minor: A lesser variant: a drift *warning*, a snapshot that was not published, a
            pruning verdict on the way (``recover``) rather than an outcome.
    """

    step: int
    event: str
    category: str
    detail: str
    minor: bool = False


def input_alarm(marker: Marker) -> bool:
    """A drift marker on an input signal (``input_mean``, ``input_rms``): the inputs moved.

    The others watch the loss or the error: the concept changed (the model got worse).
    """
    return marker.event == "drift_detected" and marker.category.rpartition("/")[2].startswith(
        "input_"
    )


def stopped_counts(entry: Mapping[str, Any]) -> tuple[int, int, int] | None:
    """Events consumed, learned and invalid of a ``stopped`` line (fields, else its message)."""
    counts = [whole_number(entry.get(name)) for name in _COUNTERS]
    if None not in counts:
        return (counts[0] or 0, counts[1] or 0, counts[2] or 0)
    found = _STOPPED_TEXT.search(str(entry.get("message", "")))
    if found is None:
        return None
    consumed, learned, invalid = (int(number) for number in found.groups())
    return consumed, learned, invalid


def marker_from_entry(event: str, step: int, entry: Mapping[str, Any]) -> Marker:
    """The marker of a drift, adaptation or pruning line."""
    if event == "drift_detected":
        detector, signal = _text(entry, "detector"), _text(entry, "signal")
        kind = _text(entry, "kind", "drift")
        detail = f"{kind}: {detector} on {signal} at step {step}"
        before, after = finite_number(entry.get("before")), finite_number(entry.get("after"))
        if before is not None and after is not None:
            detail += f", level {before:.4g} -> {after:.4g}"
        return Marker(step, event, f"{detector}/{signal}", detail, minor=kind == "warning")
    if event == "adapted":
        kind, domain = _text(entry, "kind"), _text(entry, "domain")
        return Marker(step, event, kind, f"adapted: {kind} (domain {domain}) at step {step}")
    if event == "pruned":
        targets = entry.get("targets")
        if isinstance(targets, Mapping):  # part -> target sparsity
            targets = ", ".join(f"{part} {_percent(targets[part])}" for part in targets)
        detail = f"pruned ({targets or '?'}) at step {step}: {_text(entry, 'removed')} removed"
        return Marker(step, event, "pruned", f"{detail}, {_text(entry, 'parameters')} left")
    # A verdict without an outcome is a step on the way (``recover``: try again), not the end.
    outcome = entry.get("outcome")
    category = str(outcome) if outcome is not None else _text(entry, "action")
    return Marker(
        step, event, category, f"pruning {category} at step {step}", minor=outcome is None
    )


def _text(entry: Mapping[str, Any], key: str, default: str = "?") -> str:
    """A field as text; ``default`` when absent or null."""
    value = entry.get(key)
    return default if value is None else str(value)


def _percent(value: Any) -> str:
    number = finite_number(value)
    return f"{number:.0%}" if number is not None else str(value)


def whole_number(value: Any) -> int | None:
    """A non-negative whole number (steps, versions, counters), else None."""
    number = finite_number(value)
    if number is None or number < 0 or number != int(number):
        return None
    return int(number)


def finite_number(value: Any) -> float | None:
    """A finite JSON number (not a bool), else None: a NaN loss is a missing point."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def dig(mapping: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """``mapping[path[0]][path[1]]...``, or None where a level is missing."""
    value: Any = mapping
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value
