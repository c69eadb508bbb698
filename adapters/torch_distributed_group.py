"""``TorchDistributedGroup``: the :class:`driftd.ports.TrainerGroup` on ``torch.distributed``.

The process group comes from the launcher's environment (``torchrun`` sets ``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``; the ``env://`` rendezvous reads them). gloo
runs on CPU tensors, NCCL on the rank's CUDA device: the small control vectors are made on
``device`` and what comes back is moved where the caller's tensors live.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed.algorithms.model_averaging.utils import average_parameters
from torch.distributed.distributed_c10d import PrefixStore
from torch.distributed.rendezvous import rendezvous

log = logging.getLogger(__name__)


class TorchDistributedGroup:
    """Joins the launcher's process group; every method is a collective.

    Args:
        backend: ``gloo`` or ``nccl``.
        timeout_s: How long a collective waits for the other ranks before it fails.
        device: Where the collectives' tensors live (the rank's CUDA device for NCCL).

    Raises:
        RuntimeError: If the rendezvous fails (a rank missing past the timeout).
    """

    def __init__(self, *, backend: str, timeout_s: float, device: torch.device) -> None:
        self._device = device
        if device.type == "cuda":
            torch.cuda.set_device(device)
        self._owned = not dist.is_initialized()
        if self._owned:
            timeout = timedelta(seconds=timeout_s)
            store, rank, world_size = next(rendezvous("env://", timeout=timeout))
            # torchrun's restarted ranks meet in the same store as the failed ones: without a
            # prefix per restart, gloo can read a dead rank's address and fail to connect.
            restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
            dist.init_process_group(
                backend=backend, store=PrefixStore(f"driftd/restart-{restart}", store),
                rank=rank, world_size=world_size, timeout=timeout,
            )  # fmt: skip
        self._rank = dist.get_rank()
        self._world_size = dist.get_world_size()
        self._closed = False
        log.info(
            "joined the trainer group as rank %d of %d (%s)", self._rank, self._world_size,
            dist.get_backend(),
            extra={"event": "group_joined", "rank": self._rank, "world_size": self._world_size,
                   "pid": os.getpid()},  # a launcher's ranks are told apart by it (ops, tests)
        )  # fmt: skip

    @property
    def rank(self) -> int:
        """This process's rank."""
        return self._rank

    @property
    def world_size(self) -> int:
        """How many ranks the group has."""
        return self._world_size

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum over the ranks, in float64."""
        tensor = torch.tensor(list(values), dtype=torch.float64, device=self._device)
        dist.all_reduce(tensor)
        return [float(value) for value in tensor.cpu()]

    def sum_(self, tensor: Tensor) -> None:
        """All-reduce ``tensor`` (summed) in place, through the group's device if need be."""
        if tensor.device == self._device:
            dist.all_reduce(tensor)
            return
        moved = tensor.to(self._device)
        dist.all_reduce(moved)
        tensor.copy_(moved)

    def average_parameters(self, params: Sequence[Tensor]) -> None:
        """Torch's model averaging (one flat all-reduce), the parameters updated in place."""
        if params:
            average_parameters(iter(params), dist.group.WORLD)  # type: ignore[arg-type]

    def broadcast_(self, tensors: Sequence[Tensor]) -> None:
        """Overwrite every tensor with rank 0's (one flat broadcast)."""
        if not tensors:
            return
        flat = torch.cat([t.detach().reshape(-1).to(self._device, torch.float64) for t in tensors])
        dist.broadcast(flat, src=0)
        offset = 0
        for tensor in tensors:
            part = flat[offset : offset + tensor.numel()].view_as(tensor)
            tensor.data.copy_(part.to(tensor.device, tensor.dtype))
            offset += tensor.numel()

    def gather(self, value: Any) -> list[Any] | None:
        """Every rank's picklable ``value`` on rank 0 (the ranks are one trusted job)."""
        gathered = self.all_gather(value)
        return gathered if self._rank == 0 else None

    def all_gather(self, value: Any) -> list[Any]:
        """Every rank's picklable ``value``, in rank order, on every rank."""
        gathered: list[Any] = [None] * self._world_size
        dist.all_gather_object(gathered, value)
        return gathered

    def broadcast(self, value: Any) -> Any:
        """Rank 0's picklable ``value`` on every rank."""
        box = [value if self._rank == 0 else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        """Destroy the process group this object created (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._owned and dist.is_initialized():
            dist.destroy_process_group()
