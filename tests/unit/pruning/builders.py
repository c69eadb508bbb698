"""Small seeded built-in models and a fake trainable for the pruning tests."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
from torch import nn

from driftd.learning.models import SplitModel, build_model
from driftd.pruning import Pruner, PruningController, PruningPolicy, SparsitySchedule
from driftd.triggers import EveryNStepsOrTSeconds
from tests.fakes import FakeClock


def mlp_config(**overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "kind": "mlp", "task": "classification", "n_features": 10, "n_outputs": 3,
        "activation": "relu", "dropout": 0.0, "norm": "none", "head_hidden": [8],
        "hidden": [16, 12],
    }  # fmt: skip
    return config | overrides


def cnn_config(**overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "kind": "cnn", "task": "classification", "n_features": 64, "n_outputs": 10,
        "activation": "relu", "dropout": 0.0, "norm": "none", "head_hidden": [],
        "input_shape": [1, 8, 8], "channels": [4, 6],
    }  # fmt: skip
    return config | overrides


def build(config: dict[str, Any], seed: int = 0) -> SplitModel:
    return build_model(config, torch.Generator().manual_seed(seed))


def inputs(config: dict[str, Any], n: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, config["n_features"], generator=torch.Generator().manual_seed(seed))


def labels(config: dict[str, Any], n: int = 32, seed: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, config["n_outputs"], (n,), generator=generator)


class FakeLearner:
    """What the pruner needs from a learner: a model, its optimizer and a per-event loss."""

    def __init__(self, model: nn.Module, *, lr: float = 1e-2) -> None:
        self.model = model
        self.optimizer: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    def event_losses(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, y, reduction="none")

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        self.model.train()
        losses = self.event_losses(self.model(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        losses.mean().backward()  # type: ignore[no-untyped-call]
        self.optimizer.step()
        return float(losses.detach().sum())


def make_pruner(**policy: Any) -> Pruner:
    """A pruner due every 5 steps, halving both parts over 2 events; ``policy`` overrides."""
    trigger = EveryNStepsOrTSeconds(every_steps=5, every_seconds=None, clock=FakeClock())
    controller = PruningController(
        trigger=trigger, n_events=2, tolerance=0.1, baseline_events=64, verify_events=64,
        max_recoveries=1,
    )  # fmt: skip
    settings: dict[str, Any] = {
        "schedule": SparsitySchedule(targets={"shared": 0.5, "head": 0.5}, n_events=2),
    }
    return Pruner(
        PruningPolicy(**(settings | policy)), controller, generator=torch.Generator().manual_seed(0)
    )
