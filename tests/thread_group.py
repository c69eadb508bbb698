"""An in-process :class:`driftd.ports.TrainerGroup`: one thread per rank, collectives at a barrier.

For tests of the pure distributed pieces without processes: every collective puts this rank's
value in a slot, waits for all ranks, and combines the slots in rank order (so every rank gets
bit-identical results, as with a real all-reduce).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor


class ThreadGroup:
    """The shared state of ``world_size`` ranks; :meth:`member` is one rank's port."""

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size
        self._barrier = threading.Barrier(world_size, timeout=30)
        self._slots: list[Any] = [None] * world_size

    def member(self, rank: int) -> ThreadRank:
        """The port of rank ``rank``."""
        return ThreadRank(self, rank)

    def exchange(self, rank: int, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order."""
        self._slots[rank] = value
        self._barrier.wait()
        values = list(self._slots)
        self._barrier.wait()
        return values

    def run(self, work: Callable[[ThreadRank], Any]) -> list[Any]:
        """Run ``work`` on every rank in its own thread; its results in rank order."""
        results: list[Any] = [None] * self.world_size
        errors: list[BaseException] = []

        def rank_main(rank: int) -> None:
            try:
                results[rank] = work(self.member(rank))
            except BaseException as error:  # re-raised in the caller
                errors.append(error)
                self._barrier.abort()

        threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(self.world_size)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return results


class ThreadRank:
    """One rank's :class:`driftd.ports.TrainerGroup`."""

    def __init__(self, group: ThreadGroup, rank: int) -> None:
        self._group = group
        self.rank = rank
        self.world_size = group.world_size

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum over the ranks."""
        return [
            sum(column)
            for column in zip(*self._group.exchange(self.rank, list(values)), strict=True)
        ]

    def sum_(self, tensor: Tensor) -> None:
        """In-place sum over the ranks, added in rank order."""
        tensors = self._group.exchange(self.rank, tensor.detach().clone())
        total = tensors[0].clone()
        for other in tensors[1:]:
            total += other
        tensor.copy_(total)

    def average_parameters(self, params: Sequence[Tensor]) -> None:
        """Each parameter replaced by its mean over the ranks."""
        flat = torch.cat([p.detach().reshape(-1) for p in params])
        self.sum_(flat)
        flat /= self.world_size
        offset = 0
        for p in params:
            p.data.copy_(flat[offset : offset + p.numel()].view_as(p))
            offset += p.numel()

    def broadcast_(self, tensors: Sequence[Tensor]) -> None:
        """Rank 0's tensors copied into this rank's."""
        leader = self._group.exchange(self.rank, [t.detach().clone() for t in tensors])[0]
        for tensor, value in zip(tensors, leader, strict=True):
            tensor.data.copy_(value)

    def gather(self, value: Any) -> list[Any] | None:
        """Every rank's value on rank 0."""
        values = self._group.exchange(self.rank, value)
        return values if self.rank == 0 else None

    def all_gather(self, value: Any) -> list[Any]:
        """Every rank's value, on every rank."""
        return self._group.exchange(self.rank, value)

    def broadcast(self, value: Any) -> Any:
        """Rank 0's value."""
        return self._group.exchange(self.rank, value)[0]

    def close(self) -> None:
        """Nothing to release."""
