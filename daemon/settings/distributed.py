"""The ``distributed`` settings section: how the ranks of a trainer group keep one model.

A group exists when a launcher (``torchrun``) sets ``WORLD_SIZE`` above 1; the rank, world size
and rendezvous come from the launcher's variables, not from these settings.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from driftd.settings.section import Section


class DistributedSettings(Section):
    """The replicas' synchronisation in a trainer group (``driftd.distributed``).

    ``allreduce`` (the default): synchronous data-parallel; every step is taken on all ranks'
    events together, the gradients all-reduced, so the replicas are identical at every step and
    drift, adaptation and pruning decide the same on every rank: works with every other
    default. ``average``: each rank learns from its own partitions and every
    ``average_every_steps`` rounds the ranks average their parameters (torch's model averaging;
    post-local SGD): less communication, for high-rate small models, with adaptation and pruning
    off. Either way the input standardiser's statistics are merged at each sync and rank 0
    writes the snapshots, holding every rank's partition offsets.
    """

    sync: Literal["average", "allreduce"] = Field(
        "allreduce", description="allreduce: gradients every step; average: periodic averaging."
    )
    average_every_steps: int = Field(
        8, ge=1, le=100_000, description="Rounds between two model averages (sync=average)."
    )
    backend: Literal["auto", "gloo", "nccl"] = Field(
        "auto", description="Collective backend; auto: nccl on a CUDA device, else gloo."
    )
    timeout_s: float = Field(
        300.0,
        gt=0.0,
        le=86_400.0,
        description="How long a rank waits in a collective (above the slowest batch or snapshot).",
    )
