"""The rank side of the trainer-group tests: each rank runs in its own spawned process.

:func:`run_rank` joins a gloo group on loopback, trains on its share of in-memory records with a
file snapshot store shared by the ranks, and reports what the test checks (its model's digest,
its committed offsets) through a queue.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import torch

from driftd.records import Record
from driftd.tools.streams import DriftingStream

TOPIC = "events"
N_FEATURES = 10


def records(
    n_per_partition: int, partitions: int = 4, *, skip: int = 0, change_every: int = 1_500
) -> list[Record]:
    """A drifting stream spread round-robin over ``partitions``; the first ``skip`` per partition
    left out (what an earlier run already read)."""
    total = n_per_partition * partitions
    stream = DriftingStream(n_events=total, change_every=change_every, seed=3)
    out = []
    for i, event in enumerate(stream.events()):
        partition, offset = i % partitions, i // partitions
        if offset >= skip:
            out.append(Record(TOPIC, partition, offset, orjson.dumps(event)))
    return out


#: Pruning soon and often, structured (the layers shrink): what the ranks must do alike.
PRUNING = {
    "enabled": True, "structured": True, "every_steps": 5, "baseline_events": 128,
    "verify_events": 128, "replay_events": 256, "n_events": 3, "target_sparsity": 0.5,
}  # fmt: skip


def settings_for(
    snapshot_dir: Path, sync: str, *, adaptation: bool = False, pruning: bool = False
) -> Any:
    """The settings every rank uses: the feature count known, one shared snapshot directory."""
    from driftd.settings.root import load_settings

    return load_settings(
        kafka={"topics": [TOPIC], "consumer_process": False},
        model={"n_classes": 3, "n_features": N_FEATURES, "seed": 5, "hidden": [16]},
        learner={"batch_size": 64, "optimizer": "adam", "lr": 0.003},
        adaptation={"enabled": adaptation},
        pruning=PRUNING if pruning else {"enabled": False},
        snapshots={"dir": str(snapshot_dir), "every_steps": 5, "gate_enabled": False},
        metrics={"enabled": False},
        distributed={"sync": sync, "average_every_steps": 3, "timeout_s": 60},
    )


def run_rank(
    rank: int,
    world_size: int,
    port: int,
    snapshot_dir: str,
    sync: str,
    stream: list[Record],
    results: Any,
    adaptation: bool = False,
    pruning: bool = False,
) -> None:
    """One rank: join, train until the group is idle, report digest, offsets and counters."""
    from driftd.adapters.file_snapshot_store import FileSnapshotStore
    from driftd.adapters.memory import InMemoryDeadLetterSink
    from driftd.adapters.memory_source import InMemoryRecordSource
    from driftd.adapters.recording_telemetry import RecordingTelemetry
    from driftd.adapters.torch_distributed_group import TorchDistributedGroup
    from driftd.app import build_trainer
    from driftd.distributed.replicas import model_digest
    from driftd.loop import StopWhen
    from driftd.records import PartitionShare
    from driftd.training_state import snapshot_offsets

    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
        WORLD_SIZE=str(world_size),
    )  # fmt: skip
    torch.set_num_threads(1)
    group = TorchDistributedGroup(backend="gloo", timeout_s=60, device=torch.device("cpu"))
    try:
        newest = FileSnapshotStore(Path(snapshot_dir), keep=5).load_newest()
        start = None if newest is None else snapshot_offsets(newest)  # as the Kafka source does
        source = InMemoryRecordSource(
            stream, start_offsets=start, share=PartitionShare(rank, world_size)
        )
        telemetry = RecordingTelemetry()
        trainer = build_trainer(
            settings_for(Path(snapshot_dir), sync, adaptation=adaptation, pruning=pruning),
            source=source,
            group=group,
            telemetry=telemetry, dead_letters=InMemoryDeadLetterSink(), serve_metrics=False,
        )  # fmt: skip
        progress = trainer.loop.run(StopWhen(idle_seconds=1.0, max_seconds=120))
        learner = trainer.loop.state.learner
        assert learner is not None
        newest = trainer.store.load_newest()
        results.put(
            {
                "rank": rank,
                "digest": model_digest(learner.model),
                "committed": {str(tp): offset for tp, offset in source.committed.items()},
                "consumed": progress.events_consumed,
                "syncs": dict(telemetry.syncs),
                "drifts": sorted(telemetry.drifts.items()),
                "adaptations": sorted(telemetry.adaptations.items()),
                "steps": learner.steps,
                "prunes": sorted(telemetry.prunes.items()),
                "parameters": telemetry.parameters,
                "snapshot_offsets": None
                if newest is None
                else {str(tp): o for tp, o in snapshot_offsets(newest).items()},
                "snapshot_learned": None if newest is None else newest.manifest["events_learned"],
            }
        )
        trainer.close()
    finally:
        group.close()
