"""``driftd bench --section distributed``: the trainer group's figures, and what they can show.

Measured by :mod:`~driftd.tools.distributed_bench`: events/s for one rank (the plain loop) and
two gloo ranks in each sync mode, with the default model and a compute-heavy one; per sync mode
the median seconds per sync and the share of the loop spent syncing; the 2-rank / 1-rank ratio
per model. The issue sets no target here: nothing is PASS or MISS; the command fails only when a
run did not learn every event it was given (its figure would mean nothing).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import torch

from driftd.tools.distributed_bench import (
    HEAVY_HIDDEN,
    N_CLASSES,
    N_FEATURES,
    PARTITIONS,
    Configuration,
    RankResult,
    measure,
    median_rate,
)

NOTE = (
    "note: two ranks on a 2-core machine compete with each other for both cores, with gloo's "
    "transport threads and with whatever else runs here; loopback gloo moves bytes by memory "
    "copies on those same cores, not over a network. So these figures show that the group "
    "learns every event once and what its rounds, syncs and coordinated snapshot cost next to "
    "the learning, and whether a model whose step costs milliseconds still gains from a second "
    "rank when each rank has (at best) one core. They cannot show scaling: not beyond two ranks, "
    "not across hosts, not the network's latency or bandwidth. A ratio below 1 says that here "
    "the collectives and the waits for the other rank cost more than the second core gave; not "
    "that more cores, or a real network, would not help."
)


def distributed_figures(*, events: int, heavy_events: int, repeats: int) -> dict[str, Any]:
    """Measure every configuration (and one NCCL run where CUDA is); the figures as values."""
    default_hidden = tuple(_default_hidden())
    configurations = [
        Configuration(model, hidden, ranks, sync, n)
        for model, hidden, n in (("default", None, events), ("heavy", HEAVY_HIDDEN, heavy_events))
        for ranks, sync in ((1, None), (2, "average"), (2, "allreduce"))
    ]
    runs = measure(configurations, repeats=repeats)
    rows = [_row(c, r) for c, r in zip(configurations, runs, strict=True)]
    for row in rows:
        alone = next(r for r in rows if r["model"] == row["model"] and r["ranks"] == 1)
        row["speedup"] = row["events_per_s"] / alone["events_per_s"]
    return {
        "events": events,
        "heavy_events": heavy_events,
        "repeats": repeats,
        "widths": {"default": default_hidden, "heavy": HEAVY_HIDDEN},
        "rows": rows,
        "nccl": _nccl(heavy_events),
    }


def _default_hidden() -> list[int]:
    from driftd.settings.root import load_settings

    return list(load_settings().model.hidden)


def _row(configuration: Configuration, runs: list[list[RankResult]]) -> dict[str, Any]:
    """One configuration's medians over its runs (per-rank figures: the ranks' mean)."""
    syncs = [s for ranks in runs for r in ranks for s in r.sync_seconds]
    return {
        "model": configuration.model,
        "ranks": configuration.ranks,
        "sync": configuration.sync,
        "events": configuration.events,
        "learned": [sum(r.learned for r in ranks) for ranks in runs],
        "events_per_s": median_rate(runs),
        "sync_median_s": statistics.median(syncs) if syncs else None,
        "syncs_per_rank": statistics.median(
            statistics.fmean(len(r.sync_seconds) for r in ranks) for ranks in runs
        ),
        "sync_share": _median_share(runs, lambda r: sum(r.sync_seconds)),
        "collective_share": _median_share(runs, lambda r: r.collective_seconds),
        "step_size": runs[0][0].step_size,
    }


def _median_share(runs: list[list[RankResult]], part: Callable[[RankResult], float]) -> float:
    """Median over runs of the ranks' mean share of their loop time spent in ``part``."""
    return statistics.median(statistics.fmean(part(r) / r.seconds for r in ranks) for ranks in runs)


def _nccl(events: int) -> dict[str, Any]:
    """One NCCL allreduce run of the heavy model: 2 ranks on 2 GPUs, or 1 rank on 1 GPU."""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus == 0:
        return {"ran": False, "why": "no CUDA device"}
    ranks = min(2, gpus)  # NCCL refuses two ranks on one GPU
    job = Configuration("heavy", HEAVY_HIDDEN, ranks, "allreduce", events, backend="nccl")
    (runs,) = measure([job], repeats=1)
    return {"ran": True, "ranks": ranks, "gpus": gpus, "events_per_s": median_rate(runs),
            "learned": sum(r.learned for r in runs[0]), "events": events}  # fmt: skip


def print_distributed(*, quick: bool) -> int:
    """Print the section; returns 1 if a run did not learn all its events, else 0."""
    events, heavy_events, repeats = (4_000, 1_000, 1) if quick else (20_000, 6_000, 3)
    figures = distributed_figures(events=events, heavy_events=heavy_events, repeats=repeats)
    widths = figures["widths"]
    print(
        f"driftd bench --section distributed: broker taken out; every run learns the same "
        f"pre-made in-memory stream ({events:,} events, the heavy model its first "
        f"{heavy_events:,}; {PARTITIONS} partitions split between the ranks); spawned rank "
        f"processes, 1 torch thread each, gloo on loopback; median of {repeats} run(s), 1-rank "
        f"and 2-rank runs in turn in the same processes (a 1-rank run: rank 0 alone, the other "
        f"asleep); time "
        f"inside the ranks from loop start to end (final snapshot in; spawn, imports and "
        f"rendezvous out), the slowest rank's"
    )
    for model in ("default", "heavy"):
        print(f"  {model} model: MLP {_shape(widths[model])}")
    print(f"  {'model':<8} {'ranks':>5} {'sync':<9} {'events/s':>10} {'x 1 rank':>8} "
          f"{'s/sync':>9} {'syncs/rank':>10} {'sync share':>10} {'in collectives':>14} "
          f"{'step':>5}")  # fmt: skip
    for row in figures["rows"]:
        print(_row_line(row))
    print(
        "  s/sync and sync share: the loop's own sync reports. average: one parameter average; "
        "allreduce: one round's gradient all-reduces and input-statistics merge. in collectives: "
        "time inside calls into the group (every round's agreement too), waiting for the other "
        "rank included. Adaptation is off here (so is pruning): each rank's drift monitor "
        "watches its own rows."
    )
    for model in ("default", "heavy"):
        ratios = ", ".join(
            f"{row['sync']} {row['speedup']:.2f}x"
            for row in figures["rows"] if row["model"] == model and row["ranks"] == 2
        )  # fmt: skip
        print(f"  speedup, 2 ranks / 1 rank, {model} model: {ratios}")
    print(_nccl_line(figures["nccl"]))
    print("  " + NOTE)
    short = [r for r in figures["rows"] if any(n != r["events"] for n in r["learned"])]
    for row in short:
        print(f"  ERROR  {row['model']}, {row['ranks']} rank(s), {row['sync']}: learned "
              f"{row['learned']} of {row['events']:,} events")  # fmt: skip
    return 1 if short else 0


def _shape(hidden: tuple[int, ...]) -> str:
    return "->".join(str(width) for width in (N_FEATURES, *hidden, N_CLASSES))


def _row_line(row: dict[str, Any]) -> str:
    alone = row["ranks"] == 1
    per_sync = "-" if row["sync_median_s"] is None else f"{row['sync_median_s'] * 1000:.2f} ms"
    return (
        f"  {row['model']:<8} {row['ranks']:>5} {row['sync'] or '-':<9} "
        f"{row['events_per_s']:>10,.0f} {row['speedup']:>7.2f}x {per_sync:>9} "
        f"{'-' if alone else format(row['syncs_per_rank'], '.0f'):>10} "
        f"{'-' if alone else format(row['sync_share'], '.1%'):>10} "
        f"{'-' if alone else format(row['collective_share'], '.1%'):>14} "
        f"{row['step_size'] or '-':>5}"
    )


def _nccl_line(nccl: dict[str, Any]) -> str:
    if not nccl["ran"]:
        return f"  NCCL: skipped ({nccl['why']})"
    alone = " (1 GPU: NCCL refuses two ranks on one GPU, so one rank)" if nccl["ranks"] == 1 else ""
    return (
        f"  NCCL, heavy model, allreduce, {nccl['ranks']} rank(s) on {nccl['gpus']} GPU(s)"
        f"{alone}: {nccl['events_per_s']:,.0f} events/s, learned {nccl['learned']:,} of "
        f"{nccl['events']:,}"
    )
