"""``driftd replay``: the daemon's loop over a recorded stream, scored prequentially.

Each non-blank line of a JSON-lines file is one record of the daemon's event format
(DESIGN.md: ``{"x": ..., "y": ..., "domain": ..., "id": ..., "ts": ...}``), numbered by its
line (offset 0 is the first line); a CSV or Parquet table's rows become such events (see
:func:`read_records`). The daemon's own loop (:func:`driftd.app.build_trainer`
with the in-memory adapters) reads them as it would read a topic from its start: polls of
``learner.batch_size``, decode, dead-letter count, predict then learn, drift monitor,
adaptation, pruning, snapshots kept in memory. What it predicted before learning each labelled
event is scored: accuracy (classification) or mean absolute error (regression).

With ``--report`` the run's log goes to a JSON-lines file too and ``driftd report``'s page is
drawn from it, with a ``progress`` point every 1% of the stream.
"""

from __future__ import annotations

import importlib
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

from driftd.app import Trainer
from driftd.decode import DecodedBatch
from driftd.learning.learner import StepReport
from driftd.library.events import DriftDetected, EventTelemetry, LearnerEvent, ModelAdapted
from driftd.library.wiring import offline_trainer
from driftd.logs import add_json_log_file, configure_logging
from driftd.loop_progress import LoopProgress, StopWhen
from driftd.records import Record
from driftd.settings.root import EventSettings, Settings
from driftd.tools.progress_line import ProgressLine

TOPIC = "replay"  #: the topic name the file's records carry (in logs and dead letters)


@dataclass
class ReplayResult:
    """What a replay saw and scored.

    Attributes:
        task: ``classification`` or ``regression``.
        records: Lines read (records offered to the loop).
        learned: Labelled events learnt from.
        invalid: Records the daemon would dead-letter.
        scored: Labelled events predicted before being learnt.
        correct: Of those, predicted right (classification).
        absolute_error: Sum over them of the mean absolute error over outputs (regression).
        events: Drifts, adaptations and pruning outcomes, in order.
        seconds: Wall time of the loop.
    """

    task: str = "classification"
    records: int = 0
    learned: int = 0
    invalid: int = 0
    scored: int = 0
    correct: int = 0
    absolute_error: float = 0.0
    events: list[LearnerEvent] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def accuracy(self) -> float | None:
        """Prequential accuracy over every labelled event (None for regression or none)."""
        classifies = self.task == "classification"
        return self.correct / self.scored if self.scored and classifies else None

    @property
    def mae(self) -> float | None:
        """Prequential mean absolute error (None for classification or none)."""
        regresses = self.task == "regression"
        return self.absolute_error / self.scored if self.scored and regresses else None

    def score(self, report: StepReport, batch: DecodedBatch) -> None:
        """Add one step's prequential predictions (the loop's ``on_report``)."""
        labelled = batch.labelled.numpy()
        predictions = report.predictions.cpu().numpy()[labelled]
        targets = batch.y.numpy()[labelled]
        self.scored += int(labelled.sum())
        if predictions.ndim == 1:
            self.correct += int((predictions == targets).sum())
        else:
            self.absolute_error += float(np.abs(predictions - targets).mean(axis=1).sum())


def read_records(path: Path, event: EventSettings | None = None) -> list[Record]:
    """The records of a recorded stream: JSON lines, or a CSV or Parquet table.

    JSON lines: each non-blank line is a record, its offset the line's index (from 0). A table
    (``.csv``, ``.parquet``; needs pandas, and pyarrow for Parquet: ``driftd[tables]``): each
    row becomes an event, its offset the row's index; ``x`` is ``event.feature_names`` (every
    column but the ``y``, ``domain``, ``id`` and ``ts`` fields when unset), an empty cell of
    ``y`` an unlabelled event.

    Raises:
        OSError: The file cannot be read.
        ValueError: A table lacks a feature column, or pandas is not installed.
    """
    if path.suffix.lower() in (".csv", ".parquet"):
        return _table_records(path, event or EventSettings())
    with path.open("rb") as lines:
        return [
            Record(TOPIC, 0, index, line.rstrip(b"\r\n"))
            for index, line in enumerate(lines)
            if line.strip()
        ]


def _table_records(path: Path, event: EventSettings) -> list[Record]:
    try:
        pandas = importlib.import_module("pandas")
    except ImportError:
        raise ValueError(f"{path.name}: tables need pandas: pip install 'driftd[tables]'") from None
    frame = pandas.read_csv(path) if path.suffix.lower() == ".csv" else pandas.read_parquet(path)
    fields = (event.y_field, event.domain_field, event.id_field, event.ts_field)
    features = list(event.feature_names) or [c for c in frame.columns if c not in fields]
    missing = [name for name in features if name not in frame.columns]
    if missing:
        raise ValueError(f"{path.name}: no feature column {missing[0]!r}")
    columns = {
        name: [None if pandas.isna(value) else value for value in frame[name].tolist()]
        for name in fields
        if name in frame.columns
    }
    rows = frame[features].to_numpy(dtype=float).tolist()
    dumps, x_field = orjson.dumps, event.x_field
    return [
        Record(TOPIC, 0, index, dumps({x_field: row} | {k: v[index] for k, v in columns.items()}))
        for index, row in enumerate(rows)
    ]


def replay(
    settings: Settings,
    records: list[Record],
    *,
    on_step: Callable[[LoopProgress], None] | None = None,
) -> tuple[ReplayResult, LoopProgress]:
    """Run the daemon's loop over ``records`` from the first to the last; score it."""
    trainer, result = _prepare(settings, records, on_step)
    return result, _run(trainer, result)


def _prepare(
    settings: Settings, records: list[Record], on_step: Callable[[LoopProgress], None] | None
) -> tuple[Trainer, ReplayResult]:
    result = ReplayResult(task=settings.model.task, records=len(records))
    telemetry = EventTelemetry(events=result.events)
    # Events seen through a record: its place in the replay (a topic's partitions follow
    # each other, so its offset would count one partition only).
    seen = {(r.partition, r.offset): place for place, r in enumerate(records, start=1)}

    def on_report(report: StepReport, batch: DecodedBatch) -> None:
        result.score(report, batch)
        if batch.records:
            telemetry.events_seen = max(seen[r.partition, r.offset] for r in batch.records)

    trainer = offline_trainer(
        settings, records, telemetry=telemetry, on_report=on_report, on_step=on_step
    )
    telemetry.step_of = lambda: trainer.loop.state.steps
    return trainer, result


def _run(trainer: Trainer, result: ReplayResult) -> LoopProgress:
    started = time.perf_counter()
    progress = trainer.run(StopWhen(max_events=result.records))
    result.seconds = time.perf_counter() - started
    result.learned, result.invalid = progress.events_learned, progress.events_invalid
    return progress


def run_replay(settings: Settings, source: Path, *, report: Path | None = None) -> int:
    """The ``driftd replay`` command: replay ``source``, print the scores, maybe the report."""
    configure_logging("WARNING", json_lines=False)
    try:
        records = read_records(source, settings.event)
    except (OSError, ValueError) as error:
        print(f"driftd replay: {error}", file=sys.stderr)
        return 1
    return replay_records(settings, records, report=report)


def replay_records(settings: Settings, records: list[Record], *, report: Path | None = None) -> int:
    """Replay ``records`` with a progress line; print the scores, maybe write the report."""
    lines: list[ProgressLine] = []  # started with the loop: building it is not replaying
    with tempfile.TemporaryDirectory(prefix="driftd-replay-") as scratch:
        log_path = Path(scratch) / "replay.jsonl"
        handler = add_json_log_file(log_path) if report is not None else None
        if report is not None:  # a progress point every 1% of the stream, for the chart
            every = {"progress_every_events": max(1, len(records) // 100)}
            log_settings = settings.log.model_copy(update={"progress_every_seconds": 0.0, **every})
            settings = settings.model_copy(update={"log": log_settings})
        try:
            trainer, result = _prepare(settings, records, lambda p: lines[0].update(p))
            lines.append(ProgressLine(sys.stderr))
            progress = _run(trainer, result)
        finally:
            if handler is not None:
                logging.getLogger("driftd").removeHandler(handler)
                handler.close()
        lines[0].finish(progress)
        print(summary(result))
        if report is not None:
            from driftd.tools.report import write_report

            write_report(log=log_path, snapshots=None, out=report)
            print(f"report: {report}")
    return 0


def summary(result: ReplayResult) -> str:
    """The lines ``driftd replay`` prints: counts, score, then each drift and adaptation."""
    lines = [
        f"{result.records:,} records: {result.learned:,} learnt, {result.invalid:,} invalid, "
        f"in {result.seconds:.1f} s"
    ]
    if result.accuracy is not None:
        lines.append(
            f"prequential accuracy {result.accuracy:.4f} over {result.scored:,} labelled events"
        )
    elif result.mae is not None:
        lines.append(f"prequential MAE {result.mae:.4g} over {result.scored:,} labelled events")
    drifts = [e for e in result.events if isinstance(e, DriftDetected) and e.kind == "drift"]
    adaptations = [e for e in result.events if isinstance(e, ModelAdapted)]
    lines.append(f"drifts: {len(drifts)}")
    lines += [
        f"  {e.detector} on {e.signal} by event {e.events_seen:,} (step {e.step})" for e in drifts
    ]
    lines.append(f"adaptations: {len(adaptations)}")
    lines += [f"  {e.kind} by event {e.events_seen:,} (step {e.step})" for e in adaptations]
    return "\n".join(lines)
