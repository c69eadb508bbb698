"""The quality bench's targets (issue 13), with driftd's defaults and no per-stream tuning.

- learner-paced: driftd >= the plain PyTorch loop and >= river's linear model, every stream;
- paced at 2,000 events/s: within 2 points of the best baseline (ARF included) on average over
  the streams, and no stream more than 5 points under it;
- <= 1 false alarm per 25,000 events where no true change happens (outside each drift's width
  + 1,000 events); a stream without change points (continuous drift, none) has no such window,
  so every concept-drift detection on it counts;
- a recurring concept back >= 2x faster (events lost before its earlier accuracy is back; never
  back counts as the whole segment) with adaptation than with ``adaptation.enabled=false``
  (n/a where adaptation off loses nothing: the level to be back at is the run's own earlier
  accuracy, so a learner that learnt little is "back" at once);
- backlog: accuracy on every stream at least that of driftd's defaults when the bench was
  rebuilt (``bench_reference.json``, recorded from commit ``reference["commit"]``), within
  0.0005 for floating-point noise.

All comparisons use the mean over the seeds.
"""

from __future__ import annotations

import json
import statistics
from importlib import resources
from typing import Any

from driftd.tools.quality_runs import PER_EVENTS

Check = dict[str, Any]  # {"target", "stream", "met", "figures"}
BASELINE_NAMES = ("river_linear", "river_arf", "torch_mlp")
PACED_MEAN_SLACK, PACED_WORST_SLACK = 0.02, 0.05
FALSE_ALARMS_PER_25K = 1.0
RECURRING_SPEEDUP = 2.0
BACKLOG_TOLERANCE = 0.0005


def load_reference() -> dict[str, Any]:
    """The figures recorded when the bench was rebuilt (today's defaults), or {} if absent."""
    try:
        text = resources.files("driftd.tools").joinpath("bench_reference.json").read_text()
    except FileNotFoundError:
        return {}
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def quality_targets(
    results: dict[str, Any], reference: dict[str, Any] | None = None
) -> list[Check]:
    """Every target check on ``results`` (from :func:`~driftd.tools.quality_bench.measure_quality`).

    A check whose learners did not run is left out; ``met`` is None where a figure is missing.
    """
    reference = load_reference() if reference is None else reference
    streams: dict[str, Any] = results["streams"]
    checks: list[Check] = []
    gaps: list[float] = []
    for name, entry in streams.items():
        runs = entry["learners"]
        mean = {learner: figures["mean"] for learner, figures in runs.items()}
        for base in ("torch_mlp", "river_linear"):
            if "driftd" in mean and base in mean:
                checks.append(_check(f"learner-paced >= {base}", name, mean["driftd"] >= mean[base],
                                     f"{mean['driftd']:.4f} vs {mean[base]:.4f}"))  # fmt: skip
        bases = {b: mean[b] for b in BASELINE_NAMES if b in mean}
        if "driftd_paced" in mean and bases:
            best = max(bases, key=bases.__getitem__)
            gap = mean["driftd_paced"] - bases[best]
            gaps.append(gap)
            checks.append(_check(
                f"paced {results['rate']:,.0f}/s: <= {PACED_WORST_SLACK * 100:.0f} points under "
                "the best baseline", name, gap >= -PACED_WORST_SLACK,
                f"{mean['driftd_paced']:.4f} vs {best} {bases[best]:.4f} ({gap * 100:+.1f})",
            ))  # fmt: skip
        if "driftd" in runs:
            checks.append(_false_alarms(name, entry))
        if "driftd" in runs and "driftd_off" in runs and entry["recurring"]:
            checks.extend(_recurring(name, entry))
        backlog = reference.get("quality_backlog_accuracy", {}).get(_mode(results), {}).get(name)
        if "driftd_backlog" in mean:
            met = None if backlog is None else mean["driftd_backlog"] >= backlog - BACKLOG_TOLERANCE
            figures = "no reference" if backlog is None else f"{mean['driftd_backlog']:.4f} vs " \
                f"{backlog:.4f} (commit {str(reference.get('commit', '?'))[:8]})"  # fmt: skip
            checks.append(_check("backlog >= today's defaults", name, met, figures))
    if gaps:
        average = statistics.fmean(gaps)
        checks.append(_check(
            f"paced: within {PACED_MEAN_SLACK * 100:.0f} points of the best baseline on average",
            "all", average >= -PACED_MEAN_SLACK, f"{average * 100:+.2f} points",
        ))  # fmt: skip
    return checks


def _mode(results: dict[str, Any]) -> str:
    return "quick" if results["quick"] else "full"


def _check(target: str, stream: str, met: bool | None, figures: str) -> Check:
    return {"target": target, "stream": stream, "met": met, "figures": figures}


def _false_alarms(name: str, entry: dict[str, Any]) -> Check:
    runs = entry["learners"]["driftd"]
    alarms = sum(runs["false_alarms"])
    quiet = entry["quiet_events"] * len(runs["false_alarms"])
    rate = alarms / quiet * PER_EVENTS if quiet else 0.0
    return _check(
        f"<= {FALSE_ALARMS_PER_25K:g} false alarm per {PER_EVENTS:,} quiet events", name,
        rate <= FALSE_ALARMS_PER_25K,
        f"{rate:.2f} ({alarms} of {sum(runs['detections'])} detections over {quiet:,} quiet "
        f"events; delays {runs['delays']})",
    )  # fmt: skip


def _recurring(name: str, entry: dict[str, Any]) -> list[Check]:
    checks = []
    adapt, off = entry["learners"]["driftd"]["lost"], entry["learners"]["driftd_off"]["lost"]
    for k, drift in enumerate(entry["recurring"]):
        whole = entry["segments"][k]
        with_ = statistics.fmean(whole if run[k] is None else run[k] for run in adapt)
        without = statistics.fmean(whole if run[k] is None else run[k] for run in off)
        checks.append(_check(
            f"recurring at {drift:,}: back >= {RECURRING_SPEEDUP:g}x faster than adaptation off",
            name, None if without == 0 else without >= RECURRING_SPEEDUP * with_,
            f"{with_:,.0f} vs {without:,.0f} events lost (mean)"
            + (": adaptation off loses nothing, nothing to speed up" if without == 0 else ""),
        ))  # fmt: skip
    return checks


def print_targets(checks: list[Check]) -> int:
    """Print PASS/MISS (n/a: no reference, or nothing to measure) per check; returns misses."""
    missed = 0
    for check in checks:
        verdict = {True: "PASS", False: "MISS", None: "n/a "}[check["met"]]
        missed += check["met"] is False
        print(f"  {verdict}  {check['stream']}: {check['target']}: {check['figures']}")
    return missed
