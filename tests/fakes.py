"""Test doubles and small builders shared by the unit tests."""

from __future__ import annotations

import torch

from driftd.learning.learner import OnlineLearner, make_optimizer
from driftd.learning.lr import ConstantLR
from driftd.learning.models import build_model


def tiny_learner(
    *,
    task: str = "classification",
    n_features: int = 3,
    n_outputs: int = 2,
    hidden: int = 4,
    standardize: bool = False,
) -> OnlineLearner:
    """A small seeded MLP learner: one hidden layer, plain SGD at 0.1, a window of 100."""
    config = {
        "kind": "mlp", "task": task, "n_features": n_features, "n_outputs": n_outputs,
        "activation": "relu", "dropout": 0.0, "norm": "none", "head_hidden": [],
        "hidden": [hidden], "standardize": standardize,
    }  # fmt: skip
    model = build_model(config, torch.Generator().manual_seed(0))
    return OnlineLearner(
        model=model,
        optimizer=make_optimizer("sgd", model, lr=0.1, momentum=0.0, weight_decay=0.0),
        lr_policy=ConstantLR(base_lr=0.1, min_lr=1e-6, max_lr=1.0),
        task=task,  # type: ignore[arg-type]
        loss="cross_entropy" if task == "classification" else "mse",
        metrics_window=100,
    )


class FakeClock:
    """A clock that only moves when told to, so tests never sleep.

    Satisfies :class:`driftd.ports.Clock`: ``monotonic()`` for durations, ``time()`` for
    epoch timestamps. Both move together by :meth:`advance`.
    """

    def __init__(self, *, monotonic: float = 1_000.0, epoch: float = 1_700_000_000.0) -> None:
        self._monotonic = monotonic
        self._epoch = epoch

    def monotonic(self) -> float:
        """Seconds on the fake monotonic clock."""
        return self._monotonic

    def time(self) -> float:
        """Fake wall-clock epoch seconds."""
        return self._epoch

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by ``seconds`` (never backwards)."""
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self._monotonic += seconds
        self._epoch += seconds
