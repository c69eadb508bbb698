"""The quality bench's three regimes: record sources that differ only in when events arrive.

- ``learner``: :class:`LearnerPacedSource`, the next events come when the learner asks (as in
  river's ``progressive_val_score``); nothing ever waits, so ``lag()`` reports 0.
- ``paced``: :class:`PacedSource`, events arrive by the wall clock at ``rate`` events/s from the
  first poll on; ``lag()`` counts the events that have arrived but were not served yet.
- ``backlog``: the whole topic is there at once and replayed as fast as possible:
  :class:`~driftd.adapters.memory_source.InMemoryRecordSource`, whose ``lag()`` counts all that
  remain.

The loop chooses its own step size from what it polls and what ``lag()`` says; these sources
never tell it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

from driftd.adapters.memory_source import InMemoryRecordSource
from driftd.ports import RecordSource
from driftd.records import Record, TopicPartition

REGIMES = ("learner", "paced", "backlog")


class LearnerPacedSource:
    """Serves the records as fast as they are asked for, and reports no lag: nothing waits.

    Args:
        records: The records, in arrival order (one partition).
    """

    def __init__(self, records: Sequence[Record]) -> None:
        self._records = list(records)
        self._position = 0
        self._partitions = {record.topic_partition for record in self._records}
        self.committed: dict[TopicPartition, int] = {}
        self.closed = False

    def poll(self, max_records: int, timeout_s: float) -> Sequence[Record]:
        """The next ``max_records`` records; an empty list once all were served."""
        batch = self._records[self._position : self._position + max_records]
        self._position += len(batch)
        return batch

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Remember the committed next offsets."""
        self.committed.update(offsets)

    def lag(self) -> Mapping[TopicPartition, int]:
        """Always 0: the next event is produced when the learner asks for it."""
        return dict.fromkeys(self._partitions, 0)

    @property
    def ready(self) -> bool:
        """Always ready while open."""
        return not self.closed

    def close(self) -> None:
        """Mark the source closed."""
        self.closed = True


class PacedSource(LearnerPacedSource):
    """Releases record ``i`` at ``i / rate`` seconds after the first poll, by a real clock.

    Args:
        records: The records, in arrival order (one partition).
        rate: Arrivals per second.
        monotonic: The clock (seconds); injected for tests.
        sleep: How to wait (seconds); injected for tests.
    """

    def __init__(
        self,
        records: Sequence[Record],
        *,
        rate: float,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(records)
        self.rate = rate
        self._monotonic, self._sleep = monotonic, sleep
        self._started: float | None = None

    def arrived(self) -> int:
        """Records that have arrived so far (0 before the first poll)."""
        if self._started is None:
            return 0
        elapsed = self._monotonic() - self._started
        return min(len(self._records), int(elapsed * self.rate + 1e-6) + 1)  # 1e-6: float slack

    def poll(self, max_records: int, timeout_s: float) -> Sequence[Record]:
        """Up to ``max_records`` arrived records; waits at most ``timeout_s`` for the first."""
        if self._started is None:
            self._started = self._monotonic()
        if self.arrived() <= self._position < len(self._records):
            wait = (self._position / self.rate) - (self._monotonic() - self._started)
            self._sleep(max(0.0, min(wait, timeout_s)))
        batch = self._records[self._position : min(self.arrived(), self._position + max_records)]
        self._position += len(batch)
        return batch

    def lag(self) -> Mapping[TopicPartition, int]:
        """Records that have arrived and wait to be served."""
        waiting = max(0, self.arrived() - self._position)
        return dict.fromkeys(self._partitions, waiting)


def make_source(regime: str, records: Sequence[Record], *, rate: float = 2_000.0) -> RecordSource:
    """The source of ``regime`` (one of :data:`REGIMES`) over ``records``."""
    if regime == "learner":
        return LearnerPacedSource(records)
    if regime == "paced":
        return PacedSource(records, rate=rate)
    if regime == "backlog":
        return InMemoryRecordSource(records)
    raise ValueError(f"unknown regime {regime!r}, expected one of {REGIMES}")
