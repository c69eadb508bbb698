"""The step-size controller: finer while the consumer keeps up, coarser while a backlog grows."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import orjson
import pytest

from driftd.adapters.memory import InMemoryDeadLetterSink
from driftd.adapters.memory_snapshot_store import InMemorySnapshotStore
from driftd.adapters.memory_source import InMemoryRecordSource
from driftd.adapters.recording_telemetry import RecordingTelemetry
from driftd.app import build_trainer
from driftd.decode import DecodedBatch
from driftd.learning.granularity import StepSizeController
from driftd.learning.learner import StepReport
from driftd.loop import StopWhen
from driftd.records import Record, TopicPartition
from driftd.settings.root import load_settings
from driftd.tools.streams import DriftingStream
from tests.fakes import FakeClock


def test_halves_while_nothing_waits_and_doubles_while_a_backlog_stands() -> None:
    controller = StepSizeController(min_size=1, max_size=256, start=32)
    assert [controller.observe(0, 100) for _ in range(6)] == [16, 8, 4, 2, 1, 1]
    assert [controller.observe(10_000, 256) for _ in range(9)] == [
        2, 4, 8, 16, 32, 64, 128, 256, 256,
    ]  # fmt: skip
    assert controller.observe(500, 256) == 256, "between the thresholds: hold"
    assert controller.observe(None, 256) == 256, "unknown backlog: hold"
    assert controller.observe(0, 0) == 256, "an empty poll says nothing"


def test_state_round_trip_is_clamped_to_the_bounds() -> None:
    controller = StepSizeController(min_size=4, max_size=64, start=1)
    assert controller.size == 4
    controller.load_state_dict({"size": 1_000})
    assert controller.size == 64
    with pytest.raises(ValueError, match="min_size"):
        StepSizeController(min_size=8, max_size=4, start=4)


class _LearnerPacedSource(InMemoryRecordSource):
    """Events come when the learner asks: nothing ever waits."""

    def lag(self) -> Mapping[TopicPartition, int]:
        return {}


def _records(n: int) -> list[Record]:
    events = DriftingStream(n_events=n, change_every=n).events()
    return [Record("events", 0, i, orjson.dumps(event)) for i, event in enumerate(events)]


@pytest.mark.parametrize(("paced", "expected"), [(True, 1), (False, 64)])
def test_the_loop_steps_finer_when_idle_and_coarser_behind_keeping_prequential_order(
    tmp_path: Path, paced: bool, expected: int
) -> None:
    settings = load_settings(
        model={"n_classes": 3, "seed": 1},
        learner={"batch_size": 64, "micro_batch": "auto", "max_micro_batch": 256},
        snapshots={"dir": str(tmp_path), "every_steps": 10**6, "every_seconds": 10**6},
        metrics={"enabled": False},
    )
    records = _records(1_500)
    source = (_LearnerPacedSource if paced else InMemoryRecordSource)(records)
    seen: list[int] = []
    sizes: list[int | None] = []

    def on_report(report: StepReport, batch: DecodedBatch) -> None:
        seen.extend(record.offset for record in batch.records)
        assert len(report.predictions) == len(batch.records)

    trainer = build_trainer(
        settings, source=source, store=InMemorySnapshotStore(keep=1), clock=FakeClock(),
        telemetry=RecordingTelemetry(), dead_letters=InMemoryDeadLetterSink(),
        serve_metrics=False, on_report=on_report,
        on_step=lambda progress: sizes.append(progress.step_size),
    )  # fmt: skip
    trainer.loop.run(StopWhen(max_events=len(records)))
    assert seen == list(range(len(records))), "every event scored once, in order"
    middle = sizes[len(sizes) // 2]
    assert middle == expected, sizes
    if not paced:  # the backlog drains at the end of the replay: finer again
        assert sizes[-1] < expected
