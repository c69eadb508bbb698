"""A run as a timeline over the step axis, parsed from driftd's JSON log and snapshot manifests.

``driftd report`` draws this (see :mod:`driftd.tools.report`). Everything here is pure: the caller
reads the files and passes in their lines and manifests. Parsing is tolerant because logs are
what they are (cut short by a crash, mixed with other output, written by an older driftd): a
line that is not a JSON object is counted as malformed, unknown events are ignored, and a
missing or unusable field only means a missing point or marker, never an error.

What is read (``event`` field of a log line, extra fields as :mod:`driftd.logs` writes them):

- ``progress`` (every N events learned, rate-limited): ``step``, ``accuracy``, ``loss``, ``lr``,
  ``parameters``, ``flops``, ``events_consumed``, ``events_learned`` (a point per series: the
  dips between snapshots show);
- ``snapshot_written``: ``version``, ``published``, ``step``, ``accuracy``, ``loss``, ``lr``,
  ``parameters``, ``sparsity`` (a point per series, a snapshot marker);
- ``snapshot_unpublished``: ``version`` (that snapshot was not published);
- ``drift_detected``: ``step``, ``detector``, ``signal``, ``kind`` (``drift`` or ``warning``);
- ``adapted``: ``step``, ``kind``, ``domain``;
- ``pruned``: ``step``, ``targets``, ``removed``, ``parameters``;
- ``prune_verdict``: ``step``, ``outcome`` (``kept``, ``recovered``, ``rolled_back``,
  ``interrupted``; null with ``action`` ``recover`` while a recovery is tried);
- ``start`` and ``stopped`` (the events consumed, learned and invalid of each run).

A manifest adds the same points as a ``snapshot_written`` line (``step``, ``metrics``,
``parameters``, ``sparsity``, and with pruning the dense FLOPs per event) and says whether its
version was published.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from driftd.tools.run_summary import RunSummary, summarise
from driftd.tools.timeline_events import (
    Marker,
    dig,
    finite_number,
    marker_from_entry,
    stopped_counts,
    whole_number,
)

SERIES = ("accuracy", "loss", "lr", "parameters", "flops", "sparsity")
"""The time series of a timeline, in the order they are drawn."""

_MANIFEST_SERIES = {
    "accuracy": ("metrics", "prequential_accuracy"),
    "loss": ("metrics", "prequential_loss"),
    "lr": ("metrics", "learning_rate"),
    "parameters": ("parameters",),
    "flops": ("pruning", "flops_per_event", "dense"),
    "sparsity": ("sparsity",),
}


@dataclass
class Timeline:
    """Time series and markers of one run, plus what could not be used.

    Attributes:
        series: For each name in :data:`SERIES`, ``(step, value)`` points sorted by step.
        markers: Sorted by step.
        summary: The summary table's figures.
        log_lines: Non-blank log lines read.
        malformed_lines: Log lines that were not a JSON object.
        malformed_manifests: Manifests the caller could not read (set by the caller).
        unplaced: Known events without a usable step (not drawn).
    """

    series: dict[str, list[tuple[int, float]]]
    markers: list[Marker]
    summary: RunSummary
    log_lines: int = 0
    malformed_lines: int = 0
    malformed_manifests: int = 0
    unplaced: int = 0

    def step_range(self) -> tuple[int, int] | None:
        """The first and last step of any point or marker; None for an empty timeline."""
        steps = [step for points in self.series.values() for step, _ in points]
        steps += [marker.step for marker in self.markers]
        return (min(steps), max(steps)) if steps else None


@dataclass
class LineCounts:
    """Non-blank log lines read, and how many of them were not a JSON object."""

    seen: int = 0
    malformed: int = 0


def log_entries(lines: Iterable[str], counts: LineCounts) -> Iterator[dict[str, Any]]:
    """JSON-decode log lines one at a time (a long run's log need not fit in memory).

    A line may carry a prefix before its JSON object (``docker compose logs`` adds the
    service name): the object is read from the first ``{``. Lines are counted in ``counts``.
    """
    for line in lines:
        text = line.strip()
        if not text:
            continue
        counts.seen += 1
        start = text.find("{")
        try:
            entry = json.loads(text[start:]) if start >= 0 else None
        except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            entry = None
        if isinstance(entry, dict):
            yield entry
        else:
            counts.malformed += 1


def parse_log_lines(lines: Iterable[str]) -> tuple[list[dict[str, Any]], int, int]:
    """The entries of :func:`log_entries`, the number of non-blank lines and of malformed ones."""
    counts = LineCounts()
    entries = list(log_entries(lines, counts))
    return entries, counts.seen, counts.malformed


def build_timeline(
    entries: Iterable[Mapping[str, Any]],
    manifests: Iterable[Mapping[str, Any]] = (),
    *,
    points: Mapping[str, Iterable[tuple[int, float]]] | None = None,
) -> Timeline:
    """The timeline of a run from its log entries (in log order) and snapshot manifests.

    Args:
        entries: Decoded log lines, or the ``vars()`` of captured ``LogRecord`` objects.
        manifests: Snapshot manifests, in any order.
        points: Points measured elsewhere by series name (a benchmark's per-step figures);
            the log and the manifests win where they have the same step.
    """
    builder = _Builder()
    for name, measured in (points or {}).items():
        if name in SERIES:
            builder.manifest_points[name].update(measured)
    for entry in entries:
        builder.add_entry(entry)
    for manifest in manifests:
        builder.add_manifest(manifest)
    return builder.timeline()


def timeline_from_log(
    lines: Iterable[str], manifests: Iterable[Mapping[str, Any]] = ()
) -> Timeline:
    """:func:`build_timeline` over :func:`log_entries`, streamed, keeping the line counts."""
    counts = LineCounts()
    timeline = build_timeline(log_entries(lines, counts), manifests)
    timeline.log_lines, timeline.malformed_lines = counts.seen, counts.malformed
    return timeline


@dataclass
class _Snapshot:
    step: int | None = None
    published: bool | None = None


class _Builder:
    """Accumulates log entries and manifests; later values for a step replace earlier ones.

    A daemon restarted from its last snapshot repeats the steps after it: the newer values win.
    """

    def __init__(self) -> None:
        self.points: dict[str, dict[int, float]] = {name: {} for name in SERIES}
        self.manifest_points: dict[str, dict[int, float]] = {name: {} for name in SERIES}
        self.markers: list[Marker] = []
        self.snapshots: dict[int, _Snapshot] = {}
        self.runs = 0
        self.stopped: list[tuple[int, int, int]] = []
        self.manifest_counts: tuple[int | None, int | None, int | None] | None = None
        self.manifest_step = -1
        self.progress_counts: tuple[int | None, int | None, int | None] | None = None
        self.unplaced = 0

    def add_entry(self, entry: Mapping[str, Any]) -> None:
        event = entry.get("event")
        if event == "start":
            self.runs += 1
        elif event == "stopped":
            counts = stopped_counts(entry)
            if counts is not None:
                self.stopped.append(counts)
        elif event in ("snapshot_written", "snapshot_unpublished"):
            self._snapshot_line(entry)
        elif event == "progress":
            self._progress_line(entry)
        elif event in ("drift_detected", "adapted", "pruned", "prune_verdict"):
            step = whole_number(entry.get("step"))
            if step is None:
                self.unplaced += 1
                return
            if event == "pruned":
                self._point("parameters", step, entry.get("parameters"))
            self.markers.append(marker_from_entry(str(event), step, entry))

    def add_manifest(self, manifest: Mapping[str, Any]) -> None:
        step = whole_number(manifest.get("step"))
        version = whole_number(manifest.get("version"))
        if step is not None:
            for name, path in _MANIFEST_SERIES.items():
                value = finite_number(dig(manifest, path))
                if value is not None:
                    self.manifest_points[name][step] = value
        if step is not None and step >= self.manifest_step:  # the newest has the totals
            self.manifest_step = step
            learned, rejected = manifest.get("events_learned"), manifest.get("events_rejected")
            self.manifest_counts = (None, whole_number(learned), whole_number(rejected))
        if version is not None:
            snapshot = self.snapshots.setdefault(version, _Snapshot())
            snapshot.step = snapshot.step if snapshot.step is not None else step
            published = manifest.get("published")  # absent in old manifests: published
            if snapshot.published is None and isinstance(published, bool):
                snapshot.published = published

    def _snapshot_line(self, entry: Mapping[str, Any]) -> None:
        version = whole_number(entry.get("version"))
        step = whole_number(entry.get("step"))
        if step is not None:
            for name in SERIES:
                self._point(name, step, entry.get(name))
        if version is None:
            self.unplaced += 1
            return
        snapshot = self.snapshots.setdefault(version, _Snapshot())
        if step is not None:
            snapshot.step = step
        if entry.get("event") == "snapshot_unpublished":
            snapshot.published = False
        elif isinstance(entry.get("published"), bool):
            snapshot.published = bool(entry["published"])

    def _progress_line(self, entry: Mapping[str, Any]) -> None:
        """Points of every series the line carries; its counters, for a run with no ``stopped``."""
        step = whole_number(entry.get("step"))
        if step is None:
            self.unplaced += 1
            return
        for name in SERIES:
            self._point(name, step, entry.get(name))
        consumed, learned = entry.get("events_consumed"), entry.get("events_learned")
        self.progress_counts = (whole_number(consumed), whole_number(learned), None)

    def _point(self, name: str, step: int, value: Any) -> None:
        number = finite_number(value)
        if number is not None:
            self.points[name][step] = number

    def timeline(self) -> Timeline:
        series = {}
        for name in SERIES:
            merged = {**self.manifest_points[name], **self.points[name]}  # the log wins
            series[name] = sorted(merged.items())
        markers, unplaced = list(self.markers), self.unplaced
        for version, snapshot in sorted(self.snapshots.items()):
            if snapshot.step is None:
                unplaced += 1
                continue
            published = snapshot.published is not False
            markers.append(
                Marker(
                    snapshot.step,
                    "snapshot",
                    "published" if published else "not published",
                    f"snapshot {version} at step {snapshot.step}"
                    + ("" if published else " (not published)"),
                    minor=not published,
                )
            )
        markers.sort(key=lambda marker: marker.step)
        counts = self.stopped_counts() or self.manifest_counts or self.progress_counts
        summary = summarise(series, markers, runs=self.runs, counts=counts)
        return Timeline(series, markers, summary, unplaced=unplaced)

    def stopped_counts(self) -> tuple[int | None, int | None, int | None] | None:
        """Events consumed, learned and invalid summed over the runs' ``stopped`` lines."""
        if not self.stopped:
            return None
        consumed, learned, invalid = (sum(run[i] for run in self.stopped) for i in range(3))
        return consumed, learned, invalid
