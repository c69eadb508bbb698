"""Input standardisation: running statistics, served with the model, saved with the weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from driftd.learning.learner import OnlineLearner, make_optimizer
from driftd.learning.lr import ConstantLR
from driftd.learning.models import build_model
from driftd.learning.standardize import RunningStandardizer, standardizer_of
from driftd.pruning.quantize import load_int8, quantize_int8


def _config(**extra: object) -> dict[str, object]:
    return {
        "kind": "mlp", "task": "classification", "n_features": 3, "n_outputs": 2,
        "activation": "relu", "dropout": 0.0, "norm": "none", "head_hidden": [],
        "hidden": [8], "standardize": True, "standardize_horizon": 10_000,
    } | extra  # fmt: skip


def test_statistics_match_numpy_over_several_batches() -> None:
    rng = np.random.default_rng(0)
    data = rng.normal([1_000.0, -5.0, 0.0], [300.0, 2.0, 1e-6], size=(500, 3))
    standardizer = RunningStandardizer(3)
    for chunk in np.array_split(data, 7):
        standardizer.update(torch.tensor(chunk, dtype=torch.float32))
    assert float(standardizer.count) == 500
    np.testing.assert_allclose(standardizer.mean.numpy(), data.mean(axis=0), rtol=1e-5)
    std = np.maximum(data.std(axis=0), 1e-3)  # the third feature is floored
    np.testing.assert_allclose(1 / standardizer.scale.numpy(), std, rtol=1e-4)
    z = standardizer(torch.tensor(data[:50], dtype=torch.float32)).numpy()
    expected = np.clip((data[:50] - data.mean(axis=0)) / std, -8, 8)
    np.testing.assert_allclose(z, expected, rtol=1e-3, atol=1e-3)


def test_identity_before_any_update_and_non_finite_rows_are_skipped() -> None:
    standardizer = RunningStandardizer(2)
    x = torch.tensor([[3.0, 4.0]])
    assert torch.equal(standardizer(x), x)
    standardizer.update(torch.tensor([[1.0, 1.0], [float("nan"), 2.0], [3.0, 3.0]]))
    assert float(standardizer.count) == 2
    assert standardizer.mean.tolist() == [2.0, 2.0]


def test_a_poison_value_moves_the_statistics_by_a_bounded_step() -> None:
    rng = torch.Generator().manual_seed(1)
    standardizer = RunningStandardizer(4)
    for _ in range(20):
        standardizer.update(torch.randn(32, 4, generator=rng))
    standardizer.update(torch.full((1, 4), 3e38))
    assert torch.isfinite(standardizer.mean).all()
    assert float(standardizer.mean.abs().max()) < 0.1  # 20 std / 641 events, not 4.7e35
    assert float((standardizer.m2 / standardizer.count).max()) < 2.0, "variance barely moved"
    z = standardizer(torch.randn(8, 4, generator=rng))
    assert float(z.abs().max()) < 8.0, "ordinary inputs still standardised to ordinary values"


def test_the_horizon_forgets_old_inputs() -> None:
    standardizer = RunningStandardizer(1, horizon=200)
    for _ in range(10):
        standardizer.update(torch.zeros(100, 1))
    for _ in range(20):
        standardizer.update(torch.full((100, 1), 10.0))
    assert float(standardizer.mean[0]) == pytest.approx(10.0, abs=0.1)


def _learner(config: dict[str, object]) -> OnlineLearner:
    model = build_model(config, torch.Generator().manual_seed(0))
    optimizer = make_optimizer("adam", model, lr=1e-2, momentum=0.0, weight_decay=0.0)
    policy = ConstantLR(base_lr=1e-2, min_lr=1e-6, max_lr=1.0)
    return OnlineLearner(
        model=model, optimizer=optimizer, lr_policy=policy,
        task="classification", loss="cross_entropy", metrics_window=500,
    )  # fmt: skip


def test_the_learner_updates_after_scoring_and_learns_raw_scale_inputs() -> None:
    rng = torch.Generator().manual_seed(2)
    learner = _learner(_config())
    standardizer = standardizer_of(learner.model)
    assert standardizer is not None
    accuracies = []
    for step in range(200):
        x = torch.randn(32, 3, generator=rng) * torch.tensor([20_000.0, 10.0, 1.0])
        x += torch.tensor([50_000.0, 40.0, 0.0])
        y = (x[:, 0] > 50_000).long()
        before = standardizer.shift.clone()
        report = learner.learn_many(x, y, torch.ones(32, dtype=torch.bool))
        assert step == 0 or not torch.equal(before, standardizer.shift), "updated every batch"
        accuracies.append(report.accuracy)
    assert float(standardizer.count) == 200 * 32
    assert np.mean(accuracies[-50:]) > 0.9


def test_snapshot_weights_carry_the_statistics_to_a_served_and_an_int8_model() -> None:
    learner = _learner(_config())
    rng = torch.Generator().manual_seed(3)
    for _ in range(30):
        x = torch.randn(16, 3, generator=rng) * 100 + 500
        learner.learn_many(x, (x[:, 1] > 500).long(), torch.ones(16, dtype=torch.bool))
    weights = {k: v.detach().clone() for k, v in learner.model.state_dict().items()}
    assert {"inputs.mean", "inputs.m2", "inputs.count"} <= set(weights)
    served = build_model(_config(), torch.Generator().manual_seed(99))
    served.load_state_dict(weights)
    probe = torch.randn(64, 3, generator=rng) * 100 + 500
    learner.model.eval()
    served.eval()
    with torch.no_grad():
        assert torch.equal(served(probe), learner.model(probe))
        tensors = quantize_int8(learner.model).state_dict()
        int8 = load_int8(build_model(_config(), torch.Generator().manual_seed(5)), tensors)
        agree = (int8(probe).argmax(1) == learner.model(probe).argmax(1)).float().mean()
    assert float(agree) > 0.95


def test_no_standardizer_when_the_config_turns_it_off() -> None:
    model = build_model(_config(standardize=False), torch.Generator().manual_seed(0))
    assert standardizer_of(model) is None
    assert not any(key.startswith("inputs.") for key in model.state_dict())


def test_a_real_shift_enters_at_once() -> None:
    standardizer = RunningStandardizer(1)
    rng = torch.Generator().manual_seed(4)
    for _ in range(10):
        standardizer.update(torch.randn(64, 1, generator=rng))
    standardizer.update(torch.randn(64, 1, generator=rng) + 100.0)  # the whole batch moved
    assert float(standardizer.mean[0]) > 9.0, "follows the shift, not clipped to 20 std"
