"""A trainer group's events/s with one and two ranks, and what each sync mode costs.

The broker is taken out: every run learns a prefix of one pre-made in-memory stream (four
partitions; each rank of a group reads its share), in spawned rank processes with one torch
thread each, so two ranks on two cores is a fair fight with one rank on one. The clock runs
inside each rank, from the start of ``loop.run`` to its end (the final snapshot included; the
spawn, the imports and the rendezvous not); a group's time is its slowest rank's. The cost of
syncing is read two ways: the loop's own ``model_synced`` telemetry, and the seconds spent in
every call into the group (:class:`~driftd.tools.timed_group.TimedGroup`), waiting for the
other rank included.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import socket
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import torch

from driftd.records import Record
from driftd.tools.streams import DriftingStream
from driftd.tools.timed_group import TimedGroup

TOPIC = "bench-group"
PARTITIONS = 4  # two ranks read two each
N_FEATURES, N_CLASSES = 10, 3
HEAVY_HIDDEN = (1024, 1024)  # one 256-event step costs tens of milliseconds on one thread
TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Configuration:
    """One measured setup: which model, how many ranks, which sync mode, on how many events.

    ``sync`` None: one rank, the plain :class:`~driftd.loop.TrainingLoop` (no group at all).
    ``hidden`` None: the settings' default widths.
    """

    model: str
    hidden: tuple[int, ...] | None
    ranks: int
    sync: str | None
    events: int
    backend: str = "gloo"


@dataclass(frozen=True)
class RankResult:
    """What one rank measured in one run."""

    learned: int  # labelled events that went into a gradient step on this rank
    seconds: float  # loop.run, start to end
    sync_seconds: tuple[float, ...]  # each model_synced report, in order
    collective_seconds: float  # inside calls into the group
    step_size: int | None  # events per gradient step at the end (the auto controller's)


def bench_records(events: int) -> list[Record]:
    """The one stream every run learns (a prefix of), round-robin over the partitions."""
    stream = DriftingStream(n_events=events, n_features=N_FEATURES, n_classes=N_CLASSES, seed=7)
    return [
        Record(TOPIC, i % PARTITIONS, i // PARTITIONS, orjson.dumps(event))
        for i, event in enumerate(stream.events())
    ]


def measure(
    configurations: Sequence[Configuration], *, repeats: int
) -> list[list[list[RankResult]]]:
    """Run every configuration ``repeats`` times; per configuration, per run, per rank.

    Configurations with the same backend share one set of rank processes (one spawn, one
    rendezvous), as many as the most ranks any of them needs, and their runs are interleaved, one
    rank and two in turn, so a slow spell of the shared machine spreads over all of them. A
    one-rank run is rank 0's plain loop while the other ranks wait in a collective (a gloo wait
    sleeps: it takes no core).
    """
    events = max(c.events for c in configurations)
    out: list[list[list[RankResult]]] = [[] for _ in configurations]
    for backend in sorted({c.backend for c in configurations}):
        chosen = [i for i, c in enumerate(configurations) if c.backend == backend]
        jobs = [configurations[i] for _ in range(repeats) for i in chosen]
        results = _spawn_ranks(max(job.ranks for job in jobs), jobs, events)
        for job_index, per_rank in enumerate(results):
            out[chosen[job_index % len(chosen)]].append(per_rank)
    return out


def _spawn_ranks(world_size: int, jobs: list[Configuration], events: int) -> list[list[RankResult]]:
    """Start the rank processes, run ``jobs`` in order on all of them; per job, per rank."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    port = _free_port()
    processes = [
        context.Process(target=_rank_main, args=(rank, world_size, port, jobs, events, results))
        for rank in range(world_size)
    ]
    for process in processes:
        process.start()
    table: list[list[RankResult | None]] = [[None] * job.ranks for job in jobs]
    deadline = time.monotonic() + TIMEOUT_S * max(1, len(jobs))
    try:
        for _ in range(sum(job.ranks for job in jobs)):
            job, rank, result = _next_result(results, processes, deadline)
            table[job][rank] = result
    finally:
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
    return [[r for r in row if r is not None] for row in table]


def _next_result(results: Any, processes: list[Any], deadline: float) -> Any:
    """The next rank's report; fails at once if a rank died, or at the deadline."""
    while time.monotonic() < deadline:
        try:
            return results.get(timeout=2.0)
        except queue.Empty:
            if any(p.exitcode not in (None, 0) for p in processes):
                raise RuntimeError("a rank process died (see its traceback above)") from None
    raise RuntimeError(f"the rank processes did not finish within {TIMEOUT_S:.0f} s a job")


def _rank_main(
    rank: int, world_size: int, port: int, jobs: list[Configuration], events: int, results: Any
) -> None:
    """One rank process: join the group (unless alone on gloo), run every job, report each.

    The rank makes the (seeded) stream itself: megabytes of records pickled down a spawn pipe
    leave the parent stuck writing if the child dies before it reads them.
    """
    from driftd.adapters.torch_distributed_group import TorchDistributedGroup
    from driftd.logs import configure_logging

    configure_logging("ERROR", json_lines=False)
    torch.set_num_threads(1)
    backend = jobs[0].backend
    stream = bench_records(events)
    group: TimedGroup | None = None
    if world_size > 1 or backend == "nccl":
        os.environ.update(
            MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
            WORLD_SIZE=str(world_size),
        )  # fmt: skip
        device = torch.device("cuda", rank) if backend == "nccl" else torch.device("cpu")
        group = TimedGroup(
            TorchDistributedGroup(backend=backend, timeout_s=TIMEOUT_S, device=device)
        )
        for joined in ("RANK", "WORLD_SIZE"):  # read by the rendezvous only; a plain run alone
            os.environ.pop(joined)  # must not take them for a launcher's
    try:
        for index, job in enumerate(jobs):
            if job.ranks == 1 and group is not None and group.world_size > 1:
                if rank == 0:
                    results.put((index, 0, _learn(job, 0, None, stream[: job.events])))
                group.sum([0.0])  # the other ranks sleep here until rank 0 is done
            else:
                results.put((index, rank, _learn(job, rank, group, stream[: job.events])))
    finally:
        if group is not None:
            group.close()


def _learn(
    job: Configuration, rank: int, group: TimedGroup | None, stream: list[Record]
) -> RankResult:
    """Wire a fresh trainer on this rank's share of ``stream``; time its loop to the end."""
    from driftd.adapters.memory import InMemoryDeadLetterSink
    from driftd.adapters.memory_source import InMemoryRecordSource
    from driftd.adapters.recording_telemetry import RecordingTelemetry
    from driftd.app import build_trainer
    from driftd.loop import StopWhen
    from driftd.records import PartitionShare

    share = None if group is None else PartitionShare(rank, group.world_size)
    telemetry = RecordingTelemetry()
    with tempfile.TemporaryDirectory(prefix="driftd-group-bench-") as scratch:
        trainer = build_trainer(
            _settings(job, Path(scratch)), source=InMemoryRecordSource(stream, share=share),
            group=group, telemetry=telemetry, dead_letters=InMemoryDeadLetterSink(),
            serve_metrics=False,
        )  # fmt: skip
        if group is not None:
            group.seconds = 0.0  # the rendezvous and the first broadcast are not the loop's
        started = time.perf_counter()
        progress = trainer.loop.run(StopWhen(max_events=len(stream), max_seconds=TIMEOUT_S))
        seconds = time.perf_counter() - started
        trainer.close()
    return RankResult(
        learned=telemetry.learned,
        seconds=seconds,
        sync_seconds=tuple(telemetry.sync_seconds),
        collective_seconds=0.0 if group is None else group.seconds,
        step_size=progress.step_size,
    )


def _settings(job: Configuration, snapshots: Path) -> Any:
    """Defaults but for what a group needs: no adaptation, the feature count known."""
    from driftd.settings.root import load_settings

    model: dict[str, Any] = {"n_classes": N_CLASSES, "n_features": N_FEATURES}
    if job.hidden is not None:
        model["hidden"] = list(job.hidden)
    if job.backend == "nccl":
        model["device"] = "cuda"
    return load_settings(
        kafka={"topics": [TOPIC], "consumer_process": False},
        model=model,
        adaptation={"enabled": False},
        # only the final snapshot: the periodic ones would measure the disk, not the group
        snapshots={"dir": str(snapshots), "every_steps": 1_000_000, "every_seconds": 86_400.0},
        metrics={"enabled": False},
        distributed={"sync": job.sync or "average", "backend": job.backend},
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def median_rate(runs: list[list[RankResult]]) -> float:
    """The group's events/s, median over runs: all ranks' events over the slowest rank's time."""
    return statistics.median(
        sum(r.learned for r in ranks) / max(r.seconds for r in ranks) for ranks in runs
    )
