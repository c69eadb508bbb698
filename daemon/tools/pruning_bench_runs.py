"""Prequential runs for the pruning benchmark: a real learner, optionally with a pruner.

The run wires the pieces as the training loop will: ``learn_many``, then the pruner's
``after_step`` (Taylor scores, masks), ``observe`` (verification against the unpruned model on
the same events) and, when due, ``prune`` (with a replay window of the latest events).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from driftd.learning.learner import OnlineLearner, make_optimizer
from driftd.learning.lr import ConstantLR
from driftd.learning.models import build_model
from driftd.pruning.controller import PruningController
from driftd.pruning.layers import unit_layers
from driftd.pruning.policy import Criterion, PruningPolicy
from driftd.pruning.pruner import Pruner
from driftd.pruning.schedule import SparsitySchedule
from driftd.triggers import EveryNStepsOrTSeconds

PrunerFactory = Callable[[], Pruner]


class StepsOnlyClock:
    """The pruning trigger counts steps only."""

    def monotonic(self) -> float:
        """Always 0: time never triggers."""
        return 0.0

    def time(self) -> float:
        """Always 0."""
        return 0.0


def model_config(kind: str, n_features: int, n_classes: int, **extra: Any) -> dict[str, Any]:
    """A built-in classifier config (MLP: the default hidden widths 64, 64), plus ``extra``."""
    config: dict[str, Any] = {
        "kind": kind, "task": "classification", "n_features": n_features, "n_outputs": n_classes,
        "activation": "relu", "dropout": 0.0, "norm": "none", "head_hidden": [],
    }  # fmt: skip
    return config | ({"hidden": [64, 64]} if kind == "mlp" else {}) | extra


def pruner_factory(
    target: float, *, tolerance: float, seed: int, criterion: Criterion = "taylor", events: int = 4
) -> PrunerFactory:
    """Structured pruning every 100 steps over ``events`` events, verified on 512 events."""

    def make() -> Pruner:
        trigger = EveryNStepsOrTSeconds(every_steps=100, every_seconds=None, clock=StepsOnlyClock())
        controller = PruningController(
            trigger=trigger, n_events=events, tolerance=tolerance, abs_tolerance=0.01,
            baseline_events=512, verify_events=512, max_recoveries=2,
        )  # fmt: skip
        policy = PruningPolicy(
            structured=True, criterion=criterion, fine_tune_epochs=8, penalty_strength=0.1,
            schedule=SparsitySchedule(targets={"shared": target, "head": target}, n_events=events),
        )  # fmt: skip
        return Pruner(policy, controller, generator=torch.Generator().manual_seed(seed))

    return make


def prequential_run(
    config: dict[str, Any],
    x: Tensor,
    y: Tensor,
    *,
    seed: int,
    batch_size: int = 32,
    evaluate_from: int,
    pruner_factory: PrunerFactory | None = None,
    replay_events: int = 1024,
) -> dict[str, Any]:
    """Test-then-train over ``(x, y)``; accuracy over events from ``evaluate_from`` on."""
    model = build_model(config, torch.Generator().manual_seed(seed))
    optimizer = make_optimizer("adam", model, lr=1e-3, momentum=0.9, weight_decay=0.0)
    policy = ConstantLR(base_lr=1e-3, min_lr=1e-3, max_lr=1e-3)
    learner = OnlineLearner(
        model=model, optimizer=optimizer, lr_policy=policy, task="classification",
        loss="cross_entropy", metrics_window=1000,
    )  # fmt: skip
    pruner = pruner_factory() if pruner_factory is not None else None
    recent: deque[tuple[Tensor, Tensor]] = deque(maxlen=max(1, replay_events // batch_size))

    def replay() -> tuple[Tensor, Tensor]:
        return torch.cat([b[0] for b in recent]), torch.cat([b[1] for b in recent])

    correct = seen = 0
    history: list[dict[str, Any]] = []
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        report = learner.learn_many(xb, yb, torch.ones(len(xb), dtype=torch.bool))
        recent.append((xb, yb))
        if start >= evaluate_from:
            correct += round((report.accuracy or 0.0) * len(xb))
            seen += len(xb)
        if pruner is None:
            continue
        pruner.after_step(learner.model, learner.optimizer)
        reference = pruner.reference_loss_sum(xb, yb, learner)
        verdict = pruner.observe(
            learner, (report.loss or 0.0) * len(xb), len(xb), replay, reference
        )
        if verdict.outcome is not None:
            widths = [layer.n_units for layer in unit_layers(learner.model)]
            history.append(
                {"step": learner.steps, "outcome": verdict.outcome, "widths": widths,
                 "pruned_loss": verdict.pruned_loss, "reference_loss": verdict.reference_loss}
            )  # fmt: skip
        if pruner.due(learner.steps):
            pruner.prune(learner.steps, learner, replay)
    window = replay()
    return {
        "model": learner.model,
        "accuracy": correct / max(1, seen),
        "history": history,
        "outcomes": dict(pruner.controller.counts) if pruner is not None else {},
        "window": window,
    }
