"""Settings and the launcher's environment in, a trainer group's pieces out.

``torchrun`` (or any launcher following its convention) starts every rank with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set; a ``WORLD_SIZE`` above
1 makes ``driftd run`` one rank of a trainer group.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from driftd.distributed.replicas import broadcast_model
from driftd.ports import TrainerGroup
from driftd.records import PartitionShare
from driftd.settings.root import ConfigurationError, Settings
from driftd.training_state import TrainingState


@dataclass(frozen=True)
class LaunchedRank:
    """Where the launcher put this process: its rank, the group's size, its rank on the host."""

    rank: int
    world_size: int
    local_rank: int


def launched_rank(environ: Mapping[str, str] | None = None) -> LaunchedRank | None:
    """This process's place in a trainer group, or None when it runs alone.

    Raises:
        ConfigurationError: If the launcher's variables are malformed or inconsistent.
    """
    env = os.environ if environ is None else environ
    if int(_variable(env, "WORLD_SIZE", "1")) <= 1:
        return None
    rank = LaunchedRank(
        rank=int(_variable(env, "RANK", None)),
        world_size=int(_variable(env, "WORLD_SIZE", None)),
        local_rank=int(_variable(env, "LOCAL_RANK", "0")),
    )
    if not 0 <= rank.rank < rank.world_size:
        last = rank.world_size - 1
        raise ConfigurationError(f"RANK={rank.rank} is outside 0..{last} (WORLD_SIZE-1)")
    return rank


def _variable(env: Mapping[str, str], name: str, default: str | None) -> str:
    value = env.get(name, default)
    if value is None:
        raise ConfigurationError(f"{name}: WORLD_SIZE > 1 needs {name} (set by torchrun)")
    if not value.strip().isdigit():
        raise ConfigurationError(f"{name}={value!r}: expected a non-negative integer")
    return value


def check_group_settings(settings: Settings) -> None:
    """Refuse, naming the field, what a trainer group cannot do.

    Raises:
        ConfigurationError: For the first setting that a group cannot honour.
    """
    decides = settings.adaptation.enabled or settings.pruning.enabled
    if decides and settings.distributed.sync != "allreduce":
        raise ConfigurationError(
            "distributed.sync: adaptation and pruning in a trainer group need allreduce (the "
            "replicas identical at every step, so every rank decides the same); set "
            "DRIFTD_DISTRIBUTED__SYNC=allreduce, or DRIFTD_ADAPTATION__ENABLED=false and "
            "DRIFTD_PRUNING__ENABLED=false to average"
        )
    if settings.model.n_features is None:
        raise ConfigurationError(
            "model.n_features: a trainer group builds its model before the first event: set it"
        )


def group_device(settings: Settings, local_rank: int) -> torch.device:
    """The rank's device: its own GPU (``cuda:LOCAL_RANK``) when the model runs on CUDA."""
    wanted = torch.device(settings.model.device)
    if wanted.type == "cuda" and torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def group_backend(settings: Settings, device: torch.device) -> str:
    """The collective backend: the setting, or nccl on CUDA and gloo on CPU (``auto``)."""
    backend = settings.distributed.backend
    if backend == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise ConfigurationError("distributed.backend: nccl needs model.device=cuda and a GPU")
    return backend


def join_group(group: TrainerGroup, state: TrainingState) -> PartitionShare:
    """Check every rank restored the same snapshot, start all from rank 0's model.

    Returns:
        The partitions this rank reads.

    Raises:
        ConfigurationError: On every rank, if some rank restored another snapshot than rank 0
            (the ranks do not share ``snapshots.dir``).
    """
    mine = state.snapshot_version
    leader = group.broadcast(mine)
    (differing,) = group.sum([float(mine != leader)])
    if differing:
        raise ConfigurationError(
            f"snapshots.dir: {int(differing)} rank(s) restored another snapshot than rank 0 "
            f"(version {leader}; this rank: {mine}): every rank needs the same snapshots.dir "
            "(a shared volume or an s3:// URL)"
        )
    if state.learner is None:
        raise ConfigurationError("model.n_features: a trainer group needs its model at start")
    broadcast_model(group, state.learner.model)
    return PartitionShare(group.rank, group.world_size)
