"""Small schedule objects: "every N steps or T seconds, whichever comes first"."""

from __future__ import annotations

from driftd.ports import Clock


class EveryNStepsOrTSeconds:
    """Fires once ``every_steps`` steps or ``every_seconds`` seconds passed since it last fired.

    Either bound may be None (never fires on that bound). The clock is injected, so tests
    advance time instead of sleeping.
    """

    def __init__(
        self, *, every_steps: int | None, every_seconds: float | None, clock: Clock
    ) -> None:
        if every_steps is not None and every_steps < 1:
            raise ValueError("every_steps must be at least 1")
        if every_seconds is not None and every_seconds <= 0:
            raise ValueError("every_seconds must be positive")
        self.every_steps = every_steps
        self.every_seconds = every_seconds
        self._clock = clock
        self._last_step = 0
        self._last_time = clock.monotonic()

    def due(self, step: int) -> bool:
        """Whether the schedule fires at ``step`` (does not reset it: call :meth:`fired`)."""
        if self.every_steps is not None and step - self._last_step >= self.every_steps:
            return True
        elapsed = self._clock.monotonic() - self._last_time
        return self.every_seconds is not None and elapsed >= self.every_seconds

    def fired(self, step: int) -> None:
        """Start counting again from ``step`` and now."""
        self._last_step = step
        self._last_time = self._clock.monotonic()
