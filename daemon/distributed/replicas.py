"""Keeping the replicas of a trainer group one model: gradients, parameters, input statistics.

Pure functions and small callables over the :class:`~driftd.ports.TrainerGroup` port; the maths
(event-weighted gradient means, the merge of running input statistics) lives here, the
transport in the adapter.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch
from torch import nn

from driftd.learning.standardize import RunningStandardizer, standardizer_of
from driftd.ports import TrainerGroup


class AllReducedGradients:
    """A learner's :class:`~driftd.learning.learner.GradientSync` over a trainer group.

    One flat all-reduce per step (DDP's bucket, in one piece): every rank's gradient times its
    events, then those events and the loss sum; each ``.grad`` becomes the group's event-weighted
    mean, so the step equals one on all ranks' events together.
    """

    def __init__(self, group: TrainerGroup, timer: Callable[[], float]) -> None:
        self._group = group
        self._timer = timer
        self.seconds = 0.0  #: spent in the all-reduces so far (``timer``'s seconds)

    def __call__(
        self, params: list[nn.Parameter], weight: float, loss_sum: float
    ) -> tuple[float, float]:
        """Replace the gradients by the group's weighted mean; return (events, loss sum)."""
        reference = params[0]
        pieces = [
            torch.zeros(p.numel(), device=reference.device, dtype=torch.float32)
            if p.grad is None or weight == 0
            else p.grad.detach().reshape(-1).to(torch.float32) * weight
            for p in params
        ]
        totals = torch.tensor([weight, loss_sum], device=reference.device, dtype=torch.float32)
        flat = torch.cat([*pieces, totals])
        started = self._timer()
        self._group.sum_(flat)
        self.seconds += self._timer() - started
        total_weight, total_loss = float(flat[-2]), float(flat[-1])
        if total_weight <= 0:
            return 0.0, 0.0
        flat = flat[:-2] / total_weight
        offset = 0
        for p in params:
            piece = flat[offset : offset + p.numel()].view_as(p).to(p.dtype)
            offset += p.numel()
            if p.grad is None:
                p.grad = piece.clone()
            else:
                p.grad.copy_(piece)
        return total_weight, total_loss


def average_replicas(group: TrainerGroup, model: nn.Module) -> None:
    """Make every rank's model the group's: parameters averaged, input statistics merged."""
    group.average_parameters([p for p in model.parameters()])
    standardizer = standardizer_of(model)
    if standardizer is not None:
        merge_standardizers(group, standardizer)


def merge_standardizers(group: TrainerGroup, standardizer: RunningStandardizer) -> None:
    """Pool the ranks' input statistics: the mixture of their distributions, count-weighted.

    Mean and variance become those of all ranks' inputs together; the count becomes the ranks'
    mean count (each rank already holds the shared history, so a sum would count it twice).
    """
    count = standardizer.count.reshape(1)
    mean, m2 = standardizer.mean, standardizer.m2
    moments = torch.cat([count, count * mean, m2 + count * mean**2])
    group.sum_(moments)
    total = float(moments[0])
    if total <= 0:
        return
    n = mean.numel()
    pooled_mean = moments[1 : 1 + n] / total
    pooled_m2 = moments[1 + n :] - total * pooled_mean**2
    pooled_count = total / group.world_size
    mean.copy_(pooled_mean)
    m2.copy_(pooled_m2.clamp_(min=0.0) * (pooled_count / total))
    standardizer.count.fill_(pooled_count)
    standardizer.refresh()


def broadcast_model(group: TrainerGroup, model: nn.Module) -> None:
    """Every rank starts from rank 0's parameters and buffers (DDP does the same at start)."""
    group.broadcast_([*model.parameters(), *model.buffers()])


def model_digest(model: nn.Module) -> str:
    """A hash of every parameter and buffer: equal digests, identical replicas."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
