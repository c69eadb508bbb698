"""A sliding window of prequential (test-then-train) metrics: loss, accuracy or MAE/RMSE/R².

Only finite figures enter the window: a batch whose loss (or error sums) is NaN or infinite is
refused (:meth:`PrequentialWindow.update` returns False), so one bad batch can never leave a NaN
in the running sums. The sums are also recomputed from the kept batches once per full turnover
of the window, so rounding cannot accumulate over a never-ending stream.

Classification reports accuracy; regression reports none (the field is None) but the mean
absolute error, the root mean squared error and R² (``1 - SSE / SST`` over every output of the
window's events: the variance-weighted R², 0 for always predicting the window's mean target).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch


@dataclass(frozen=True)
class RegressionErrors:
    """One batch's prediction errors and target spread, in float64.

    Attributes:
        abs_sum: Sum of ``|prediction - target|`` over every event and output.
        sq_sum: Sum of ``(prediction - target)²`` over every event and output.
        mean: Per-output mean target of the batch.
        m2: Per-output sum of squared deviations of the targets from ``mean``.
    """

    abs_sum: float
    sq_sum: float
    mean: tuple[float, ...]
    m2: tuple[float, ...]

    def is_finite(self) -> bool:
        """Whether every figure is finite."""
        return all(map(math.isfinite, (self.abs_sum, self.sq_sum, *self.mean, *self.m2)))


def regression_errors(predicted: torch.Tensor, y: torch.Tensor) -> RegressionErrors:
    """The error sums of predictions ``(n, k)`` against targets ``(n, k)`` (one device copy)."""
    predicted = predicted.detach().to(torch.float64).reshape(len(predicted), -1)
    y = y.detach().to(torch.float64).reshape(len(y), -1)
    error = predicted - y
    mean = y.mean(dim=0)
    m2 = (y - mean).square().sum(dim=0)
    figures = torch.cat([error.abs().sum().reshape(1), error.square().sum().reshape(1), mean, m2])
    values: list[float] = figures.cpu().tolist()
    k = y.shape[1]
    return RegressionErrors(values[0], values[1], tuple(values[2 : 2 + k]), tuple(values[2 + k :]))


_Batch = tuple[int, float, int, RegressionErrors | None]


class PrequentialWindow:
    """Prequential metrics over roughly the last ``size`` labelled events.

    Kept per mini-batch (count, summed loss, correct predictions, regression error sums), so an
    update costs O(1) amortised and the window holds at most ``size`` batches.

    Args:
        size: Events the window covers (it keeps the fewest newest batches holding that many).
        task: ``classification`` reports accuracy; ``regression`` MAE, RMSE and R².
    """

    def __init__(
        self, size: int, *, task: Literal["classification", "regression"] = "classification"
    ) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size = size
        self.task = task
        self.refused = 0  # batches refused for a non-finite figure (not saved)
        self._batches: deque[_Batch] = deque()
        self._evicted = 0  # batches dropped since the sums were last recomputed
        self._reset_sums()

    def _reset_sums(self) -> None:
        self._count, self._loss_sum, self._correct = 0, 0.0, 0
        self._error_count, self._abs_sum, self._sq_sum = 0, 0.0, 0.0
        self._shift: list[float] = []  # reference target per output (a stable variance)
        self._dev_sum: list[float] = []  # sum of (y - shift) per output
        self._dev_sq: list[float] = []  # sum of (y - shift)² per output

    def clear(self) -> None:
        """Forget every event (e.g. after the model changed under the window)."""
        self._batches.clear()
        self._evicted = 0
        self._reset_sums()

    def update(
        self, count: int, loss_sum: float, correct: int = 0, errors: RegressionErrors | None = None
    ) -> bool:
        """Add one batch: ``count`` events, their summed loss, number correct, error sums.

        Returns:
            False when the batch was refused (no events, or a figure not finite).
        """
        if count <= 0:
            return False
        if not math.isfinite(loss_sum) or (errors is not None and not errors.is_finite()):
            self.refused += 1
            return False
        batch = (count, loss_sum, correct, errors)
        self._batches.append(batch)
        self._add(batch, sign=1)
        while len(self._batches) > 1 and self._count - self._batches[0][0] >= self.size:
            self._add(self._batches.popleft(), sign=-1)
            self._evicted += 1
        if self._evicted >= len(self._batches):  # amortised O(1): no rounding builds up
            self._resum()
        return True

    def _add(self, batch: _Batch, *, sign: int) -> None:
        count, loss_sum, correct, errors = batch
        self._count += sign * count
        self._loss_sum += sign * loss_sum
        self._correct += sign * correct
        if errors is None:
            return
        if not self._shift:
            self._shift = list(errors.mean)
            self._dev_sum, self._dev_sq = [0.0] * len(errors.mean), [0.0] * len(errors.mean)
        if len(errors.mean) != len(self._shift):
            return  # another output width (a reshaped model): not comparable, left out
        self._error_count += sign * count
        self._abs_sum += sign * errors.abs_sum
        self._sq_sum += sign * errors.sq_sum
        for i, (mean, m2, shift) in enumerate(
            zip(errors.mean, errors.m2, self._shift, strict=True)
        ):
            offset = mean - shift
            self._dev_sum[i] += sign * count * offset
            self._dev_sq[i] += sign * (m2 + count * offset * offset)

    def _resum(self) -> None:
        """Recompute the sums from the kept batches, the target reference at their mean."""
        batches = list(self._batches)
        self._reset_sums()
        errors = [(b[0], b[3]) for b in batches if b[3] is not None]
        if errors:
            width = len(errors[-1][1].mean)
            same = [(count, e.mean) for count, e in errors if len(e.mean) == width]
            total = sum(count for count, _ in same)
            self._shift = [
                sum(count * mean[i] for count, mean in same) / total for i in range(width)
            ]
            self._dev_sum, self._dev_sq = [0.0] * width, [0.0] * width
        for batch in batches:
            self._add(batch, sign=1)
        self._evicted = 0

    @property
    def count(self) -> int:
        """Events in the window."""
        return self._count

    @property
    def loss(self) -> float | None:
        """Mean loss in the window, or None when empty."""
        return self._loss_sum / self._count if self._count else None

    @property
    def accuracy(self) -> float | None:
        """Fraction of correct predictions in the window; None when empty or for regression."""
        if self.task != "classification" or not self._count:
            return None
        return self._correct / self._count

    @property
    def mae(self) -> float | None:
        """Mean absolute error per output in the window (regression; None otherwise)."""
        values = self._error_count * len(self._shift)
        return self._abs_sum / values if values else None

    @property
    def rmse(self) -> float | None:
        """Root mean squared error per output in the window (regression; None otherwise)."""
        values = self._error_count * len(self._shift)
        return math.sqrt(max(self._sq_sum, 0.0) / values) if values else None

    @property
    def r2(self) -> float | None:
        """``1 - SSE / SST`` over the window (regression; None when the targets are constant)."""
        n = self._error_count
        if not n:
            return None
        sst = sum(sq - s * s / n for s, sq in zip(self._dev_sum, self._dev_sq, strict=True))
        if not sst > 1e-12 * max(1.0, sum(self._dev_sq)):
            return None
        return 1.0 - self._sq_sum / sst

    def state_dict(self) -> dict[str, Any]:
        """JSON-ready state (a regression batch adds its error sums to the entry)."""
        entries: list[list[Any]] = []
        for count, loss_sum, correct, errors in self._batches:
            entry: list[Any] = [count, loss_sum, correct]
            if errors is not None:
                entry += [errors.abs_sum, errors.sq_sum, list(errors.mean), list(errors.m2)]
            entries.append(entry)
        return {"size": self.size, "batches": entries}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict` (also a window saved before the error sums)."""
        self.size = int(state["size"])
        self.clear()
        for entry in state["batches"]:
            errors = None
            if len(entry) >= 7:
                abs_sum, sq_sum, mean, m2 = entry[3:7]
                errors = RegressionErrors(
                    float(abs_sum), float(sq_sum), tuple(map(float, mean)), tuple(map(float, m2))
                )
            self.update(int(entry[0]), float(entry[1]), int(entry[2]), errors)
