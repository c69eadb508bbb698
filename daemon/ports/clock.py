"""The clock port: time is injected so tests never sleep."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Time, injected so tests never sleep."""

    def monotonic(self) -> float:
        """Seconds on a monotonic clock, for durations."""
        ...

    def time(self) -> float:
        """Wall-clock epoch seconds, for timestamps."""
        ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        """Seconds on the process's monotonic clock."""
        return time.monotonic()

    def time(self) -> float:
        """Epoch seconds."""
        return time.time()
