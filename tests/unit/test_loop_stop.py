"""When the training loop stops by itself: the idle clock starts at the first record."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest

from driftd.adapters.memory import InMemoryDeadLetterSink
from driftd.adapters.memory_snapshot_store import InMemorySnapshotStore
from driftd.adapters.memory_source import InMemoryRecordSource
from driftd.adapters.recording_telemetry import RecordingTelemetry
from driftd.app import build_trainer
from driftd.loop import LoopProgress, StopWhen
from driftd.records import Record
from driftd.settings.root import load_settings
from driftd.tools.streams import DriftingStream
from tests.fakes import FakeClock


@pytest.mark.parametrize(
    ("stop", "consumed", "last_record", "now", "expected"),
    [
        (StopWhen(idle_seconds=4), 0, None, 1_000.0, None),  # no record yet: not idle
        (StopWhen(idle_seconds=4), 5, 10.0, 13.9, None),
        (StopWhen(idle_seconds=4), 5, 10.0, 14.0, "idle"),
        (StopWhen(max_seconds=60, idle_seconds=4), 0, None, 60.0, "max_seconds"),
        (StopWhen(max_events=5, idle_seconds=4), 5, 10.0, 20.0, "max_events"),
        (StopWhen(), 10**9, 0.0, 10**9, None),
    ],
)
def test_reached_names_the_bound(
    stop: StopWhen, consumed: int, last_record: float | None, now: float, expected: str | None
) -> None:
    reason = stop.reached(consumed=consumed, started=0.0, last_record=last_record, now=now)
    assert reason == expected


class _JoiningSource(InMemoryRecordSource):
    """Serves nothing for ``join_s`` of fake time (a consumer joining its group), then records."""

    def __init__(self, records: list[Record], clock: FakeClock, join_s: float) -> None:
        super().__init__(records)
        self._clock, self._join_until = clock, clock.monotonic() + join_s

    def poll(self, max_records: int, timeout_s: float) -> Sequence[Record]:
        self._clock.advance(timeout_s)  # a poll with nothing to read waits its timeout
        if self._clock.monotonic() < self._join_until:
            return []
        return super().poll(max_records, timeout_s)


def _run(tmp_path: Path, join_s: float, stop: StopWhen) -> LoopProgress:
    events = DriftingStream(n_events=300, change_every=300).events()
    records = [Record("events", 0, i, orjson.dumps(event)) for i, event in enumerate(events)]
    clock = FakeClock()
    trainer = build_trainer(
        load_settings(
            model={"n_classes": 3},
            learner={"batch_size": 50, "poll_timeout_s": 0.5},
            snapshots={"dir": str(tmp_path)},
            metrics={"enabled": False},
        ),
        source=_JoiningSource(records, clock, join_s),
        store=InMemorySnapshotStore(keep=3),
        clock=clock,
        telemetry=RecordingTelemetry(),
        dead_letters=InMemoryDeadLetterSink(),
        serve_metrics=False,
    )
    return trainer.run(stop)


def test_a_slow_group_join_is_not_idle_time(tmp_path: Path) -> None:
    # 10 s to the first record (a busy machine) with a 4 s idle bound: everything is learned.
    progress = _run(tmp_path, join_s=10.0, stop=StopWhen(max_seconds=60, idle_seconds=4))
    assert progress.events_learned == 300
    assert progress.stopped_by == "idle"


def test_no_record_at_all_ends_at_max_seconds_and_says_so(tmp_path: Path) -> None:
    progress = _run(tmp_path, join_s=1e9, stop=StopWhen(max_seconds=20, idle_seconds=4))
    assert (progress.events_consumed, progress.stopped_by) == (0, "max_seconds")
