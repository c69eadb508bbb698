"""The online learner: test-then-train order, masks, skipped steps, state round trip."""

from __future__ import annotations

import math

import pytest
import torch

from driftd.learning.learner import OnlineLearner, make_optimizer
from driftd.learning.lr import ConstantLR
from driftd.learning.models import build_model


def _learner(*, task: str = "classification", dropout: float = 0.0, seed: int = 0) -> OnlineLearner:
    n_outputs = 3 if task == "classification" else 1
    config = {
        "kind": "mlp", "task": task, "n_features": 4, "n_outputs": n_outputs,
        "activation": "relu", "dropout": dropout, "norm": "none", "head_hidden": [], "hidden": [8],
    }  # fmt: skip
    model = build_model(config, torch.Generator().manual_seed(seed))
    optimizer = make_optimizer("sgd", model, lr=0.1, momentum=0.0, weight_decay=0.0)
    return OnlineLearner(
        model=model,
        optimizer=optimizer,
        lr_policy=ConstantLR(base_lr=0.1, min_lr=1e-6, max_lr=1.0),
        task=task,  # type: ignore[arg-type]
        loss="cross_entropy" if task == "classification" else "mse",
        metrics_window=1000,
    )


def _batch(n: int = 16, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=generator), torch.randint(0, 3, (n,), generator=generator)


def test_predicts_with_the_model_before_the_update() -> None:
    learner = _learner()
    x, y = _batch()
    with torch.no_grad():
        before = learner.model(x)
    expected_loss = float(torch.nn.functional.cross_entropy(before, y))
    expected_accuracy = float((before.argmax(1) == y).float().mean())
    report = learner.learn_many(x, y, torch.ones(16, dtype=torch.bool))
    assert report.loss == pytest.approx(expected_loss, rel=1e-6)
    assert report.accuracy == pytest.approx(expected_accuracy)
    assert torch.equal(report.predictions, before.argmax(1))
    assert report.n_learned == 16
    with torch.no_grad():
        assert not torch.equal(learner.model(x), before), "the step must change the model"


def test_unlabelled_events_are_predicted_not_learned() -> None:
    learner, reference = _learner(), _learner()
    x, y = _batch()
    labelled = torch.tensor([True, False] * 8)
    report = learner.learn_many(x, y, labelled)
    assert report.n_learned == 8
    assert report.predictions.shape == (16,)
    assert learner.events_learned == 8
    # The same step taken on the labelled half alone gives the same weights.
    reference.learn_many(x[labelled], y[labelled], torch.ones(8, dtype=torch.bool))
    for a, b in zip(learner.model.parameters(), reference.model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_no_labels_takes_no_step() -> None:
    learner = _learner()
    x, y = _batch()
    before = [p.clone() for p in learner.model.parameters()]
    report = learner.learn_many(x, y, torch.zeros(16, dtype=torch.bool))
    assert report.n_learned == 0
    assert report.loss is None
    assert learner.steps == 0
    assert all(torch.equal(a, b) for a, b in zip(before, learner.model.parameters(), strict=True))


def test_non_finite_loss_rows_are_dropped_and_the_rest_learned() -> None:
    learner = _learner(task="regression")
    x = torch.randn(4, 4)
    y = torch.tensor([[1.0], [2.0], [3e38], [3e38]])  # squared error overflows float32
    report = learner.learn_many(x, y, torch.ones(4, dtype=torch.bool))
    assert report.dropped is not None
    assert report.dropped.tolist() == [False, False, True, True]
    assert (report.skipped, report.n_learned, learner.steps) == (None, 2, 1)
    assert learner.window.count == 2


def test_non_finite_loss_on_every_row_skips_the_step() -> None:
    learner = _learner(task="regression")
    x = torch.randn(2, 4)
    y = torch.tensor([[3e38], [3e38]])
    before = [p.clone() for p in learner.model.parameters()]
    report = learner.learn_many(x, y, torch.ones(2, dtype=torch.bool))
    assert report.skipped == "non_finite_loss"
    assert report.n_learned == 0
    assert learner.steps_skipped == 1
    assert learner.steps == 0
    assert all(torch.equal(a, b) for a, b in zip(before, learner.model.parameters(), strict=True))


def test_dropout_model_scores_eval_mode_predictions() -> None:
    learner = _learner(dropout=0.5)
    x, y = _batch()
    with torch.no_grad():
        learner.model.eval()
        eval_outputs = learner.model(x)
    report = learner.learn_many(x, y, torch.ones(16, dtype=torch.bool))
    assert torch.equal(report.predictions, eval_outputs.argmax(1))
    assert report.loss == pytest.approx(float(torch.nn.functional.cross_entropy(eval_outputs, y)))


def test_learning_reduces_loss_on_a_separable_stream() -> None:
    learner = _learner()
    generator = torch.Generator().manual_seed(3)
    centres = torch.randn(3, 4, generator=generator) * 3
    losses = []
    for _ in range(60):
        y = torch.randint(0, 3, (32,), generator=generator)
        x = centres[y] + torch.randn(32, 4, generator=generator) * 0.5
        report = learner.learn_many(x, y, torch.ones(32, dtype=torch.bool))
        assert report.loss is not None
        assert math.isfinite(report.loss)
        losses.append(report.loss)
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10
    assert learner.window.accuracy is not None
    assert learner.window.accuracy > 0.9


def test_state_dict_round_trip_restores_counters_and_window() -> None:
    learner = _learner()
    x, y = _batch()
    for _ in range(3):
        learner.learn_many(x, y, torch.ones(16, dtype=torch.bool))
    restored = _learner()
    restored.load_state_dict(learner.state_dict())
    assert (restored.steps, restored.events_learned) == (3, 48)
    assert restored.window.loss == pytest.approx(learner.window.loss)
    assert restored.optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
