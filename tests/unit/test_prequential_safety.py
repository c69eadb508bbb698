"""PrequentialWindow: non-finite batches are refused; regression reports MAE, RMSE and R²."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from driftd.learning.prequential import PrequentialWindow, RegressionErrors, regression_errors


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_batch_is_refused_and_the_window_stays_finite(bad: float) -> None:
    window = PrequentialWindow(10)
    assert window.update(4, 2.0, 3)
    assert not window.update(4, bad, 1)
    assert (window.count, window.loss, window.accuracy, window.refused) == (4, 0.5, 0.75, 1)
    assert window.update(4, 6.0, 1)
    assert (window.count, window.loss, window.accuracy) == (8, 1.0, 0.5)
    assert window.state_dict()["batches"] == [[4, 2.0, 3], [4, 6.0, 1]]


def test_a_batch_with_non_finite_error_sums_is_refused() -> None:
    window = PrequentialWindow(10, task="regression")
    bad = RegressionErrors(math.inf, 1.0, (0.0,), (1.0,))
    assert not window.update(2, 1.0, 0, bad)
    assert (window.count, window.mae) == (0, None)


def test_regression_has_no_accuracy() -> None:
    window = PrequentialWindow(10, task="regression")
    window.update(2, 1.0, 0, RegressionErrors(2.0, 2.0, (1.0,), (2.0,)))
    assert window.accuracy is None
    assert window.loss == 0.5


def test_classification_has_no_regression_metrics() -> None:
    window = PrequentialWindow(10)
    window.update(2, 1.0, 1)
    assert (window.mae, window.rmse, window.r2) == (None, None, None)


def _sklearn_like(predicted: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    error = predicted - y
    sst = ((y - y.mean(axis=0)) ** 2).sum()
    r2 = 1 - float((error**2).sum() / sst)
    return float(np.abs(error).mean()), float(np.sqrt((error**2).mean())), r2


@pytest.mark.parametrize("outputs", [1, 3])
def test_regression_metrics_equal_the_direct_formulas_over_the_window(outputs: int) -> None:
    rng = np.random.default_rng(0)
    window = PrequentialWindow(40, task="regression")
    kept: list[tuple[np.ndarray, np.ndarray]] = []
    for step in range(30):  # the targets drift far from the first batch's mean
        y = rng.normal(1_000.0 + 50 * step, 2.0, size=(8, outputs))
        predicted = y + rng.normal(0.3, 1.0, size=y.shape)
        errors = regression_errors(torch.from_numpy(predicted), torch.from_numpy(y))
        assert window.update(8, float(((predicted - y) ** 2).mean(axis=1).sum()), 0, errors)
        kept = [*kept, (predicted, y)][-5:]  # 40 events: the last five batches
    predicted = np.concatenate([p for p, _ in kept])
    y = np.concatenate([t for _, t in kept])
    mae, rmse, r2 = _sklearn_like(predicted, y)
    assert window.count == 40
    assert window.mae == pytest.approx(mae, rel=1e-9)
    assert window.rmse == pytest.approx(rmse, rel=1e-9)
    assert window.r2 == pytest.approx(r2, rel=1e-9)


def test_r2_is_none_while_the_targets_are_constant() -> None:
    window = PrequentialWindow(10, task="regression")
    y = torch.full((4, 1), 3.0)
    window.update(4, 4.0, 0, regression_errors(y + 1.0, y))
    assert (window.mae, window.rmse, window.r2) == (1.0, 1.0, None)


def test_regression_state_round_trips_through_json() -> None:
    window = PrequentialWindow(10, task="regression")
    rng = np.random.default_rng(1)
    for _ in range(6):
        y = torch.from_numpy(rng.normal(size=(3, 2)))
        window.update(3, 1.0, 0, regression_errors(y + 0.5, y))
    restored = PrequentialWindow(1, task="regression")
    restored.load_state_dict(json.loads(json.dumps(window.state_dict())))
    assert restored.state_dict() == window.state_dict()
    assert (restored.mae, restored.rmse) == pytest.approx((window.mae, window.rmse))
    assert restored.r2 == pytest.approx(window.r2)


def test_a_window_saved_without_error_sums_still_loads() -> None:
    restored = PrequentialWindow(10, task="regression")
    restored.load_state_dict({"size": 10, "batches": [[2, 1.0, 0], [2, 3.0, 0]]})
    assert (restored.count, restored.loss, restored.mae, restored.accuracy) == (4, 1.0, None, None)


def test_the_sums_do_not_drift_over_a_long_stream() -> None:
    window = PrequentialWindow(7)
    for index in range(20_000):
        window.update(1, 0.1 * (index % 13) + 1e6 * (index % 2), index % 2)
    expected = [0.1 * (i % 13) + 1e6 * (i % 2) for i in range(20_000 - 7, 20_000)]
    assert window.loss == pytest.approx(sum(expected) / 7, rel=1e-12)
