"""In-memory implementations of the ports: replay, dry runs, "count only" mode and tests."""

from __future__ import annotations

from driftd.records import Rejection


class DeadLetterOutageError(RuntimeError):
    """The in-memory sink is switched off (:attr:`InMemoryDeadLetterSink.available`)."""


class InMemoryDeadLetterSink:
    """Keeps every rejection in a list: for tests, replays and dry runs (memory grows).

    It can play a dead-letter outage: while :attr:`available` is False, sent rejections stay
    pending and :meth:`flush` raises; the first flush after it is True again keeps them all.

    Attributes:
        rejections: Every rejection made durable, oldest first.
        available: Whether flushes succeed.
        failed_flushes: Flushes that raised so far.
    """

    def __init__(self, *, available: bool = True) -> None:
        self.rejections: list[Rejection] = []
        self.available = available
        self.failed_flushes = 0
        self._pending: list[Rejection] = []
        self._closed = False

    @property
    def pending(self) -> int:
        """Rejections sent while unavailable and not flushed since."""
        return len(self._pending)

    def undelivered(self) -> list[Rejection]:
        """The pending rejections, oldest first."""
        return list(self._pending)

    def send(self, rejection: Rejection) -> None:
        """Keep ``rejection`` (pending until a flush while unavailable).

        Raises:
            RuntimeError: If the sink is closed.
        """
        if self._closed:
            raise RuntimeError("InMemoryDeadLetterSink is closed")
        if self.available and not self._pending:
            self.rejections.append(rejection)
        else:
            self._pending.append(rejection)

    def flush(self, timeout_s: float) -> None:
        """Keep what is pending; raise while unavailable.

        Raises:
            DeadLetterOutageError: The sink is unavailable; the rejections stay pending.
        """
        if not self.available:
            self.failed_flushes += 1
            raise DeadLetterOutageError(f"{len(self._pending)} rejections not acknowledged")
        self.rejections += self._pending
        self._pending = []

    def close(self) -> None:
        """Flush (raising while unavailable) and refuse further sends; rejections stay readable."""
        self._closed = True
        self.flush(0.0)


class DiscardingDeadLetterSink:
    """Counts rejections and keeps none: "count only" mode (empty ``kafka.dead_letter_topic``).

    A long-running daemon cannot keep every rejection in memory; the counter (and the
    ``driftd_events_invalid_total`` metric) is all that remains of them.

    Attributes:
        discarded: Rejections sent so far.
    """

    def __init__(self) -> None:
        self.discarded = 0

    def send(self, rejection: Rejection) -> None:
        """Count ``rejection`` and drop it."""
        self.discarded += 1

    def flush(self, timeout_s: float) -> None:
        """Nothing to wait for."""

    @property
    def pending(self) -> int:
        """Always 0: nothing is waiting."""
        return 0

    def undelivered(self) -> list[Rejection]:
        """Always empty: nothing is waiting."""
        return []

    def close(self) -> None:
        """Nothing to release."""
