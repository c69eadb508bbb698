"""``TimedGroup``: a trainer group that adds up the seconds its collectives take.

For ``driftd bench --section distributed``: how much of a rank's loop goes to talking to the
other ranks, in every sync mode, measured the same way (the loop's own sync telemetry times an
average in one mode and a whole learning round in the other).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from torch import Tensor

from driftd.ports import TrainerGroup

_T = TypeVar("_T")


class TimedGroup:
    """A :class:`~driftd.ports.TrainerGroup` that adds up the seconds spent in its collectives.

    A collective's time includes waiting for the slower rank: on a shared machine that wait,
    not the bytes moved, is often most of it.
    """

    def __init__(self, group: TrainerGroup) -> None:
        self._group = group
        self.seconds = 0.0

    @property
    def rank(self) -> int:
        """This process's rank."""
        return self._group.rank

    @property
    def world_size(self) -> int:
        """How many ranks the group has."""
        return self._group.world_size

    def _timed(self, call: Callable[..., _T], *args: Any) -> _T:
        started = time.perf_counter()
        try:
            return call(*args)
        finally:
            self.seconds += time.perf_counter() - started

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum over the ranks."""
        return self._timed(self._group.sum, values)

    def sum_(self, tensor: Tensor) -> None:
        """All-reduce ``tensor`` in place."""
        self._timed(self._group.sum_, tensor)

    def average_parameters(self, params: Sequence[Tensor]) -> None:
        """Average the parameters over the ranks, in place."""
        self._timed(self._group.average_parameters, params)

    def broadcast_(self, tensors: Sequence[Tensor]) -> None:
        """Overwrite ``tensors`` with rank 0's."""
        self._timed(self._group.broadcast_, tensors)

    def gather(self, value: Any) -> list[Any] | None:
        """Every rank's ``value`` on rank 0."""
        return self._timed(self._group.gather, value)

    def all_gather(self, value: Any) -> list[Any]:
        """Every rank's ``value`` on every rank."""
        return self._timed(self._group.all_gather, value)

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        return self._timed(self._group.broadcast, value)

    def close(self) -> None:
        """Leave the group."""
        self._group.close()
