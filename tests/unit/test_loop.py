"""The training loop over in-memory adapters: order of commit, bad records, exact resume."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import torch

from driftd.adapters.memory import InMemoryDeadLetterSink
from driftd.adapters.memory_snapshot_store import InMemorySnapshotStore
from driftd.adapters.memory_source import InMemoryRecordSource
from driftd.adapters.recording_telemetry import RecordingTelemetry
from driftd.app import Trainer, build_trainer
from driftd.loop import StopWhen
from driftd.ports import Snapshot, UnreadableSnapshotsError
from driftd.records import Record, TopicPartition
from driftd.settings.root import Settings, load_settings
from driftd.tools.streams import DriftingStream
from tests.fakes import FakeClock

TP0, TP1 = TopicPartition("events", 0), TopicPartition("events", 1)


def _records(n: int, *, bad_every: int = 0) -> list[Record]:
    """``n`` good events over two partitions, plus a bad record every ``bad_every`` events."""
    records: list[Record] = []
    offsets = [0, 0]
    for index, event in enumerate(DriftingStream(n_events=n, change_every=n // 2).events()):
        partition = index % 2
        records.append(Record("events", partition, offsets[partition], orjson.dumps(event)))
        offsets[partition] += 1
        if bad_every and index % bad_every == bad_every - 1:
            records.append(Record("events", partition, offsets[partition], b"{not json"))
            offsets[partition] += 1
    return records


def _settings(tmp_path: Path, **snapshots: object) -> Settings:
    return load_settings(
        model={"n_classes": 3, "seed": 5},
        learner={"batch_size": 32, "optimizer": "adam"},
        snapshots={"dir": str(tmp_path), "every_steps": 1000, "every_seconds": 3600, **snapshots},
        metrics={"enabled": False},
    )


def _trainer(
    settings: Settings,
    records: list[Record],
    store: InMemorySnapshotStore,
    *,
    dead_letters: InMemoryDeadLetterSink | None = None,
    telemetry: RecordingTelemetry | None = None,
) -> tuple[Trainer, InMemoryRecordSource]:
    snapshot = store.load_newest()
    start = _offsets(snapshot) if snapshot else None
    source = InMemoryRecordSource(records, start_offsets=start)
    trainer = build_trainer(
        settings,
        source=source,
        store=store,
        clock=FakeClock(),
        telemetry=telemetry or RecordingTelemetry(),
        dead_letters=dead_letters or InMemoryDeadLetterSink(),
        serve_metrics=False,
    )
    return trainer, source


def _offsets(snapshot: Snapshot) -> dict[TopicPartition, int]:
    return {
        TopicPartition(e["topic"], e["partition"]): e["next_offset"]
        for e in snapshot.manifest["offsets"]
    }


def _weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    learner = trainer.loop.state.learner
    assert learner is not None
    return {k: v.clone() for k, v in learner.model.state_dict().items()}


def test_learns_every_good_event_and_dead_letters_every_bad_one(tmp_path: Path) -> None:
    records = _records(640, bad_every=100)
    dead_letters, telemetry = InMemoryDeadLetterSink(), RecordingTelemetry()
    store = InMemorySnapshotStore(keep=3)
    trainer, source = _trainer(
        _settings(tmp_path), records, store, dead_letters=dead_letters, telemetry=telemetry
    )
    progress = trainer.run(StopWhen(max_events=len(records)))
    assert progress.events_consumed == 646
    assert progress.events_learned == 640 == telemetry.learned
    assert progress.events_invalid == 6 == telemetry.invalid["not_json"]
    assert [r.record.offset for r in dead_letters.rejections] == [50, 101, 152, 203, 254, 305]
    assert {r.reason for r in dead_letters.rejections} == {"not_json"}
    snapshot = store.load_newest()
    assert snapshot is not None
    assert snapshot.manifest["events_learned"] == 640
    assert snapshot.manifest["events_rejected"] == 6
    assert _offsets(snapshot) == {TP0: 320, TP1: 326}
    assert source.committed == {TP0: 320, TP1: 326}, "committed exactly what the snapshot holds"


def test_commits_only_after_the_snapshot_is_durable(tmp_path: Path) -> None:
    class FailingStore(InMemorySnapshotStore):
        def save(self, snapshot: Snapshot, *, publish: bool = True) -> Snapshot:
            raise OSError(28, "No space left on device")

    telemetry = RecordingTelemetry()
    trainer, source = _trainer(
        _settings(tmp_path, every_steps=2), _records(256), FailingStore(keep=2), telemetry=telemetry
    )
    progress = trainer.run(StopWhen(max_events=256))
    assert progress.events_learned == 256, "training goes on when snapshots fail"
    assert source.committed == {}
    assert source.commits == 0
    assert telemetry.snapshot_failures["ENOSPC"] >= 2  # the errno name: disk full, not "OSError"


def test_a_failing_dead_letter_flush_is_retried_on_the_snapshot_schedule(tmp_path: Path) -> None:
    """Not after every batch: each attempt can wait out the flush timeout on a dead broker.

    Snapshots and (capped) commits go on meanwhile: ``test_loop_dead_letter_outage.py``.
    """
    down = InMemoryDeadLetterSink(available=False)
    store = InMemorySnapshotStore(keep=2)
    trainer, _ = _trainer(
        _settings(tmp_path, every_steps=4), _records(640, bad_every=10), store, dead_letters=down
    )
    progress = trainer.loop.run(StopWhen(max_events=704))
    assert progress.events_learned == 640, "learning goes on"
    assert down.failed_flushes == progress.steps // 4 + 1  # each scheduled snapshot, the final
    assert store.versions()[-1] == progress.steps // 4 + 1  # and each of them was saved


def test_snapshots_every_n_steps(tmp_path: Path) -> None:
    store = InMemorySnapshotStore(keep=100)
    trainer, _ = _trainer(_settings(tmp_path, every_steps=4), _records(32 * 10), store)
    trainer.run(StopWhen(max_events=320))
    assert store.versions() == [1, 2, 3]  # after steps 4 and 8, then the final one at step 10
    final = store.load_newest()
    assert final is not None
    assert final.manifest["step"] == 10


@pytest.mark.parametrize("crash_after", [0, 96])
def test_resume_learns_each_event_exactly_once(tmp_path: Path, crash_after: int) -> None:
    """Stop (snapshot) after 160 events, then optionally learn more and crash before any
    snapshot; a restart must end with the same weights as a run that never stopped."""
    records = _records(480)
    settings = _settings(tmp_path)
    reference, _ = _trainer(settings, records, InMemorySnapshotStore(keep=2))
    reference.run(StopWhen(max_events=480))
    expected = _weights(reference)

    store = InMemorySnapshotStore(keep=5)
    first, _ = _trainer(settings, records, store)
    first.run(StopWhen(max_events=160))  # graceful: final snapshot at 160
    if crash_after:
        crashed, _ = _trainer(settings, records, store)
        crashed.loop.process(crashed.loop.source.poll(crash_after, 0.0))  # learned, never saved
    resumed, _ = _trainer(settings, records, store)
    assert resumed.loop.state.offsets == {TP0: 80, TP1: 80}
    resumed.run(StopWhen(max_events=320))
    final = store.load_newest()
    assert final is not None
    assert final.manifest["events_learned"] == 480
    for key, value in _weights(resumed).items():
        assert torch.equal(value, expected[key]), key


def test_feature_count_is_inferred_from_the_first_valid_event(tmp_path: Path) -> None:
    records = [Record("events", 0, 0, b'{"x": "bad"}')] + [
        Record("events", 0, i + 1, orjson.dumps({"x": [0.1 * i] * 7, "y": i % 3}))
        for i in range(40)
    ]
    store = InMemorySnapshotStore(keep=2)
    trainer, _ = _trainer(_settings(tmp_path), records, store)
    trainer.run(StopWhen(max_events=41))
    snapshot = store.load_newest()
    assert snapshot is not None
    assert snapshot.manifest["model"]["n_features"] == 7


def test_refuses_to_start_blank_when_every_snapshot_is_unreadable(tmp_path: Path) -> None:
    """Starting fresh at the committed offsets would leave everything before them in no model."""
    settings = _settings(tmp_path)
    first = build_trainer(
        settings, source=InMemoryRecordSource(_records(64)), clock=FakeClock(),
        telemetry=RecordingTelemetry(), dead_letters=InMemoryDeadLetterSink(), serve_metrics=False,
    )  # fmt: skip
    first.run(StopWhen(max_events=64))
    manifests = sorted(tmp_path.glob("*/manifest.json"))
    assert manifests
    for manifest in manifests:
        manifest.write_text("{garbled")
    with pytest.raises(UnreadableSnapshotsError, match="none is readable"):
        build_trainer(settings, source=InMemoryRecordSource([]), serve_metrics=False)
