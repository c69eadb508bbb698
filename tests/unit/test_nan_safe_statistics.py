"""Every running statistic of the adaptation path survives a NaN or an infinity (issue 12)."""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

import numpy as np
import pytest
import torch

from driftd.adaptation.config import AdaptationConfig
from driftd.adaptation.drift import DriftMonitor, SignalMonitor
from driftd.adaptation.head_switch import HeadSwitch
from driftd.adaptation.pending_decision import PendingDecision
from driftd.adaptation.recurrence import InputStats
from driftd.adaptation.replay import ReplayBuffer
from driftd.decode import DecodedBatch
from driftd.learning.learner import StepReport
from driftd.records import Record
from driftd.serving.publish_gate import LabelWindow
from driftd.settings.root import AdaptationSettings
from tests.fakes import tiny_learner


def _shifted_stream() -> list[float]:
    """1,000 values around 1.0, then 1,000 three standard deviations higher."""
    rng = np.random.default_rng(0)
    values: list[float] = np.concatenate(
        [rng.normal(1.0, 0.1, 1_000), rng.normal(1.3, 0.1, 1_000)]
    ).tolist()
    return values


def _first_drift(monitor: SignalMonitor, values: list[float], batch: int = 50) -> int | None:
    for start in range(0, len(values), batch):
        for fired in monitor.update_many(values[start : start + batch]):
            if fired.kind == "drift":
                return start + fired.position
    return None


@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_adwin_still_detects_a_later_shift_after_a_non_finite_value(bad: float) -> None:
    values = _shifted_stream()
    without = values[:300] + values[301:]
    clean = _first_drift(SignalMonitor(detector="adwin", params={}, signal="loss",
                                       batch_mean=False), without)  # fmt: skip
    values[300] = bad
    monitor = SignalMonitor(detector="adwin", params={}, signal="loss", batch_mean=False)
    poisoned = _first_drift(monitor, values)
    assert clean is not None
    assert 1_000 <= clean < 1_200
    assert poisoned == clean + 1, "the same detection, the bad value counted in the index"
    assert (monitor.seen, monitor.dropped) == ((poisoned // 50 + 1) * 50, 1)  # whole batches


def test_positions_count_the_dropped_values() -> None:
    monitor = SignalMonitor(detector="page_hinkley", params={}, signal="loss", batch_mean=False)
    values = [0.1] * 200 + [math.nan] + [5.0] * 60
    fired = monitor.update_many(values)
    reference = SignalMonitor(detector="page_hinkley", params={}, signal="loss", batch_mean=False)
    expected = reference.update_many([0.1] * 200 + [5.0] * 60)
    assert [f.position for f in fired] == [p.position + 1 for p in expected]
    assert monitor.seen == 261
    assert monitor.state_dict()["dropped"] == 1


def test_a_batch_mean_of_non_finite_values_is_skipped() -> None:
    monitor = SignalMonitor(detector="adwin", params={"clock": 1}, signal="loss", batch_mean=True)
    assert monitor.update_many([math.inf, math.nan]) == []
    assert (monitor.seen, monitor.dropped) == (2, 2)
    assert monitor.detector.total == 0.0


def test_dropped_count_survives_a_state_round_trip() -> None:
    monitor = SignalMonitor(detector="adwin", params={}, signal="loss", batch_mean=False)
    monitor.update_many([1.0, math.inf, 2.0])
    restored = SignalMonitor(detector="adwin", params={}, signal="loss", batch_mean=False)
    restored.load_state_dict(monitor.state_dict())
    assert (restored.seen, restored.dropped) == (3, 1)


def test_input_signals_of_huge_inputs_stay_finite() -> None:
    covariate = [
        SignalMonitor(detector="adwin", params={"clock": 1}, signal=name, batch_mean=True)
        for name in ("input_mean", "input_rms")
    ]
    monitor = DriftMonitor(concept=None, covariate=covariate)
    x = torch.ones(4, 3)
    x[1] = 3e38  # finite in float32; its square is not
    labels = torch.zeros(4, dtype=torch.int64)
    monitor.update(x=x, y=labels, labelled=torch.ones(4, dtype=torch.bool),
                   event_losses=torch.zeros(0), predictions=labels)  # fmt: skip
    assert [m.dropped for m in covariate] == [0, 0]
    assert all(math.isfinite(m.detector.total) for m in covariate)


def test_replay_leaves_non_finite_rows_out() -> None:
    buffer = ReplayBuffer(10, mode="sliding", generator=torch.Generator())
    x = torch.arange(12.0).reshape(4, 3)
    x[1, 2] = math.nan
    y = torch.tensor([[0.0], [1.0], [math.inf], [3.0]])
    buffer.extend(x, y)
    kept_x, kept_y = buffer.since(0)
    assert kept_y.flatten().tolist() == [0.0, 3.0]
    assert torch.equal(kept_x, x[[0, 3]])
    assert buffer.arrivals == 2


def test_input_fingerprint_leaves_non_finite_rows_out() -> None:
    stats = InputStats()
    stats.update(torch.tensor([[1.0, 2.0], [math.inf, 0.0], [3.0, 4.0]]))
    assert stats.count == 2
    assert stats.total is not None
    assert stats.total.tolist() == [4.0, 6.0]


def test_label_window_leaves_non_finite_targets_out() -> None:
    window = LabelWindow(10, task="regression", loss="mse")
    y = torch.tensor([[1.0], [math.nan], [3.0]])
    window.update(y, torch.ones(3, dtype=torch.bool))
    assert window.count == 2
    assert window.baseline_loss() == pytest.approx(1.0)


def _switch() -> HeadSwitch:
    return HeadSwitch(learner=tiny_learner(), config=_config(), generator=torch.Generator())


def _config(**options: Any) -> AdaptationConfig:
    """The config the composition root derives from ``AdaptationSettings(**options)``."""
    settings = AdaptationSettings(**options)
    return AdaptationConfig(**{f.name: getattr(settings, f.name) for f in fields(AdaptationConfig)})


def test_the_pending_head_decision_sums_only_finite_losses() -> None:
    switch = _switch()
    switch.pending = PendingDecision(marker=0, start=0, from_domain="d0", trigger="concept")
    n = 3
    batch = DecodedBatch(
        records=[Record("t", 0, i, b"{}") for i in range(n)], x=torch.zeros(n, 3),
        y=torch.zeros(n, dtype=torch.int64), labelled=torch.ones(n, dtype=torch.bool),
        timestamps=np.full(n, math.nan), domains=[None] * n, rejections=[],
    )  # fmt: skip
    losses = torch.tensor([0.5, math.nan, 1.5])
    report = StepReport(n, n, None, None, losses, torch.zeros(n, dtype=torch.int64), 0.1)
    switch.record(report, batch)
    pending = switch.pending
    assert (pending.loss_sum, pending.count, pending.events, pending.live_loss) == (2.0, 2, 3, 1.0)
