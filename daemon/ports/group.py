"""The trainer-group port: the collectives the ranks of one model use to stay one model.

:mod:`driftd.distributed` drives it; :class:`~driftd.adapters.torch_distributed_group.
TorchDistributedGroup` implements it with ``torch.distributed`` (gloo, NCCL). Every call is a
collective: all ranks make the same calls in the same order, or they wait for each other until
the group's timeout.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # annotations only: importing the ports stays light
    from torch import Tensor


class TrainerGroup(Protocol):
    """The ranks training one model together; this process is one of them."""

    @property
    def rank(self) -> int:
        """This process's rank, 0 to ``world_size - 1``; rank 0 writes the snapshots."""
        ...

    @property
    def world_size(self) -> int:
        """How many ranks the group has."""
        ...

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum of every rank's ``values`` (the same length on every rank)."""
        ...

    def sum_(self, tensor: Tensor) -> None:
        """Replace ``tensor`` in place by the element-wise sum of every rank's."""
        ...

    def average_parameters(self, params: Sequence[Tensor]) -> None:
        """Replace every parameter in place by its mean over the ranks."""
        ...

    def broadcast_(self, tensors: Sequence[Tensor]) -> None:
        """Overwrite ``tensors`` in place with rank 0's."""
        ...

    def gather(self, value: Any) -> list[Any] | None:
        """Every rank's ``value`` on rank 0 (in rank order); None on the other ranks."""
        ...

    def all_gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order, on every rank."""
        ...

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value``, on every rank."""
        ...

    def close(self) -> None:
        """Leave the group; safe to call twice."""
        ...
