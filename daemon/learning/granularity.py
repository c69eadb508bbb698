"""How many events each gradient step learns, chosen by the time the stream leaves.

Polling and learning have different grains: the loop polls what is there (up to the poll
size), and :class:`~driftd.learning.learner.OnlineLearner` learns it in micro-batches. Finer
steps learn more per event (more updates, each event predicted by a fresher model); coarser
steps cost less per event. :class:`StepSizeController` reads the backlog after each poll:

- nothing waiting beyond what was just polled (the learner keeps up, or the events arrive when
  the learner asks for them): spend the spare time on finer steps, halving down to ``min_size``;
- a backlog of several polls: coarsen, doubling up to ``max_size``, so throughput holds and
  the consumer catches up;
- in between: keep the size (no oscillation at the edge).

A backlog that cannot be measured (None) leaves the size as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class StepSizeController:
    """Chooses the micro-batch size from the consumer's backlog after each poll.

    Args:
        min_size: Finest step (events per gradient step).
        max_size: Coarsest step.
        start: First size (clamped into the bounds).
        behind_polls: Backlog, in polls' worth of events, beyond which steps coarsen.
    """

    def __init__(self, *, min_size: int, max_size: int, start: int, behind_polls: int = 4) -> None:
        if not 1 <= min_size <= max_size:
            raise ValueError(f"need 1 <= min_size <= max_size, got {min_size}, {max_size}")
        self.min_size = min_size
        self.max_size = max_size
        self.behind_polls = behind_polls
        self.size = min(max(start, min_size), max_size)

    def observe(self, backlog: int | None, polled: int) -> int:
        """Note the backlog left after a poll of ``polled`` events; return the next size."""
        if backlog is None or polled == 0:
            return self.size
        if backlog <= polled:
            self.size = max(self.min_size, self.size // 2)
        elif backlog >= self.behind_polls * polled:
            self.size = min(self.max_size, self.size * 2)
        return self.size

    def state_dict(self) -> dict[str, Any]:
        """The current size, JSON-ready."""
        return {"size": self.size}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output (clamped into this controller's bounds)."""
        self.size = min(max(int(state["size"]), self.min_size), self.max_size)
