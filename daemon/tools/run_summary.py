"""The summary table of a run report: counts and where the run ended, from its timeline."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from driftd.tools.timeline_events import Marker, input_alarm


@dataclass
class RunSummary:
    """The figures of the summary table (None: nothing in the sources says).

    Attributes:
        runs: ``start`` lines seen (a resumed daemon starts again).
        events_consumed: Summed over the runs' ``stopped`` lines, else None.
        events_learned: From the ``stopped`` lines, else the newest manifest's count.
        events_invalid: From the ``stopped`` lines, else the newest manifest's count.
        drifts: Concept drifts: ``drift_detected`` lines of kind ``drift`` on the loss or error.
        warnings: ``drift_detected`` lines of kind ``warning`` (binary detectors, concept only).
        input_alarms: ``drift_detected`` lines of kind ``drift`` on an input signal: the
            inputs' distribution moved, whether or not the concept did.
        input_warnings: Input alarms reported as warnings: labels flowed and the error did not
            confirm them (``drift.covariate_confirm``).
        adaptations: Adaptations made, by kind.
        pruned: ``pruned`` lines (pruning events started).
        prunes: Final pruning verdicts, by outcome (not the ``recover`` steps on the way).
        snapshots: Snapshot versions seen.
        published: Of which published.
        final_step: The last step with an accuracy point.
        final_accuracy: The prequential accuracy at ``final_step``.
        final_parameters: The last parameter count seen.
        final_flops: The last dense FLOPs per event seen (pruning runs).
    """

    runs: int = 0
    events_consumed: int | None = None
    events_learned: int | None = None
    events_invalid: int | None = None
    drifts: int = 0
    warnings: int = 0
    input_alarms: int = 0
    input_warnings: int = 0
    adaptations: dict[str, int] = field(default_factory=dict)
    pruned: int = 0
    prunes: dict[str, int] = field(default_factory=dict)
    snapshots: int = 0
    published: int = 0
    final_step: int | None = None
    final_accuracy: float | None = None
    final_parameters: int | None = None
    final_flops: int | None = None


def summarise(
    series: Mapping[str, Sequence[tuple[int, float]]],
    markers: Sequence[Marker],
    *,
    runs: int,
    counts: tuple[int | None, int | None, int | None] | None,
) -> RunSummary:
    """Count the markers by kind and take the final accuracy.

    Args:
        series: The timeline's points by series name, sorted by step.
        markers: The timeline's markers.
        runs: ``start`` lines seen.
        counts: Events consumed, learned and invalid, if any source says.
    """
    consumed, learned, invalid = counts or (None, None, None)
    alarms = [marker for marker in markers if marker.event == "drift_detected"]
    drifts = [marker for marker in alarms if not input_alarm(marker)]
    snapshots = [marker for marker in markers if marker.event == "snapshot"]
    warnings = sum(marker.minor for marker in drifts)
    input_warnings = sum(marker.minor for marker in alarms) - warnings
    accuracy = series.get("accuracy") or []
    parameters, flops = series.get("parameters") or [], series.get("flops") or []
    return RunSummary(
        runs=runs,
        events_consumed=consumed,
        events_learned=learned,
        events_invalid=invalid,
        drifts=len(drifts) - warnings,
        warnings=warnings,
        input_alarms=len(alarms) - len(drifts) - input_warnings,
        input_warnings=input_warnings,
        adaptations=dict(Counter(m.category for m in markers if m.event == "adapted")),
        pruned=sum(marker.event == "pruned" for marker in markers),
        prunes=dict(
            Counter(m.category for m in markers if m.event == "prune_verdict" and not m.minor)
        ),
        snapshots=len(snapshots),
        published=sum(not marker.minor for marker in snapshots),
        final_step=accuracy[-1][0] if accuracy else None,
        final_accuracy=accuracy[-1][1] if accuracy else None,
        final_parameters=int(parameters[-1][1]) if parameters else None,
        final_flops=int(flops[-1][1]) if flops else None,
    )
