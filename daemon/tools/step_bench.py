"""Speed at small steps: the in-process loop against a plain PyTorch loop, interleaved.

Both learn the same events with the same MLP in micro-batches of 32, each predicted before it
is learned. The plain loop is what a user writes in 40 lines: numpy arrays already decoded, a
running standardisation, an eval-mode prediction, a train-mode step. driftd's loop starts from
the JSON records and does everything the daemon does per batch (decode, drift monitor,
adaptation bookkeeping, telemetry). The runs alternate, so a noisy machine slows both alike;
the figure is the median ratio.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import orjson
import torch
from torch import nn

from driftd.adapters.memory import DiscardingDeadLetterSink
from driftd.adapters.memory_snapshot_store import InMemorySnapshotStore
from driftd.adapters.memory_source import InMemoryRecordSource
from driftd.adapters.recording_telemetry import RecordingTelemetry
from driftd.app import build_trainer
from driftd.loop import StopWhen
from driftd.records import Record
from driftd.settings.root import load_settings
from driftd.tools.streams import DriftingStream

MICRO_BATCH = 32
TARGET_RATIO = 0.8


def small_step_ratio(*, events: int = 20_000, repeats: int = 3) -> tuple[float, float, float]:
    """Median events/s of driftd's loop and of the plain loop, and the median of their ratios."""
    stream = DriftingStream(n_events=events, n_features=16, n_classes=4)
    payloads = [orjson.dumps(event) for event in stream.events()]
    x = np.array([event["x"] for event in stream.events()], dtype=np.float32)
    y = np.array([event["y"] for event in stream.events()], dtype=np.int64)
    loop_rates, plain_rates = [], []
    for _ in range(repeats):
        loop_rates.append(_driftd_rate(payloads, x.shape[1], int(y.max()) + 1))
        plain_rates.append(_plain_rate(x, y))
    ratios = [a / b for a, b in zip(loop_rates, plain_rates, strict=True)]
    return statistics.median(loop_rates), statistics.median(plain_rates), statistics.median(ratios)


def _driftd_rate(payloads: list[bytes], n_features: int, n_classes: int) -> float:
    settings = load_settings(
        model={"n_classes": n_classes, "n_features": n_features},
        learner={"batch_size": 256, "micro_batch": MICRO_BATCH},
        snapshots={"dir": str(Path("unused")), "every_steps": 10**9, "every_seconds": 10**9},
        metrics={"enabled": False},
    )
    records = [Record("bench", 0, offset, payload) for offset, payload in enumerate(payloads)]
    trainer = build_trainer(
        settings, source=InMemoryRecordSource(records), store=InMemorySnapshotStore(keep=1),
        telemetry=RecordingTelemetry(), dead_letters=DiscardingDeadLetterSink(),
        serve_metrics=False,
    )  # fmt: skip
    started = time.perf_counter()
    trainer.run(StopWhen(max_events=len(records)))
    return len(records) / (time.perf_counter() - started)


def _plain_rate(x: np.ndarray, y: np.ndarray) -> float:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Linear(x.shape[1], 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
            nn.Linear(64, int(y.max()) + 1),
        )  # fmt: skip
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    count, mean, m2 = 0, np.zeros(x.shape[1]), np.zeros(x.shape[1])
    correct = 0  # scored, as a prequential loop does
    started = time.perf_counter()
    for start in range(0, len(x), MICRO_BATCH):
        xb, yb = x[start : start + MICRO_BATCH], y[start : start + MICRO_BATCH]
        std = np.sqrt(m2 / count) if count > 1 else np.ones_like(mean)
        inputs = torch.from_numpy(((xb - mean) / np.maximum(std, 1e-3)).astype(np.float32))
        targets = torch.from_numpy(yb)
        model.eval()
        with torch.no_grad():
            correct += int((model(inputs).argmax(1) == targets).sum())
        model.train()
        optimizer.zero_grad()
        loss_fn(model(inputs), targets).backward()
        optimizer.step()
        n = len(xb)  # Chan's batch merge of the running mean and variance, vectorised
        batch_mean = xb.mean(axis=0)
        delta = batch_mean - mean
        total = count + n
        mean = mean + delta * (n / total)
        m2 = m2 + ((xb - batch_mean) ** 2).sum(axis=0) + delta**2 * (count * n / total)
        count = total
    return len(x) / (time.perf_counter() - started)
