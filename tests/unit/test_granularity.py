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


def test_finer_only_while_the_measured_cost_keeps_up_with_the_arrivals() -> None:
    controller = StepSizeController(min_size=1, max_size=256, start=16)
    controller.capacity[4] = 2_000.0  # measured: 4-event steps learn 2,000 events/s
    # 30 events come every 10 ms (3,000 events/s), all read at once: nothing waits.
    sizes = [controller.observe(0, 30, now=0.01 * poll) for poll in range(5)]
    assert controller.arrival_rate == pytest.approx(3_000.0)
    assert sizes == [8, 8, 8, 8, 8]  # 4 would fall behind: 2,000 < 1.5 x 3,000
    controller.capacity[8] = 4_000.0  # and 8 itself turns out short of the headroom
    controller.capacity[4] = 9_000.0
    assert controller.observe(0, 30, now=0.05) == 8, "finer is never faster than 8"
    controller.capacity[8] = 10_000.0
    assert controller.observe(0, 30, now=0.06) == 4


def test_a_source_that_gives_all_it_is_asked_sets_no_pace_to_keep() -> None:
    controller = StepSizeController(min_size=1, max_size=256, start=8)
    controller.capacity |= {4: 100.0, 8: 100.0}  # slow, but events come only when asked
    sizes = [controller.observe(0, 256, asked=256, now=0.1 * poll) for poll in range(4)]
    assert sizes == [1, 1, 1, 1]  # straight to the finest: nothing is gained by stepping down


def test_behind_it_coarsens_straight_to_a_size_measured_fast_enough() -> None:
    controller = StepSizeController(min_size=1, max_size=256, start=2)
    controller.capacity |= {2: 500.0, 64: 20_000.0, 128: 30_000.0}
    controller.observe(0, 256, now=0.0)
    # 4,096 waiting: draining it in 2 s needs ~2,000 events/s more than arrive (none here).
    assert controller.observe(4_096, 256, now=1.0) == 64
    unknown = StepSizeController(min_size=1, max_size=256, start=2)
    assert unknown.observe(4_096, 256, now=1.0) == 4, "no size measured: double"


def test_far_behind_it_scales_the_coarsest_measured_size_up_by_what_is_missing() -> None:
    controller = StepSizeController(min_size=1, max_size=256, start=1)
    controller.capacity[1] = 1_000.0  # single-event steps: 1,000 events/s
    # 60,000 waiting: 30,000 events/s to drain in 2 s, 45,000 with headroom: 45x one event.
    assert controller.observe(60_000, 256, now=0.0) == 64
    controller.capacity[64] = 40_000.0  # measured short of it: scaled again from 64
    assert controller.observe(60_000, 256, now=0.1) == 128


def test_between_the_thresholds_a_growing_backlog_coarsens_a_shrinking_one_holds() -> None:
    controller = StepSizeController(min_size=1, max_size=256, start=8)
    controller.observe(300, 256, now=0.0)
    assert controller.observe(600, 256, now=0.1) == 16  # growing
    assert controller.observe(500, 256, now=0.2) == 16  # shrinking: hold


def test_a_partial_step_tells_nothing_about_the_cost_of_a_size() -> None:
    controller = StepSizeController(min_size=1, max_size=256, start=32)
    controller.learned(12, 0.006)  # one 12-event step: the size's cost stays unknown
    assert controller.capacity == {}
    controller.learned(256, 0.05)
    controller.learned(256, 0.10)
    assert controller.capacity[32] == pytest.approx(5_120 + 0.3 * (2_560 - 5_120))


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
