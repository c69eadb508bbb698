"""The demo's live progress: one rewritten line on a terminal, plain periodic lines otherwise.

On a terminal the line is rewritten in place (a carriage return) a few times a second, fitted
to the terminal's width, read at every update so a resize is followed: fields are dropped from
the least telling end until it fits. Into a file or a pipe (CI logs, ``| tee``) it writes one
whole line every few seconds instead, never a carriage return.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from typing import TextIO

from driftd.loop_progress import LoopProgress

#: Seconds between rewrites on a terminal, and between lines elsewhere.
TERMINAL_EVERY_S = 0.25
PLAIN_EVERY_S = 5.0


def progress_fields(progress: LoopProgress, rate: float) -> list[str]:
    """The line's fields, most telling first (a narrow terminal keeps a prefix of them)."""
    accuracy = f"{progress.accuracy:.3f}" if progress.accuracy is not None else "-"
    quality = f"acc {accuracy}"
    if progress.accuracy is None and progress.mae is not None:  # regression: no accuracy
        r2 = f"{progress.r2:.3f}" if progress.r2 is not None else "-"
        quality = f"r2 {r2} mae {progress.mae:.3g}"
    fields = [
        f"events {progress.events_consumed:,}",
        quality,
        f"{rate:,.0f} ev/s",
        f"concept drifts {progress.concept_drifts}",
        f"input alarms {progress.input_drifts}",
        f"head {progress.domain or '-'}",
        f"params {progress.parameters:,}" if progress.parameters is not None else "params -",
        f"invalid {progress.events_invalid}",
        f"snapshot v{progress.snapshot_version or 0}",
    ]
    if progress.step_size is not None:
        fields.insert(3, f"step {progress.step_size} ev")
    if progress.lr is not None:
        fields.insert(3, f"lr {progress.lr:.1e}")
    return fields


def fit(fields: list[str], width: int, *, separator: str = " | ") -> str:
    """The longest prefix of ``fields`` that fits in ``width`` columns (the first one cut)."""
    text = fields[0] if fields else ""
    for field in fields[1:]:
        longer = text + separator + field
        if len(longer) > width:
            break
        text = longer
    return text[:width]


class ProgressLine:
    """Writes a run's progress to ``stream``: rewritten in place on a terminal, else periodic.

    Args:
        stream: Where to write (``sys.stdout``).
        interactive: Whether ``stream`` is a terminal; None asks ``stream.isatty()``.
        columns: The terminal's width; None reads ``shutil.get_terminal_size`` at each update.
        clock: Monotonic seconds.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        interactive: bool | None = None,
        columns: Callable[[], int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._interactive = stream.isatty() if interactive is None else interactive
        self._columns = columns or (lambda: shutil.get_terminal_size().columns)
        self._clock = clock
        self._started = clock()
        self._last = -float("inf")
        self._shown = 0  # characters of the line now on screen (terminal only)

    @property
    def interactive(self) -> bool:
        """Whether lines are rewritten in place."""
        return self._interactive

    def update(self, progress: LoopProgress) -> None:
        """Show ``progress`` if the last update is old enough (cheap otherwise)."""
        now = self._clock()
        every = TERMINAL_EVERY_S if self._interactive else PLAIN_EVERY_S
        if now - self._last >= every:
            self._last = now
            self._write(progress, now, final=False)

    def finish(self, progress: LoopProgress) -> None:
        """Show the final progress and end the line."""
        self._write(progress, self._clock(), final=True)

    def _write(self, progress: LoopProgress, now: float, *, final: bool) -> None:
        rate = progress.events_consumed / max(now - self._started, 1e-9)
        fields = progress_fields(progress, rate)
        if not self._interactive:
            self._stream.write("  " + " | ".join(fields) + "\n")
            self._stream.flush()
            return
        # One column short of the width: a full last column makes some terminals wrap.
        columns = self._columns()
        text = "  " + fit(fields, max(10, columns - 3))
        blank = max(0, min(self._shown, columns - 1) - len(text))  # what a shorter line left
        self._stream.write("\r" + text + " " * blank)
        self._shown = len(text)
        if final:
            self._stream.write("\n")
            self._shown = 0
        self._stream.flush()
