"""A dead-letter outage: durability goes on, commits stop at the oldest undelivered dead letter,
the backlog is bounded by back-pressure, and a restart loses and doubles nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from driftd.adapters.memory import InMemoryDeadLetterSink
from driftd.adapters.memory_snapshot_store import InMemorySnapshotStore
from driftd.adapters.recording_telemetry import RecordingTelemetry
from driftd.dead_letter_backlog import backlog_state, commit_offsets, restore_backlog
from driftd.loop import StopWhen
from driftd.records import Record, Rejection, TopicPartition
from driftd.settings.root import Settings
from tests.unit.test_loop import TP0, TP1, _offsets, _records, _settings, _trainer, _weights

BAD = b"{not json"


def _bad(records: list[Record]) -> list[Record]:
    return [record for record in records if record.value == BAD]


def _ends(records: list[Record]) -> dict[TopicPartition, int]:
    ends: dict[TopicPartition, int] = {}
    for record in records:
        ends[record.topic_partition] = max(ends.get(record.topic_partition, 0), record.offset + 1)
    return ends


def _delivered(sink: InMemoryDeadLetterSink) -> list[tuple[int, int, bytes | None]]:
    return sorted((r.record.partition, r.record.offset, r.record.value) for r in sink.rejections)


def _expected(records: list[Record]) -> list[tuple[int, int, bytes | None]]:
    return sorted((r.partition, r.offset, r.value) for r in _bad(records))


def test_commit_offsets_stop_at_the_oldest_undelivered_dead_letter_per_partition() -> None:
    def rejected(partition: int, offset: int) -> Rejection:
        return Rejection(Record("events", partition, offset, BAD), "not_json", "")

    learned = {TP0: 100, TP1: 80}
    assert commit_offsets(learned, []) == learned
    assert commit_offsets(learned, [rejected(1, 70), rejected(1, 40), rejected(1, 60)]) == {
        TP0: 100,
        TP1: 40,
    }


def test_the_backlog_round_trips_bytes_for_bytes() -> None:
    rejections = [
        Rejection(Record("a", 0, 5, b"\x00\xffvalue", b"key", 1_700_000_000_000), "not_json", "x"),
        Rejection(Record("a", 1, 7, None, None), "empty", "no value"),
        Rejection(Record("b", 0, 9, b"", b"\x01"), "not_json", "detail \u00e9"),
    ]
    tensors, entries = backlog_state(rejections)
    assert restore_backlog(tensors, entries) == rejections
    assert backlog_state([]) == ({}, [])
    with pytest.raises(ValueError, match="left over"):
        restore_backlog(tensors, entries[:1])


def test_a_dead_letter_outage_keeps_snapshots_and_caps_the_commit(tmp_path: Path) -> None:
    records = _records(320, bad_every=10)
    sink, telemetry = InMemoryDeadLetterSink(available=False), RecordingTelemetry()
    store = InMemorySnapshotStore(keep=100)
    trainer, source = _trainer(
        _settings(tmp_path, every_steps=2), records, store, dead_letters=sink, telemetry=telemetry
    )
    progress = trainer.loop.run(StopWhen(max_events=len(records)))

    assert progress.events_learned == 320
    assert len(store.versions()) == progress.steps // 2 + 1  # every scheduled one, the final
    assert telemetry.snapshot_failures == {}
    newest = store.load_newest()
    assert newest is not None
    assert _offsets(newest) == _ends(records)  # the learned position: a restart resumes there
    held = restore_backlog(
        {k.removeprefix("dead_letters."): v for k, v in newest.training.items()},
        newest.manifest["dead_letters"],
    )
    assert held == sink.undelivered()
    assert sorted((r.record.partition, r.record.offset, r.record.value) for r in held) == (
        _expected(records)
    )
    # Every bad record is on partition 1: its commit stops at the first one, TP0 is complete.
    first_bad = min(r.offset for r in _bad(records))
    assert source.committed == {TP0: _ends(records)[TP0], TP1: first_bad}
    assert telemetry.dead_letter_backlogs[-1] == (32, False)


def _restart_after(
    settings: Settings, records: list[Record], store: InMemorySnapshotStore, consumed: int
) -> InMemoryDeadLetterSink:
    """Learn ``consumed`` records with the dead-letter topic down, then crash (no close)."""
    down = InMemoryDeadLetterSink(available=False)
    crashed, _ = _trainer(settings, records, store, dead_letters=down)
    crashed.loop.run(StopWhen(max_events=consumed))  # its final snapshot holds the backlog
    crashed.loop.process(crashed.loop.source.poll(40, 0.0))  # learned after it, never saved
    assert down.rejections == []
    return down


def test_a_restart_after_a_capped_commit_learns_once_and_dead_letters_everything(
    tmp_path: Path,
) -> None:
    records = _records(320, bad_every=10)
    settings = _settings(tmp_path, every_steps=3)
    reference, _ = _trainer(settings, records, InMemorySnapshotStore(keep=2))
    reference.loop.run(StopWhen(max_events=len(records)))
    expected = _weights(reference)

    store = InMemorySnapshotStore(keep=3)
    _restart_after(settings, records, store, consumed=192)
    # Restarted while the topic is still down: the held dead letters are queued again.
    still_down = InMemoryDeadLetterSink(available=False)
    restarted, source = _trainer(settings, records, store, dead_letters=still_down)
    held = still_down.undelivered()
    resumed_at = dict(restarted.loop.state.offsets)
    # What the crashed run's final snapshot held: every bad record it had consumed.
    assert [r.record for r in held] == [r for r in _bad(records) if r.offset < resumed_at[TP1]]
    assert len(held) == 17
    left = sum(r.offset >= resumed_at.get(r.topic_partition, 0) for r in records)
    restarted.loop.run(StopWhen(max_events=64))
    assert source.committed[TP1] == min(r.offset for r in _bad(records))
    still_down.available = True  # the topic is back
    restarted.loop.run(StopWhen(max_events=left))

    final = store.load_newest()
    assert final is not None
    assert final.manifest["events_learned"] == 320
    assert final.manifest["events_rejected"] == 32
    assert final.manifest["dead_letters"] == []
    assert _delivered(still_down) == _expected(records)  # each bad record exactly once
    assert source.committed == _ends(records)
    for key, value in _weights(restarted).items():
        assert torch.equal(value, expected[key]), key  # nothing lost, nothing learned twice


class _RecoveringSink(InMemoryDeadLetterSink):
    """Down until ``down_for`` flushes have failed; records the backlog at each failure."""

    def __init__(self, down_for: int) -> None:
        super().__init__(available=False)
        self.down_for = down_for
        self.backlog_at_failure: list[int] = []

    def flush(self, timeout_s: float) -> None:
        if not self.available:
            self.backlog_at_failure.append(self.pending)
            if len(self.backlog_at_failure) >= self.down_for:
                self.available = True
        super().flush(timeout_s)


def test_a_full_backlog_stops_consuming_until_it_drains(tmp_path: Path) -> None:
    records = _records(320, bad_every=10)
    settings = _settings(tmp_path).model_copy(
        update={
            "kafka": _settings(tmp_path).kafka.model_copy(update={"dead_letter_max_backlog": 5}),
            "learner": _settings(tmp_path).learner.model_copy(update={"poll_timeout_s": 0.001}),
        }
    )
    sink, telemetry = _RecoveringSink(down_for=4), RecordingTelemetry()
    store = InMemorySnapshotStore(keep=2)
    trainer, source = _trainer(settings, records, store, dead_letters=sink, telemetry=telemetry)
    progress = trainer.loop.run(StopWhen(max_events=len(records)))

    # Consuming stopped with the backlog at the limit (plus what the last batch rejected: a
    # batch of 32 holds at most 4 bad records) and did not grow while it waited.
    paused_at = sink.backlog_at_failure
    assert len(paused_at) == 4
    assert len(set(paused_at)) == 1
    assert 5 <= paused_at[0] <= 5 + 3
    assert (paused_at[0], True) in telemetry.dead_letter_backlogs
    assert telemetry.dead_letter_backlogs[-1] == (0, False)
    # Then everything: learned once, every dead letter delivered, nothing dropped.
    assert progress.events_learned == 320
    assert _delivered(sink) == _expected(records)
    assert source.committed == _ends(records)
