"""The demo's progress: fitted, rewritten lines on a terminal; plain periodic lines into files."""

from __future__ import annotations

import io

import pytest

from driftd.loop_progress import LoopProgress, ProgressLogSchedule
from driftd.tools.progress_line import PLAIN_EVERY_S, ProgressLine, fit, progress_fields


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def busy_progress() -> LoopProgress:
    return LoopProgress(
        events_consumed=1_234_567, events_learned=1_200_000, events_invalid=31, steps=19_000,
        snapshot_version=42, accuracy=0.91234, lr=0.005, drifts=9, concept_drifts=4,
        input_drifts=5, domain="domain-3", parameters=123_456,
    )  # fmt: skip


class TtyStringIO(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_lines_are_rewritten_and_fit_the_width() -> None:
    out, clock, width = TtyStringIO(), Clock(), [80]
    line = ProgressLine(out, columns=lambda: width[0], clock=clock)
    assert line.interactive
    progress = busy_progress()
    clock.now += 10.0
    line.update(progress)
    clock.now += 0.1
    line.update(progress)  # within 0.25 s: not rewritten
    width[0] = 40  # the terminal got narrower
    clock.now += 0.3
    line.update(progress)
    line.finish(progress)
    text = out.getvalue()
    assert text.endswith("\n")
    assert text.count("\n") == 1
    rewrites = text.rstrip("\n").split("\r")[1:]
    assert len(rewrites) == 3
    assert rewrites[0].rstrip() == (
        "  events 1,234,567 | acc 0.912 | 123,457 ev/s | lr 5.0e-03 | concept drifts 4"
    )
    assert len(rewrites[0]) <= 79
    # Narrower: fewer fields, and the rest of the longer line blanked, within the width.
    assert rewrites[1].rstrip() == "  events 1,234,567 | acc 0.912"
    assert len(rewrites[1]) <= 39
    assert all(len(rewrite) < 80 for rewrite in rewrites)


def test_files_get_whole_periodic_lines_without_carriage_returns() -> None:
    out, clock = io.StringIO(), Clock()
    line = ProgressLine(out, clock=clock)
    assert not line.interactive  # a StringIO is not a terminal
    progress = busy_progress()
    for _ in range(40):  # 10 s of updates every 0.25 s: two lines, at 0 s and 5 s
        line.update(progress)
        clock.now += 0.25
    line.finish(progress)
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) == 3 == 10.0 / PLAIN_EVERY_S + 1
    assert lines[0].startswith("  events 1,234,567 | acc 0.912 | ")
    assert "concept drifts 4 | input alarms 5 | head domain-3 | params 123,456" in lines[0]
    assert lines[-1].endswith("invalid 31 | snapshot v42")


def test_fit_keeps_a_prefix_of_fields_and_cuts_only_the_first() -> None:
    assert fit(["aaaa", "bb", "cc"], 10) == "aaaa | bb"
    assert fit(["aaaa", "bb", "cc"], 3) == "aaa"
    assert fit(["aaaa", "bb"], 100) == "aaaa | bb"


def test_fields_before_the_first_step() -> None:
    fields = progress_fields(LoopProgress(), rate=0.0)
    assert fields[:3] == ["events 0", "acc -", "0 ev/s"]
    assert "params -" in fields


@pytest.mark.parametrize(
    ("every_events", "every_seconds", "calls", "due"),
    [
        # (learned, now) pairs; due on the N-event boundary once the interval allows.
        (100, 0.0, [(50, 0.0), (100, 0.1), (150, 0.2), (200, 0.3)], [False, True, False, True]),
        (100, 1.0, [(100, 0.0), (200, 0.5), (300, 1.2), (350, 5.0)], [True, False, True, False]),
        (0, 0.0, [(1_000, 0.0)], [False]),  # 0: never
    ],
)
def test_progress_log_schedule(
    every_events: int, every_seconds: float, calls: list[tuple[int, float]], due: list[bool]
) -> None:
    schedule = ProgressLogSchedule(every_events=every_events, every_seconds=every_seconds)
    assert [schedule.due(learned, now) for learned, now in calls] == due
