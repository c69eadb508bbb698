"""The loop's rate-limited ``progress`` lines: the per-step points `driftd report` draws."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import pytest

from driftd.adapters.memory import InMemoryDeadLetterSink
from driftd.adapters.memory_snapshot_store import InMemorySnapshotStore
from driftd.adapters.memory_source import InMemoryRecordSource
from driftd.adapters.recording_telemetry import RecordingTelemetry
from driftd.app import build_trainer
from driftd.loop import StopWhen
from driftd.records import Record
from driftd.settings.root import load_settings
from driftd.tools.streams import DriftingStream
from tests.fakes import FakeClock


def records(n: int) -> list[Record]:
    stream = DriftingStream(n_events=n, change_every=n // 3)
    return [Record("events", 0, i, orjson.dumps(e)) for i, e in enumerate(stream.events())]


def progress_lines(tmp_path: Path, caplog: pytest.LogCaptureFixture, **log: object):
    settings = load_settings(
        model={"n_classes": 3, "seed": 5},
        learner={"batch_size": 32},
        snapshots={"dir": str(tmp_path), "every_steps": 1000, "every_seconds": 3600},
        metrics={"enabled": False},
        pruning={"enabled": True, "structured": True, "every_steps": 10, "n_events": 3},
        log=log,
    )
    trainer = build_trainer(
        settings,
        source=InMemoryRecordSource(records(1920)),
        store=InMemorySnapshotStore(keep=3),
        clock=FakeClock(),
        telemetry=RecordingTelemetry(),
        dead_letters=InMemoryDeadLetterSink(),
        serve_metrics=False,
    )
    with caplog.at_level(logging.INFO, logger="driftd.loop"):
        progress = trainer.run(StopWhen(max_events=1920))
    lines = [vars(r) for r in caplog.records if getattr(r, "event", None) == "progress"]
    return progress, lines


def test_a_progress_line_per_n_events_learned(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    progress, lines = progress_lines(
        tmp_path, caplog, progress_every_events=320, progress_every_seconds=0.0
    )
    assert progress.events_learned == 1920
    # 60 steps of 32 events: a line every 10 steps.
    assert [line["step"] for line in lines] == [10, 20, 30, 40, 50, 60]
    assert [line["events_learned"] for line in lines] == [320, 640, 960, 1280, 1600, 1920]
    last = lines[-1]
    assert last["accuracy"] == progress.accuracy
    assert last["lr"] == progress.lr
    assert 0 < last["loss"] < 5
    assert last["parameters"] > 0
    assert last["flops"] > 0  # pruning on: FLOPs show what structured pruning removed
    # The drift split adds up to the drifts counted.
    assert progress.concept_drifts + progress.input_drifts == progress.drifts


def test_no_progress_lines_by_default_rate_or_when_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The default: one per 10,000 events.
    assert progress_lines(tmp_path / "a", caplog)[1] == []
    caplog.clear()
    assert progress_lines(tmp_path / "b", caplog, progress_every_events=0)[1] == []
