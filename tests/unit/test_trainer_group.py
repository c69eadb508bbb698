"""A trainer group of two gloo ranks on loopback, each in its own process, on in-memory records.

Checked: the replicas end identical in both sync modes; every record is learned once across the
ranks (the snapshot's counter and offsets); each rank commits only its own partitions; a single
process resumes every partition from the group's snapshot.
"""

from __future__ import annotations

import multiprocessing
import queue
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from driftd.adapters.file_snapshot_store import FileSnapshotStore
from driftd.adapters.memory_source import InMemoryRecordSource
from driftd.app import build_trainer
from driftd.loop import StopWhen
from driftd.records import PartitionShare
from driftd.training_state import snapshot_offsets
from tests.group_ranks import TOPIC, records, run_rank, settings_for

PER_PARTITION = 400


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run_group(
    snapshot_dir: Path,
    sync: str,
    world_size: int = 2,
    *,
    adaptation: bool = False,
    pruning: bool = False,
    per_partition: int = PER_PARTITION,
) -> list[dict[str, Any]]:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    stream = records(per_partition, change_every=600)
    port = _free_port()
    ranks = [
        context.Process(
            target=run_rank,
            args=(
                rank,
                world_size,
                port,
                str(snapshot_dir),
                sync,
                stream,
                results,
                adaptation,
                pruning,
            ),
        )
        for rank in range(world_size)
    ]
    for process in ranks:
        process.start()
    reports: list[dict[str, Any]] = []
    deadline = time.monotonic() + 240
    while len(reports) < len(ranks):
        try:
            reports.append(results.get(timeout=1.0))
        except queue.Empty:
            failed = [p.exitcode for p in ranks if p.exitcode not in (None, 0)]
            assert not failed, f"a rank failed with exit code {failed}"
            assert time.monotonic() < deadline, "the ranks did not finish in time"
    for process in ranks:
        process.join(timeout=60)
        assert process.exitcode == 0
    return sorted(reports, key=lambda report: report["rank"])


@pytest.mark.parametrize("sync", ["average", "allreduce"])
def test_two_ranks_learn_one_model_and_every_record_once(tmp_path: Path, sync: str) -> None:
    reports = _run_group(tmp_path, sync)

    assert reports[0]["digest"] == reports[1]["digest"]  # one model
    assert sum(report["consumed"] for report in reports) == 4 * PER_PARTITION
    everything = {f"{TOPIC}[{p}]": PER_PARTITION for p in range(4)}
    assert reports[0]["snapshot_offsets"] == everything
    assert reports[0]["snapshot_learned"] == 4 * PER_PARTITION  # all labelled, each once
    for report in reports:  # each rank committed its own partitions, all of them, only them
        rank = report["rank"]
        own = {
            tp: offset for tp, offset in everything.items()
            if PartitionShare(rank, 2).owns(TOPIC, int(tp.split("[")[1].rstrip("]")))
        }  # fmt: skip
        assert report["committed"] == own
        assert report["syncs"].get(sync, 0) > 0


def test_with_allreduce_every_rank_takes_the_same_drift_and_adaptation_decisions(
    tmp_path: Path,
) -> None:
    reports = _run_group(tmp_path, "allreduce", adaptation=True)

    assert reports[0]["digest"] == reports[1]["digest"]
    assert reports[0]["drifts"] == reports[1]["drifts"]
    assert reports[0]["adaptations"] == reports[1]["adaptations"]
    assert reports[0]["steps"] == reports[1]["steps"]
    assert reports[0]["drifts"], "the stream changes concept: the group must see a drift"
    assert reports[0]["snapshot_learned"] == 4 * PER_PARTITION


def test_with_allreduce_every_rank_prunes_alike(tmp_path: Path) -> None:
    reports = _run_group(tmp_path, "allreduce", pruning=True)

    assert reports[0]["prunes"], "pruning every 5 steps: some pruning event must end"
    assert reports[0]["prunes"] == reports[1]["prunes"]
    assert reports[0]["parameters"] == reports[1]["parameters"]
    assert reports[0]["digest"] == reports[1]["digest"]
    assert reports[0]["snapshot_learned"] == 4 * PER_PARTITION


def test_one_process_resumes_what_two_ranks_left(tmp_path: Path) -> None:
    _run_group(tmp_path, "average")
    more = records(PER_PARTITION + 100, skip=0)
    settings = settings_for(tmp_path, "average")
    store = FileSnapshotStore(tmp_path, keep=settings.snapshots.keep)
    start = snapshot_offsets(store.load_newest())  # type: ignore[arg-type]
    trainer = build_trainer(
        settings, source=InMemoryRecordSource(more, start_offsets=start), serve_metrics=False,
        store=store,
    )  # fmt: skip
    progress = trainer.run(StopWhen(idle_seconds=0.5, max_seconds=60))

    assert progress.events_consumed == 4 * 100  # only what came after the group's snapshot
    newest = store.load_newest()
    assert newest is not None
    assert newest.manifest["events_learned"] == 4 * (PER_PARTITION + 100)
    assert set(snapshot_offsets(newest).values()) == {PER_PARTITION + 100}


def test_two_ranks_resume_what_one_process_left(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, "average")
    store = FileSnapshotStore(tmp_path, keep=settings.snapshots.keep)
    trainer = build_trainer(
        settings, source=InMemoryRecordSource(records(150, change_every=600)), store=store,
        serve_metrics=False,
    )  # fmt: skip
    trainer.run(StopWhen(idle_seconds=0.5, max_seconds=60))

    reports = _run_group(tmp_path, "average", per_partition=PER_PARTITION)

    assert sum(report["consumed"] for report in reports) == 4 * (PER_PARTITION - 150)
    assert reports[0]["snapshot_learned"] == 4 * PER_PARTITION
    assert reports[0]["digest"] == reports[1]["digest"]
