"""Someone else's learners for the quality bench, run in this process on the same events.

Each baseline is prequential (predict, score, then learn) and learner-paced, and returns one
bool per event (prediction correct) and its wall time:

- ``river_linear``: ``preprocessing.StandardScaler() | linear_model.LogisticRegression()``
  (binary) or ``... | linear_model.SoftmaxRegression()`` (more classes), one event at a time;
- ``river_arf``: ``forest.ARFClassifier(seed=seed)``, default parameters, one event at a time;
- ``torch_mlp``: a plain PyTorch loop, the model driftd builds by default (d -> 64 -> 64 -> K,
  ReLU), Adam 1e-3, batches of 32, inputs standardised by a running (Welford) mean and variance
  updated after each batch is predicted; no drift handling of any kind.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from river import forest, linear_model, preprocessing

from driftd.tools.quality_streams import QualityStream

BASELINES = ("river_linear", "river_arf", "torch_mlp")


@dataclass
class BaselineRun:
    """One baseline's pass over one stream."""

    correct: np.ndarray
    seconds: float


def run_river(stream: QualityStream, model: object) -> BaselineRun:
    """Predict, score and learn ``model`` (a river classifier) one event at a time."""
    correct = np.zeros(stream.n_events, dtype=bool)
    rows, labels = stream.features.tolist(), stream.labels.tolist()
    predict_one = model.predict_one  # type: ignore[attr-defined]
    learn_one = model.learn_one  # type: ignore[attr-defined]
    started = time.perf_counter()
    for index, (row, label) in enumerate(zip(rows, labels, strict=True)):
        x = dict(enumerate(row))
        correct[index] = predict_one(x) == label
        learn_one(x, label)
    return BaselineRun(correct, time.perf_counter() - started)


def river_linear(stream: QualityStream, seed: int) -> BaselineRun:
    """River's scaled logistic (binary) or softmax (multi-class) regression."""
    del seed  # deterministic: zero-initialised weights
    head = (
        linear_model.LogisticRegression()
        if stream.n_classes == 2
        else linear_model.SoftmaxRegression()
    )
    return run_river(stream, preprocessing.StandardScaler() | head)


def river_arf(stream: QualityStream, seed: int) -> BaselineRun:
    """River's adaptive random forest, default parameters."""
    return run_river(stream, forest.ARFClassifier(seed=seed))


class RunningStandardizer:
    """Per-feature running mean and variance (Welford's batched update)."""

    def __init__(self, n_features: int) -> None:
        self.count = 0
        self.mean = torch.zeros(n_features, dtype=torch.float64)
        self.m2 = torch.zeros(n_features, dtype=torch.float64)

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` with the statistics so far (std 1 until two events were seen)."""
        if self.count < 2:
            return x - self.mean.float()
        std = (self.m2 / (self.count - 1)).sqrt().clamp_min(1e-6)
        return ((x.double() - self.mean) / std).float()

    def update(self, x: torch.Tensor) -> None:
        """Fold a batch into the statistics (Chan et al.'s parallel combination)."""
        batch = x.double()
        n, mean = batch.shape[0], batch.mean(dim=0)
        m2 = ((batch - mean) ** 2).sum(dim=0)
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * n / total
        self.m2 = self.m2 + m2 + delta**2 * self.count * n / total
        self.count = total


def torch_mlp(
    stream: QualityStream, seed: int, *, batch_size: int = 32, lr: float = 1e-3
) -> BaselineRun:
    """A plain predict-then-train PyTorch loop over batches of ``batch_size``."""
    n_features = stream.features.shape[1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # only inside the fork: the global RNG is left as it was
        model = torch.nn.Sequential(
            torch.nn.Linear(n_features, 64), torch.nn.ReLU(),
            torch.nn.Linear(64, 64), torch.nn.ReLU(),
            torch.nn.Linear(64, stream.n_classes),
        )  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    scaler = RunningStandardizer(n_features)
    features, labels = torch.from_numpy(stream.features), torch.from_numpy(stream.labels)
    correct = np.zeros(stream.n_events, dtype=bool)
    started = time.perf_counter()
    for start in range(0, stream.n_events, batch_size):
        x, y = features[start : start + batch_size], labels[start : start + batch_size]
        scaled = scaler.transform(x)
        model.train()
        logits = model(scaled)
        correct[start : start + len(y)] = (logits.argmax(dim=1) == y).numpy()
        scaler.update(x)  # after the batch is predicted: the score never saw its own inputs
        optimizer.zero_grad(set_to_none=True)
        loss_fn(logits, y).backward()
        optimizer.step()
    return BaselineRun(correct, time.perf_counter() - started)


RUNNERS: dict[str, Callable[[QualityStream, int], BaselineRun]] = {
    "river_linear": river_linear,
    "river_arf": river_arf,
    "torch_mlp": torch_mlp,
}
