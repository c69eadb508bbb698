"""``driftd bench --section quality``: driftd's defaults against other people's learners.

On every stream of :func:`~driftd.tools.quality_datasets.bench_streams` (seven river
generators with abrupt, gradual and continuous drift, label noise, raw scales and moving
inputs; river's bundled Bananas; scikit-learn's digits through image domains and back), for
each of five seeds, in one process and on the same events:

- the baselines of :mod:`~driftd.tools.quality_baselines` (river's scaled linear model, river's
  ARF, a plain PyTorch MLP loop), learner-paced;
- driftd with its defaults (:mod:`~driftd.tools.quality_runs`), in three regimes
  (:mod:`~driftd.tools.quality_sources`): ``driftd`` learner-paced, ``driftd_paced`` at 2,000
  events/s by the wall clock, ``driftd_backlog`` the whole topic at once;
- ``driftd_off``: the same with ``adaptation.enabled=false``, learner-paced.

Every learner is scored prequentially (each event predicted before it is learnt from). The
figures: accuracy over the stream, accuracy in the 1,000 events after each known drift,
events/s; for driftd also concept-drift detections, false alarms, delays, the events lost
before a recurring concept is back at its earlier level, and the step sizes its loop chose.
:mod:`~driftd.tools.quality_targets` turns them into PASS/MISS lines.
"""

from __future__ import annotations

import json
import multiprocessing
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import torch

from driftd.settings.root import load_settings
from driftd.tools.quality_baselines import BASELINES, RUNNERS
from driftd.tools.quality_datasets import bench_streams
from driftd.tools.quality_runs import (
    accuracy_after,
    detection_figures,
    quiet_events,
    records_of,
    recovery_to_earlier,
    run_driftd,
)
from driftd.tools.quality_streams import QualityStream

DRIFTD = {  # name: (regime, adaptation)
    "driftd": ("learner", True),
    "driftd_off": ("learner", False),
    "driftd_paced": ("paced", True),
    "driftd_backlog": ("backlog", True),
}
LEARNERS = (*BASELINES, *DRIFTD)
SEEDS = (0, 1, 2, 3, 4)
QUICK_SEEDS = (0, 1)
RATE = 2_000.0


def measure_stream(
    stream: QualityStream, seed: int, learners: Sequence[str] = LEARNERS, rate: float = RATE
) -> dict[str, dict[str, Any]]:
    """One seed's figures for each of ``learners`` on ``stream``."""
    records = records_of(stream) if set(learners) & set(DRIFTD) else []
    figures: dict[str, dict[str, Any]] = {}
    for name in learners:
        if name in RUNNERS:
            base = RUNNERS[name](stream, seed)
            correct, seconds, extra = base.correct, base.seconds, {}
        else:
            regime, adaptation = DRIFTD[name]
            run = run_driftd(
                stream, regime=regime, seed=seed, adaptation=adaptation, rate=rate,
                records=records,
            )  # fmt: skip
            delays, false_alarms = detection_figures(run.detections, stream)
            correct, seconds = run.correct, run.seconds
            extra = {
                "detections": len(run.detections),
                "false_alarms": false_alarms,
                "delays": delays,
                "adaptations": run.adaptations,
                "step_size_mean": float(np.mean(run.step_sizes)) if run.step_sizes else None,
                "steps": len(run.step_sizes),
            }
        figures[name] = {
            "accuracy": float(correct.mean()),
            "after": accuracy_after(correct, stream),
            "lost": [recovery_to_earlier(correct, stream, t) for t in stream.recurring],
            "events_per_s": stream.n_events / seconds if seconds > 0 else float("nan"),
            **extra,
        }
    return figures


def measure_seed(
    seed: int, quick: bool, learners: Sequence[str], only: Sequence[str] | None, rate: float
) -> list[tuple[QualityStream, dict[str, dict[str, Any]]]]:
    """Every stream (or those named in ``only``) for one seed, with each learner's figures."""
    torch.set_num_threads(load_settings().learner.torch_threads)
    measured = []
    for stream in bench_streams(seed=seed, quick=quick):
        if only is None or stream.name in only:
            started = time.perf_counter()
            figures = measure_stream(stream, seed, learners, rate)
            measured.append((stream, figures))
            done = ", ".join(f"{name} {v['accuracy']:.3f}" for name, v in figures.items())
            print(f"  [{time.perf_counter() - started:4.0f} s] seed {seed} {stream.name}: {done}",
                  file=sys.stderr, flush=True)  # fmt: skip
    return measured


def measure_quality(
    *,
    quick: bool = False,
    seeds: Sequence[int] | None = None,
    learners: Sequence[str] = LEARNERS,
    only: Sequence[str] | None = None,
    rate: float = RATE,
    jobs: int = 1,
) -> dict[str, Any]:
    """Run every stream (or those in ``only``) for every seed; the results as plain data.

    ``jobs`` > 1 measures seeds in that many worker processes at once: faster, but the runs
    then share the CPUs, which lowers events/s and makes the paced regime harder.
    """
    seeds = tuple(seeds if seeds is not None else (QUICK_SEEDS if quick else SEEDS))
    started = time.perf_counter()
    arguments = [(seed, quick, tuple(learners), only, rate) for seed in seeds]
    if jobs > 1:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
            per_seed = list(pool.map(measure_seed, *zip(*arguments, strict=True)))
    else:
        per_seed = [measure_seed(*args) for args in arguments]
    streams: dict[str, dict[str, Any]] = {}
    for measured in per_seed:
        for stream, figures in measured:
            entry = streams.setdefault(stream.name, _describe(stream))
            for name, values in figures.items():
                runs = entry["learners"].setdefault(name, {})
                for key, value in values.items():
                    runs.setdefault(key, []).append(value)
    for entry in streams.values():
        for runs in entry["learners"].values():
            runs["mean"] = statistics.fmean(runs["accuracy"])
            runs["sd"] = statistics.stdev(runs["accuracy"]) if len(runs["accuracy"]) > 1 else 0.0
    return {
        "quick": quick,
        "seeds": list(seeds),
        "rate": rate,
        "jobs": jobs,
        "torch_threads": torch.get_num_threads(),
        "seconds": time.perf_counter() - started,
        "streams": streams,
    }


def _describe(stream: QualityStream) -> dict[str, Any]:
    return {
        "description": stream.description,
        "n_events": stream.n_events,
        "drift": stream.drift,
        "drifts": list(stream.drifts),
        "recurring": list(stream.recurring),
        "quiet_events": quiet_events(stream),
        "segments": _segment_lengths(stream),
        "learners": {},
    }


def _segment_lengths(stream: QualityStream) -> list[int]:
    """Events from each recurring drift to the next drift (or the end): the most one can lose."""
    ends = [next((t for t in stream.drifts if t > r), stream.n_events) for r in stream.recurring]
    return [end - r for r, end in zip(stream.recurring, ends, strict=True)]


def print_table(results: dict[str, Any], learners: Sequence[str] = LEARNERS) -> None:
    """Stream x learner: mean +- sd of prequential accuracy over the seeds, then events/s."""
    streams = results["streams"]
    names = [n for n in learners if any(n in e["learners"] for e in streams.values())]
    width = max([len(s) for s in streams] + [10])
    print(f"  {'stream':<{width}} " + " ".join(f"{n:>15}" for n in names))
    for stream, entry in streams.items():
        cells = []
        for name in names:
            runs = entry["learners"].get(name)
            cells.append(f"{runs['mean']:.3f} ± {runs['sd']:.3f}" if runs else "-")
        print(f"  {stream:<{width}} " + " ".join(f"{c:>15}" for c in cells))
    rates = []
    for name in names:
        values = [r for e in streams.values() for r in e["learners"].get(name, {}).get(
            "events_per_s", [])]  # fmt: skip
        rates.append(f"{statistics.median(values):,.0f}" if values else "-")
    print(f"  {'events/s (median)':<{width}} " + " ".join(f"{r:>15}" for r in rates))


def print_quality(*, quick: bool = False, json_path: str | None = None, jobs: int = 1) -> int:
    """Run the quality benchmark, print its table and targets; returns the number missed."""
    from driftd.tools.quality_targets import print_targets, quality_targets

    results = measure_quality(quick=quick, jobs=jobs)
    print(
        f"quality: prequential accuracy, mean ± sd over seeds {results['seeds']}; baselines and "
        f"driftd learner-paced, driftd_paced at {results['rate']:,.0f} events/s, driftd_backlog "
        "replaying the whole topic; driftd's default settings"
    )
    for name, entry in results["streams"].items():
        print(f"  {name}: {entry['n_events']:,} events, {entry['description']}")
    print_table(results)
    steps = {
        name: statistics.fmean(
            s
            for e in results["streams"].values()
            for s in e["learners"].get(name, {}).get("step_size_mean", [])
            if s is not None
        )
        for name in DRIFTD
        if any(name in e["learners"] for e in results["streams"].values())
    }
    print("  driftd mean events per step: " + ", ".join(f"{k} {v:,.0f}" for k, v in steps.items()))
    checks = quality_targets(results)
    missed = print_targets(checks)
    results["targets"] = checks
    print(f"  quality: {missed} target(s) missed, {results['seconds']:.0f} s")
    if json_path:
        with open(json_path, "w") as out:
            json.dump(results, out, indent=1, default=str)
    return missed
