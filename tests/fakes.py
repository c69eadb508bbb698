"""Test doubles shared by the unit tests."""

from __future__ import annotations


class FakeClock:
    """A clock that only moves when told to, so tests never sleep.

    Satisfies :class:`driftd.ports.Clock`: ``monotonic()`` for durations, ``time()`` for
    epoch timestamps. Both move together by :meth:`advance`.
    """

    def __init__(self, *, monotonic: float = 1_000.0, epoch: float = 1_700_000_000.0) -> None:
        self._monotonic = monotonic
        self._epoch = epoch

    def monotonic(self) -> float:
        """Seconds on the fake monotonic clock."""
        return self._monotonic

    def time(self) -> float:
        """Fake wall-clock epoch seconds."""
        return self._epoch

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by ``seconds`` (never backwards)."""
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self._monotonic += seconds
        self._epoch += seconds
