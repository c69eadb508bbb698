"""In-memory implementations of the ports: replay, dry runs, "count only" mode and tests."""

from __future__ import annotations

from driftd.records import Rejection


class InMemoryDeadLetterSink:
    """Keeps every rejection in a list: for tests, replays and dry runs (memory grows).

    Attributes:
        rejections: Every rejection sent, oldest first.
    """

    def __init__(self) -> None:
        self.rejections: list[Rejection] = []
        self._closed = False

    def send(self, rejection: Rejection) -> None:
        """Keep ``rejection``.

        Raises:
            RuntimeError: If the sink is closed.
        """
        if self._closed:
            raise RuntimeError("InMemoryDeadLetterSink is closed")
        self.rejections.append(rejection)

    def flush(self, timeout_s: float) -> None:
        """Nothing to wait for: every rejection is kept as soon as it is sent."""

    def close(self) -> None:
        """Refuse further sends; the kept rejections stay readable."""
        self._closed = True


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

    def close(self) -> None:
        """Nothing to release."""
