"""A stored domain is kept as it was before its change: the model before the step the change
began in, its own input statistics, a change point and reference from prequential losses; a
one-sided detector's alarm is never read as an improvement."""

from __future__ import annotations

import itertools
import math
from dataclasses import fields
from typing import Any

import numpy as np
import pytest
import torch

from driftd.adaptation.config import AdaptationConfig
from driftd.adaptation.domain_store import DomainStore, head_of
from driftd.adaptation.drift import DriftMonitor, SignalMonitor
from driftd.adaptation.head_switch import COPY_EVERY, HeadSwitch
from driftd.adaptation.outcomes import StepOutcome
from driftd.adaptation.replay import ReplayBuffer
from driftd.decode import DecodedBatch
from driftd.learning.learner import OnlineLearner, StepReport
from driftd.learning.standardize import standardizer_of
from driftd.records import Record
from driftd.settings.root import AdaptationSettings
from tests.fakes import tiny_learner

STEP = 32


def _config(**options: Any) -> AdaptationConfig:
    settings = AdaptationSettings(**options)
    return AdaptationConfig(**{f.name: getattr(settings, f.name) for f in fields(AdaptationConfig)})


def _batch(x: torch.Tensor, y: torch.Tensor) -> DecodedBatch:
    n = len(x)
    return DecodedBatch(
        records=[Record("t", 0, i, b"{}") for i in range(n)], x=x, y=y,
        labelled=torch.ones(n, dtype=torch.bool), timestamps=np.full(n, math.nan),
        domains=[None] * n, rejections=[],
    )  # fmt: skip


def _step(switch: HeadSwitch, losses: list[float], seed: int, outcome: StepOutcome) -> DecodedBatch:
    """Learn one step of 32 events and record it with the prequential ``losses`` given."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(STEP, 3, generator=generator)
    y = torch.randint(0, 2, (STEP,), generator=generator)
    switch.learner.learn_many(x, y, torch.ones(STEP, dtype=torch.bool))
    report = StepReport(STEP, STEP, None, None, torch.tensor(losses), torch.zeros(STEP), 0.1)
    batch = _batch(x, y)
    switch.record(report, batch)
    return batch


def _head(switch: HeadSwitch) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in head_of(switch.learner).state_dict().items()}


@pytest.mark.parametrize("began_in_the_step", [True, False])
def test_a_change_is_stored_from_before_the_step_it_began_in(began_in_the_step: bool) -> None:
    switch = HeadSwitch(learner=tiny_learner(), config=_config(), generator=torch.Generator())
    outcome = StepOutcome()
    first = [0.1] * STEP if began_in_the_step else [0.1] * 16 + [2.0] * 16
    switch.after_step(_step(switch, first, 1, outcome), outcome)
    before = _head(switch)
    second = [0.1] * 8 + [2.0] * 24 if began_in_the_step else [2.0] * STEP
    _step(switch, second, 2, outcome)  # the live model learns the changed events
    live = _head(switch)
    switch.on_concept_drift(STEP + 12, None, torch.full((20,), 2.0), outcome)
    pending = switch.pending
    assert pending is not None
    assert pending.start == (STEP + 8 if began_in_the_step else 16), "the rise, as predicted"
    stored = switch.domain_store.entry("d0")  # type: ignore[union-attr]
    expected = before if began_in_the_step else live  # no copy from before the change
    for key, value in stored.head.items():
        assert torch.equal(value, expected[key]), key
    assert stored.reference_loss == pytest.approx(0.1), "the prequential loss before the rise"


def test_the_copy_is_kept_only_while_no_decision_waits() -> None:
    switch = HeadSwitch(learner=tiny_learner(), config=_config(), generator=torch.Generator())
    outcome = StepOutcome()
    switch.after_step(_step(switch, [0.1] * STEP, 1, outcome), outcome)
    assert switch.before_step is not None
    assert switch.before_step[0] == STEP, "the arrival number the next step starts at"
    _step(switch, [2.0] * STEP, 2, outcome)
    switch.on_concept_drift(STEP + 4, None, torch.full((28,), 2.0), outcome)
    assert switch.before_step is None
    switch.after_step(_step(switch, [2.0] * STEP, 3, outcome), outcome)
    assert switch.before_step is None, "a waiting decision: the live model is not a domain's"


def test_the_replay_keeps_each_events_prequential_loss() -> None:
    buffer = ReplayBuffer(6, mode="sliding", generator=torch.Generator())
    x, y = torch.arange(12.0).reshape(4, 3), torch.arange(4)
    x[1, 0] = math.nan  # left out, with its loss
    buffer.extend(x, y, torch.tensor([0.5, 9.0, 1.5, 2.5]))
    buffer.extend(torch.zeros(4, 3), torch.arange(4))  # no losses given; 0.5's row goes
    assert buffer.losses_since(0)[:2].tolist() == [1.5, 2.5]
    assert buffer.losses_since(2, 3).tolist() == [2.5]
    assert bool(buffer.losses_since(3).isnan().all())
    tensors, meta = buffer.state_dict()
    copy = ReplayBuffer(6, mode="sliding", generator=torch.Generator())
    copy.load_state_dict(tensors, meta)
    assert torch.equal(copy.losses_since(0)[:2], buffer.losses_since(0)[:2])
    del tensors["loss"]  # a snapshot from before the losses were kept
    copy.load_state_dict(tensors, meta)
    assert bool(copy.losses_since(0).isnan().all())
    assert torch.equal(copy.since(0)[1], buffer.since(0)[1])


def _learn(learner: OnlineLearner, offset: float, seed: int, steps: int = 10) -> None:
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(32, 4, generator=generator) * 3.0 + offset
        y = torch.randint(0, 3, (32,), generator=generator)
        learner.learn_many(x, y, torch.ones(32, dtype=torch.bool))


def test_a_domain_is_scored_and_restored_with_its_own_input_statistics() -> None:
    learner = tiny_learner(n_features=4, n_outputs=3, hidden=8, standardize=True)
    domains = DomainStore(4)
    _learn(learner, 0.0, 1)
    generator = torch.Generator().manual_seed(9)
    x = torch.randn(64, 4, generator=generator) * 3.0
    y = torch.randint(0, 3, (64,), generator=generator)
    when_stored = domains.score_live(learner, x, y)
    standardizer = standardizer_of(learner.model)
    assert standardizer is not None
    shift = standardizer.shift.clone()
    domains.store("a", learner, reference_loss=when_stored)
    _learn(learner, 50.0, 2)  # inputs of another domain move the live statistics
    assert not torch.allclose(standardizer.shift, shift)
    assert domains.scores(learner, x, y)["a"] == pytest.approx(when_stored, rel=1e-5)
    domains.load("a", learner, trunk=True)
    assert torch.equal(standardizer.shift, shift)
    assert domains.score_live(learner, x, y) == pytest.approx(when_stored, rel=1e-5)
    tensors, meta = domains.state_dict()
    copy = DomainStore(4)
    copy.load_state_dict(dict(tensors), meta)
    assert torch.equal(copy.entry("a").scaling["shift"], shift)


def _errors_after_a_slow_start() -> list[float]:
    """0/1 errors: a model learning (70 % wrong, then 5 %), then a change to all wrong."""
    rng = np.random.default_rng(0)
    rates = [0.7] * 500 + [0.05] * 1_000 + [1.0] * 200
    return [float(rng.random() < rate) for rate in rates]


def test_a_one_sided_detectors_alarm_is_a_drift_even_below_the_mean_since_the_last() -> None:
    """HDDM_A fires a few events into the change, when the errors since its last reset still
    average above the last few: the levels say "fall", the detector (rises only) says rise."""
    monitor = DriftMonitor(
        concept=SignalMonitor(detector="hddm_a", params={}, signal="error", batch_mean=False),
        covariate=[],
    )
    errors = _errors_after_a_slow_start()
    found = []
    for start in range(0, len(errors), 100):
        wrong = torch.tensor(errors[start : start + 100])
        n = len(wrong)
        found += monitor.update(
            x=torch.zeros(n, 2), y=torch.zeros(n, dtype=torch.int64),
            labelled=torch.ones(n, dtype=torch.bool), event_losses=wrong,
            predictions=wrong.to(torch.int64),
        )  # fmt: skip
    drifts = [d for d in found if d.kind == "drift"]
    assert [d.index for d in drifts if d.index >= 1_500], "the change at 1,500 is reported"
    assert drifts[-1].after < drifts[-1].before, "the levels compared said: a fall"
    assert monitor.improvements == 0


def test_the_copy_is_saved_with_the_switch_so_a_resumed_run_stores_the_same() -> None:
    switch = HeadSwitch(learner=tiny_learner(), config=_config(), generator=torch.Generator())
    outcome = StepOutcome()
    switch.after_step(_step(switch, [0.1] * STEP, 1, outcome), outcome)
    tensors, meta = switch.state_dict()
    resumed = HeadSwitch(learner=tiny_learner(), config=_config(), generator=torch.Generator())
    resumed.load_state_dict(tensors, meta)
    assert switch.before_step is not None
    assert resumed.before_step is not None
    assert resumed.before_step[0] == switch.before_step[0] == STEP
    for key, value in switch.before_step[1].head.items():
        assert torch.equal(resumed.before_step[1].head[key], value), key
    del meta["before_step"]  # a snapshot from before the copy was kept
    resumed.load_state_dict(tensors, meta)
    assert resumed.before_step is None


def test_the_copy_is_renewed_once_copy_every_events_came() -> None:
    switch = HeadSwitch(learner=tiny_learner(), config=_config(), generator=torch.Generator())
    outcome = StepOutcome()
    taken = []
    for step in range(12):
        switch.after_step(_step(switch, [0.1] * STEP, step, outcome), outcome)
        assert switch.before_step is not None
        taken.append(switch.before_step[0])
    renewals = sorted(set(taken))
    assert renewals[0] == STEP
    assert all(b - a == COPY_EVERY for a, b in itertools.pairwise(renewals))
    assert len(renewals) == 1 + (12 * STEP - STEP) // COPY_EVERY
