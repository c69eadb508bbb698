"""How many events each gradient step learns, chosen by the time the stream leaves.

Polling and learning have different grains: the loop polls what is there (up to the poll
size), and :class:`~driftd.learning.learner.OnlineLearner` learns it in micro-batches. Finer
steps learn more per event (more updates, each event predicted by a fresher model); coarser
steps cost less per event. :class:`StepSizeController` reads the backlog after each poll:

- nothing waiting beyond what was just polled: spend the spare time on finer steps, halving down
  to ``min_size`` (straight to it when the source gives all it is asked for and nothing waits,
  as in a replay the learner paces: no arrival rate to keep up with); while the stream sets the
  pace (a poll came back short, or events wait), not
  to a size too slow for its arrival rate (as measured at that size, or at the current one:
  finer is never faster);
- a backlog of several polls: coarsen, at least doubling, straight to the finest size measured
  fast enough to drain it within ``catch_up_s`` (none measured so: the coarsest measured size
  scaled by what is missing), up to ``max_size``;
- in between: coarsen (double) while the backlog grows, else keep the size.

Costs are measured, not assumed: :meth:`StepSizeController.learned` gets the seconds each poll
took to learn, and the controller keeps the events per second of each size it has used (polls
of at least one full step only). The arrival rate is the events that came since the previous
poll, per second. A backlog that cannot be measured (None) leaves the size as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SMOOTHING = 0.3  # weight of the newest measurement in the running estimates


class StepSizeController:
    """Chooses the micro-batch size from the consumer's backlog and the measured step costs.

    Args:
        min_size: Finest step (events per gradient step).
        max_size: Coarsest step.
        start: First size (clamped into the bounds).
        behind_polls: Backlog, in polls' worth of events, beyond which steps coarsen.
        headroom: Capacity kept above the arrival rate when choosing a finer size.
        catch_up_s: Time in which a backlog should drain once steps coarsen.
    """

    def __init__(
        self,
        *,
        min_size: int,
        max_size: int,
        start: int,
        behind_polls: int = 4,
        headroom: float = 1.5,
        catch_up_s: float = 2.0,
    ) -> None:
        if not 1 <= min_size <= max_size:
            raise ValueError(f"need 1 <= min_size <= max_size, got {min_size}, {max_size}")
        self.min_size = min_size
        self.max_size = max_size
        self.behind_polls = behind_polls
        self.headroom = headroom
        self.catch_up_s = catch_up_s
        self.size = min(max(start, min_size), max_size)
        self.capacity: dict[int, float] = {}  # size -> running mean events/s while learning
        self.arrival_rate: float | None = None  # events/s that came, as of the last poll
        self._previous: tuple[float, int] | None = None  # (time, backlog) at the previous poll

    def observe(
        self,
        backlog: int | None,
        polled: int,
        *,
        asked: int | None = None,
        now: float | None = None,
    ) -> int:
        """Note the backlog left after a poll of ``polled`` events; return the next size.

        ``asked``: the events the poll could have returned (a full poll with nothing left means
        the source gives all it is asked for, as in a replay: no pace to keep); ``now``: when.
        """
        if backlog is None or polled == 0:
            return self.size
        growing = self._note_arrivals(backlog, polled, now)
        if backlog <= polled:
            unpaced = backlog == 0 and asked is not None and polled >= asked
            finer = max(self.min_size, self.size // 2)
            if unpaced:
                self.size = self.min_size
            elif not self._too_slow(finer, self.arrival_rate):
                self.size = finer
        elif backlog >= self.behind_polls * polled:
            needed = (self.arrival_rate or 0.0) + backlog / self.catch_up_s
            self.size = min(self.max_size, max(self.size * 2, self._fast_enough(needed)))
        elif growing:
            self.size = min(self.max_size, self.size * 2)
        return self.size

    def learned(self, events: int, seconds: float) -> None:
        """Note that learning ``events`` at the current size took ``seconds``."""
        if events < self.size or not seconds > 0.0:
            return  # a partial step says little about the size's cost
        rate = events / seconds
        known = self.capacity.get(self.size)
        self.capacity[self.size] = rate if known is None else known + SMOOTHING * (rate - known)

    def _too_slow(self, size: int, rate: float | None) -> bool:
        """Whether ``size`` would not keep up with ``rate`` (with headroom), as measured.

        Finer steps learn fewer events per second, so a size is also too slow when the current,
        coarser one already is.
        """
        if rate is None:
            return False
        wanted = rate * self.headroom
        return any(self.capacity.get(measured, wanted) < wanted for measured in (size, self.size))

    def _fast_enough(self, rate: float) -> int:
        """The finest size that learns ``rate`` with headroom (0: nothing measured yet).

        Where no measured size is fast enough, the coarsest measured one is scaled up as if a
        step cost the same at any size (so at least as fine as needed; the next poll measures).
        """
        wanted = rate * self.headroom
        fitting = [size for size, known in self.capacity.items() if known >= wanted]
        if fitting or not self.capacity:
            return min(fitting, default=0)
        coarsest = max(self.capacity)
        size = coarsest
        while size * self.capacity[coarsest] / coarsest < wanted and size < self.max_size:
            size *= 2
        return size

    def _note_arrivals(self, backlog: int, polled: int, now: float | None) -> bool:
        """Update the arrival rate; whether the backlog grew since the previous poll."""
        if now is None:
            return False
        previous, self._previous = self._previous, (now, backlog)
        if previous is None or now <= previous[0]:
            return False
        then, before = previous
        rate = max(0, polled + backlog - before) / (now - then)
        known = self.arrival_rate
        self.arrival_rate = rate if known is None else known + SMOOTHING * (rate - known)
        return backlog > before

    def state_dict(self) -> dict[str, Any]:
        """The current size, JSON-ready (costs and rates are measured anew after a restart)."""
        return {"size": self.size}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output (clamped into this controller's bounds)."""
        self.size = min(max(int(state["size"]), self.min_size), self.max_size)
