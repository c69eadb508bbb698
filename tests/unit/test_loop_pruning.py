"""Pruning wired into the training loop: schedule, verdicts, snapshots and exact resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import torch

from driftd.adapters.file_snapshot_reader import FileSnapshotReader, version_name
from driftd.adapters.hot_model import HotModel
from driftd.adapters.memory import InMemoryDeadLetterSink
from driftd.adapters.memory_snapshot_store import InMemorySnapshotStore
from driftd.adapters.memory_source import InMemoryRecordSource
from driftd.adapters.recording_telemetry import RecordingTelemetry
from driftd.app import Trainer, build_trainer
from driftd.learning.models import build_model
from driftd.loop import StopWhen
from driftd.records import Record
from driftd.settings.root import Settings, load_settings
from driftd.tools.streams import DriftingStream
from driftd.training_state import snapshot_offsets
from tests.fakes import FakeClock

N_EVENTS = 6_000


def _records(n: int = N_EVENTS, *, change_every: int | None = None) -> list[Record]:
    stream = DriftingStream(n_events=n, change_every=change_every or n, seed=3)
    return [
        Record("events", 0, offset, orjson.dumps(event))
        for offset, event in enumerate(stream.events())
    ]


def _settings(tmp_path: Path, adaptation: bool = False, **pruning: Any) -> Settings:
    return load_settings(
        model={"n_classes": 3, "seed": 5, "hidden": [64, 64]},
        # One step per poll: the pruning schedule here must not depend on the step controller.
        learner={"batch_size": 64, "micro_batch": 64, "optimizer": "adam", "lr": 0.003},
        snapshots={"dir": str(tmp_path), "every_steps": 10, "every_seconds": 3600},
        metrics={"enabled": False},
        drift={"enabled": adaptation},
        adaptation={"enabled": adaptation},
        pruning={
            "enabled": True, "every_steps": 10, "n_events": 3, "baseline_events": 256,
            "verify_events": 256, "replay_events": 512, "target_sparsity": 0.5, **pruning,
        },
    )  # fmt: skip


def _trainer(
    settings: Settings,
    records: list[Record],
    store: InMemorySnapshotStore,
    telemetry: RecordingTelemetry | None = None,
) -> Trainer:
    snapshot = store.load_newest()
    start = snapshot_offsets(snapshot) if snapshot else None
    return build_trainer(
        settings,
        source=InMemoryRecordSource(records, start_offsets=start),
        store=store,
        clock=FakeClock(),
        telemetry=telemetry or RecordingTelemetry(),
        dead_letters=InMemoryDeadLetterSink(),
        serve_metrics=False,
    )


def _weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    learner = trainer.loop.state.learner
    assert learner is not None
    return {key: value.clone() for key, value in learner.model.state_dict().items()}


def _masked_zero_fraction(trainer: Trainer) -> float:
    """Share of the trunk's Linear weights that are exactly zero."""
    learner = trainer.loop.state.learner
    assert learner is not None
    weights = [m.weight for m in learner.model.shared.modules() if isinstance(m, torch.nn.Linear)]
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / sum(w.numel() for w in weights)


def test_unstructured_pruning_reaches_the_target_and_masks_stay_zero(tmp_path: Path) -> None:
    telemetry = RecordingTelemetry()
    store = InMemorySnapshotStore(keep=3)
    trainer = _trainer(_settings(tmp_path), _records(), store, telemetry)
    trainer.run(StopWhen(max_events=N_EVENTS))

    stage = trainer.loop.state.pruning
    assert stage is not None
    assert stage.pruner.controller.event == 3  # the whole schedule went through
    assert sum(telemetry.prunes.values()) == 3
    assert telemetry.prunes["kept"] + telemetry.prunes["recovered"] == 3
    # 50% of the trunk's weights masked, and still zero after hundreds of Adam steps since.
    assert _masked_zero_fraction(trainer) == pytest.approx(0.5, abs=0.01)
    assert telemetry.sparsity is not None
    assert telemetry.sparsity > 0.3
    assert telemetry.flops_per_event is not None
    final = store.load_newest()
    assert final is not None
    assert final.manifest["pruning"]["summary"]["weight_sparsity"] == pytest.approx(0.5, abs=0.01)
    assert final.manifest["pruning"]["pruner"]["controller"]["event"] == 3
    window = trainer.loop.state.learner.window  # type: ignore[union-attr]
    assert window.accuracy is not None
    assert window.accuracy > 0.9


def test_structured_pruning_shrinks_the_model_and_the_snapshot_rebuilds_it(tmp_path: Path) -> None:
    store = InMemorySnapshotStore(keep=3)
    trainer = _trainer(_settings(tmp_path, structured=True), _records(), store)
    trainer.run(StopWhen(max_events=N_EVENTS))

    final = store.load_newest()
    assert final is not None
    config = final.manifest["model"]
    assert config["hidden"] == [32, 32]  # 50% of each trunk layer's 64 units removed
    assert final.manifest["parameters"] < 10 * 64 + 64 + 64 * 64 + 64 + 64 * 3 + 3
    # What inference does: build the model from the manifest, load the weights, no surprises.
    model = build_model(dict(config), torch.Generator().manual_seed(0))
    model.load_state_dict(dict(final.weights))
    x = torch.randn(8, 10)
    live = trainer.loop.state.learner
    assert live is not None
    live.model.eval()
    model.eval()
    assert torch.equal(model(x), live.model(x))


@pytest.mark.parametrize("structured", [False, True])
def test_a_restart_continues_pruning_exactly(tmp_path: Path, structured: bool) -> None:
    """Stop mid-schedule, restart from the snapshot: same weights as a run that never stopped."""
    records = _records(4_000)
    settings = _settings(tmp_path, structured=structured)
    reference = _trainer(settings, records, InMemorySnapshotStore(keep=2))
    reference.run(StopWhen(max_events=4_000))
    expected = _weights(reference)

    store = InMemorySnapshotStore(keep=5)
    first = _trainer(settings, records, store)
    first.run(StopWhen(max_events=1_600))  # graceful: final snapshot
    stage = first.loop.state.pruning
    assert stage is not None
    assert stage.pruner.controller.event >= 1
    resumed = _trainer(settings, records, store)
    resumed.run(StopWhen(max_events=2_400))
    got = _weights(resumed)
    assert got.keys() == expected.keys()
    for key, value in got.items():
        assert torch.equal(value, expected[key]), key


def test_an_impossible_target_triggers_recovery_then_rollback(tmp_path: Path) -> None:
    """90% of a small trunk at zero tolerance: recovery restores units, then it rolls back."""
    telemetry = RecordingTelemetry()
    settings = _settings(
        tmp_path, structured=True, target_sparsity=0.95, n_events=1, tolerance=0.0,
        abs_tolerance=0.0, fine_tune_epochs=0, max_recoveries=1, max_consecutive_rollbacks=1,
    )  # fmt: skip
    trainer = _trainer(settings, _records(3_000), InMemorySnapshotStore(keep=2), telemetry)
    trainer.run(StopWhen(max_events=3_000))

    stage = trainer.loop.state.pruning
    assert stage is not None
    assert telemetry.prunes["rolled_back"] == 1
    assert stage.pruner.controller.phase == "done"  # the target is out of reach: stop trying
    learner = trainer.loop.state.learner
    assert learner is not None
    assert learner.model.config["hidden"] == [64, 64]  # the unpruned model is back


def test_structured_pruning_with_domain_heads_keeps_stored_heads_usable(tmp_path: Path) -> None:
    """Heads stored before a structured prune are shrunk with it: switching back works."""
    records = _records(9_000, change_every=1_500)
    settings = _settings(tmp_path, adaptation=True, structured=True, every_steps=20)
    telemetry = RecordingTelemetry()
    trainer = _trainer(settings, records, InMemorySnapshotStore(keep=2), telemetry)
    trainer.run(StopWhen(max_events=9_000))

    state = trainer.loop.state
    assert state.adaptation is not None
    assert state.adaptation.domain_store is not None
    assert sum(telemetry.prunes.values()) >= 1
    assert telemetry.adaptations["new_head"] >= 1
    learner = state.learner
    assert learner is not None
    live_head = learner.model.head.state_dict()
    for name in state.adaptation.domain_store.names:
        entry = state.adaptation.domain_store.entry(name)
        for key, value in entry.head.items():
            assert value.shape == live_head[key].shape, (name, key)
        live_trunk = learner.model.shared.state_dict()
        for key, value in entry.trunk.items():
            assert value.shape == live_trunk[key].shape, (name, key)


def test_int8_copy_is_written_measured_and_served(tmp_path: Path) -> None:
    """``pruning.int8_export``: model.int8.safetensors beside each snapshot, its accuracy
    cost in the manifest, and ``HotModel(int8=True)`` serving it."""
    settings = _settings(tmp_path, structured=True, int8_export=True)
    records = _records(3_000)
    trainer = build_trainer(
        settings, source=InMemoryRecordSource(records), clock=FakeClock(),
        telemetry=RecordingTelemetry(), dead_letters=InMemoryDeadLetterSink(), serve_metrics=False,
    )  # fmt: skip
    trainer.run(StopWhen(max_events=3_000))

    reader = FileSnapshotReader(tmp_path, include_unpublished=True)
    newest = reader.load(reader.versions()[-1])
    figures = newest.manifest["int8"]
    assert figures["events"] == settings.pruning.replay_events
    assert abs(figures["accuracy_delta"]) <= 0.01
    assert figures["agreement"] >= 0.98
    assert "0.weight_int8" in {key.split("shared.", 1)[-1] for key in newest.serving}
    assert (tmp_path / version_name(newest.version) / "model.int8.safetensors").is_file()

    x = torch.tensor([orjson.loads(r.value)["x"] for r in records[-500:]], dtype=torch.float32)
    with (
        HotModel(tmp_path, int8=True, start=False) as int8,
        HotModel(tmp_path, start=False) as dense,
    ):
        assert int8.version == dense.version == newest.version
        quantized, exact = int8.predict(x.numpy()), dense.predict(x.numpy())
    assert quantized.probabilities is not None
    assert exact.probabilities is not None
    assert not np.array_equal(quantized.probabilities, exact.probabilities)  # really the int8 one
    assert np.abs(quantized.probabilities - exact.probabilities).max() < 0.05
    assert (quantized.classes == exact.classes).mean() >= 0.98
