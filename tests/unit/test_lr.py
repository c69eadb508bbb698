from __future__ import annotations

import json
import math
import random
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from driftd.learning.lr import (
    AdaptiveLR,
    ConstantLR,
    CosineRestartsLR,
    ExponentialLR,
    LRPolicy,
    StepDecayLR,
    cosine_restarts_lr,
    cycle_position,
    ema,
    exponential_lr,
    improved,
    step_decay_lr,
)
from driftd.settings.root import LRSettings
from driftd.wiring.learning import make_lr_policy

# --- pure functions --------------------------------------------------------------------------


def test_step_decay_and_exponential() -> None:
    assert [step_decay_lr(s, base_lr=0.8, gamma=0.5, step_size=2) for s in range(6)] == [
        0.8,
        0.8,
        0.4,
        0.4,
        0.2,
        0.2,
    ]
    assert exponential_lr(0, base_lr=0.1, gamma=0.5, step_size=1000) == 0.1
    assert exponential_lr(500, base_lr=0.1, gamma=0.5, step_size=1000) == pytest.approx(
        0.1 * math.sqrt(0.5)
    )
    assert exponential_lr(2000, base_lr=0.1, gamma=0.5, step_size=1000) == pytest.approx(0.025)


@pytest.mark.parametrize(
    ("step", "mult", "expected"),
    [
        (0, 1.0, (0, 10)),
        (9, 1.0, (9, 10)),
        (25, 1.0, (5, 10)),
        (9, 2.0, (9, 10)),
        (10, 2.0, (0, 20)),
        (29, 2.0, (19, 20)),
        (30, 2.0, (0, 40)),
        (70, 2.0, (0, 80)),
        (10, 1.5, (0, 15)),
        (24, 1.5, (14, 15)),
        (25, 1.5, (0, 22.5)),
    ],
)
def test_cycle_position(step: int, mult: float, expected: tuple[float, float]) -> None:
    position, length = cycle_position(step, cycle_steps=10, cycle_mult=mult)
    assert (position, length) == pytest.approx(expected)


def test_cosine_restarts_values() -> None:
    def lr(step: int) -> float:
        return cosine_restarts_lr(step, base_lr=1.0, min_lr=0.2, cycle_steps=4, cycle_mult=1.0)

    assert lr(0) == 1.0
    assert lr(2) == pytest.approx(0.6)  # halfway
    assert lr(1) == pytest.approx(0.2 + 0.8 * (1 + math.cos(math.pi / 4)) / 2)
    assert lr(4) == 1.0  # restart


def test_ema_and_improved() -> None:
    assert ema(None, 4.0, 0.9) == 4.0
    assert ema(4.0, 2.0, 0.75) == 3.5
    assert improved(0.89, 1.0, 0.1)
    assert not improved(0.9, 1.0, 0.1)
    assert improved(-1.2, -1.0, 0.1)  # relative to |best| for negative losses too


# --- policies --------------------------------------------------------------------------------


def test_constant_and_rescale_clamped() -> None:
    policy = ConstantLR(base_lr=0.01, min_lr=0.001, max_lr=0.05)
    assert [policy.step(1.0) for _ in range(3)] == [0.01, 0.01, 0.01]
    assert policy.steps == 3
    assert policy.rescale(3.0) == pytest.approx(0.03)
    assert policy.rescale(10.0) == 0.05
    assert policy.rescale(1e-9) == 0.001
    with pytest.raises(ValueError, match="factor"):
        policy.rescale(0.0)
    assert ConstantLR(base_lr=1.0, min_lr=0.001, max_lr=0.05).lr == 0.05


def test_step_decay_policy_sequence_and_floor() -> None:
    policy = StepDecayLR(base_lr=0.1, min_lr=0.02, max_lr=1.0, step_size=2, gamma=0.5)
    assert policy.lr == 0.1
    assert [policy.step(None) for _ in range(6)] == pytest.approx(
        [0.1, 0.05, 0.05, 0.025, 0.025, 0.02]
    )


def test_rescaled_schedule_continues_from_the_new_level() -> None:
    policy = StepDecayLR(base_lr=0.1, min_lr=1e-6, max_lr=1.0, step_size=2, gamma=0.5)
    policy.step()
    policy.step()
    assert policy.lr == pytest.approx(0.05)
    assert policy.rescale(4.0) == pytest.approx(0.2)  # e.g. a boost after drift
    policy.step()
    policy.step()
    assert policy.lr == pytest.approx(0.1)  # and the schedule settles it as usual


def test_exponential_policy() -> None:
    policy = ExponentialLR(base_lr=0.1, min_lr=1e-6, max_lr=1.0, step_size=4, gamma=0.5)
    assert [policy.step() for _ in range(4)] == pytest.approx(
        [0.1 * 0.5 ** (s / 4) for s in range(1, 5)]
    )


def test_cosine_policy_cycles_between_min_and_base() -> None:
    policy = CosineRestartsLR(base_lr=1.0, min_lr=0.2, max_lr=2.0, cycle_steps=2, cycle_mult=2.0)
    # cycles of 2 then 4 steps
    assert [policy.lr] + [policy.step() for _ in range(6)] == pytest.approx(
        [1.0, 0.6, 1.0, 0.2 + 0.8 * (1 + math.cos(math.pi / 4)) / 2, 0.6, 0.2 + 0.8 * 0.1464466, 1]
    )


def adaptive(**overrides: float) -> AdaptiveLR:
    options: dict[str, float] = {
        "base_lr": 0.1,
        "min_lr": 0.01,
        "max_lr": 0.3,
        "smoothing": 0.0,
        "patience": 3,
        "decrease_factor": 0.5,
        "increase_factor": 2.0,
        "improve_streak": 2,
        "threshold": 0.1,
    } | overrides
    return AdaptiveLR(**options)  # type: ignore[arg-type]


def test_adaptive_grows_on_a_streak_and_shrinks_on_a_plateau() -> None:
    policy = adaptive()
    assert policy.step(1.0) == 0.1  # the first loss is the reference
    assert policy.step(0.8) == 0.1  # improving 1
    assert policy.step(0.6) == pytest.approx(0.2)  # improving 2: grow
    assert policy.step(0.59) == pytest.approx(0.2)  # less than 10% better: not improving
    assert policy.step(0.6) == pytest.approx(0.2)
    assert policy.step(0.6) == pytest.approx(0.1)  # patience 3 reached: shrink
    assert policy.state_dict() == {
        "policy": "adaptive",
        "steps": 6,
        "base_lr": pytest.approx(0.1),
        "ema": 0.6,
        "best": 0.6,  # reset to the current level
        "bad_steps": 0,
        "streak": 0,
    }
    assert policy.step(0.5) == pytest.approx(0.1)  # improves on the new reference
    assert policy.state_dict()["streak"] == 1


def test_adaptive_smooths_and_ignores_missing_losses() -> None:
    policy = adaptive(smoothing=0.5, patience=2)
    policy.step(1.0)
    for loss in (None, math.nan, math.inf, -math.inf):
        assert policy.step(loss) == 0.1
    assert policy.smoothed_loss == 1.0
    assert policy.state_dict()["bad_steps"] == 0
    policy.step(3.0)
    assert policy.smoothed_loss == 2.0
    assert policy.steps == 6


def test_adaptive_rescale_restarts_plateau_tracking() -> None:
    policy = adaptive()
    for loss in (1.0, 1.0, 1.0):
        policy.step(loss)
    assert policy.state_dict()["bad_steps"] == 2
    assert policy.rescale(2.0) == pytest.approx(0.2)
    assert policy.state_dict()["best"] is None
    policy.step(5.0)  # the new level becomes the reference, not a plateau step
    assert policy.state_dict()["best"] == 5.0
    assert policy.lr == pytest.approx(0.2)


def test_load_state_of_another_policy_fails() -> None:
    state = ConstantLR(base_lr=0.1, min_lr=0.01, max_lr=1.0).state_dict()
    with pytest.raises(ValueError, match="policy 'constant', not 'adaptive'"):
        adaptive().load_state_dict(state)
    with pytest.raises(ValueError, match="steps"):
        ConstantLR(base_lr=0.1, min_lr=0.01, max_lr=1.0).load_state_dict(state | {"steps": -1})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_lr": 0.5, "max_lr": 0.1}, "min_lr"),
        ({"min_lr": 0.0}, "min_lr"),
        ({"base_lr": math.nan}, "base_lr"),
    ],
)
def test_invalid_bounds(kwargs: dict[str, float], message: str) -> None:
    options = {"base_lr": 0.1, "min_lr": 0.01, "max_lr": 1.0} | kwargs
    with pytest.raises(ValueError, match=message):
        ConstantLR(**options)


def test_make_lr_policy_from_settings() -> None:
    kinds = {
        "constant": ConstantLR,
        "step": StepDecayLR,
        "exponential": ExponentialLR,
        "cosine_restarts": CosineRestartsLR,
        "adaptive": AdaptiveLR,
    }
    for name, kind in kinds.items():
        policy = make_lr_policy(LRSettings(policy=name), base_lr=0.002)
        assert type(policy) is kind
        bounds = (2e-4, 0.02) if name == "adaptive" else (1e-6, 0.1)  # adaptive: relative
        assert (policy.lr, policy.min_lr, policy.max_lr, policy.name) == (0.002, *bounds, name)
    step = make_lr_policy(LRSettings(policy="step", step_size=7, gamma=0.3), base_lr=5.0)
    assert isinstance(step, StepDecayLR)
    assert (step.step_size, step.gamma, step.lr) == (7, 0.3, 0.1)  # base clamped to max_lr
    adaptive_policy = make_lr_policy(LRSettings(patience=4, smoothing=0.5), base_lr=0.01)
    assert isinstance(adaptive_policy, AdaptiveLR)
    assert (adaptive_policy.patience, adaptive_policy.smoothing) == (4, 0.5)


# --- properties ------------------------------------------------------------------------------

bounds = st.tuples(st.floats(1e-7, 1.0), st.floats(1.0, 1e3), st.floats(1e-8, 10.0)).map(
    lambda t: (t[0], t[0] * t[1], t[2])
)  # min_lr, max_lr >= min_lr, base_lr anywhere

PolicyMaker = Callable[[], LRPolicy]


@st.composite
def policy_makers(draw: st.DrawFn) -> PolicyMaker:
    min_lr, max_lr, base_lr = draw(bounds)
    limits = {"base_lr": base_lr, "min_lr": min_lr, "max_lr": max_lr}
    kind = draw(st.sampled_from(["constant", "step", "exponential", "cosine", "adaptive"]))
    if kind == "constant":
        return lambda: ConstantLR(**limits)
    if kind in ("step", "exponential"):
        decay = StepDecayLR if kind == "step" else ExponentialLR
        size, gamma = draw(st.integers(1, 5)), draw(st.floats(0.01, 1.0))
        return lambda: decay(step_size=size, gamma=gamma, **limits)
    if kind == "cosine":
        cycle, mult = draw(st.integers(1, 5)), draw(st.floats(1.0, 3.0))
        return lambda: CosineRestartsLR(cycle_steps=cycle, cycle_mult=mult, **limits)
    options = {
        "smoothing": draw(st.floats(0.0, 0.99)),
        "patience": draw(st.integers(1, 4)),
        "decrease_factor": draw(st.floats(0.01, 0.99)),
        "increase_factor": draw(st.floats(1.0, 10.0)),
        "improve_streak": draw(st.integers(1, 4)),
        "threshold": draw(st.floats(0.0, 0.5)),
    }
    return lambda: AdaptiveLR(**options, **limits)  # type: ignore[arg-type]


losses = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.floats(0.0, 10.0))
operations = st.lists(st.one_of(losses, st.tuples(st.just("rescale"), st.floats(1e-3, 1e3))))


def apply(policy: LRPolicy, operation: float | tuple[str, float] | None) -> float:
    if isinstance(operation, tuple):
        return policy.rescale(operation[1])
    return policy.step(operation)


@given(make=policy_makers(), ops=operations)
def test_lr_always_within_bounds(
    make: PolicyMaker, ops: list[float | tuple[str, float] | None]
) -> None:
    policy = make()
    assert policy.min_lr <= policy.lr <= policy.max_lr
    for operation in ops:
        rate = apply(policy, operation)
        assert policy.min_lr <= rate <= policy.max_lr
        assert rate == policy.lr


@given(make=policy_makers(), ops=operations, data=st.data())
def test_restored_policy_continues_identically(
    make: PolicyMaker, ops: list[float | tuple[str, float] | None], data: st.DataObject
) -> None:
    split = data.draw(st.integers(0, len(ops)))
    uninterrupted = make()
    expected = [apply(uninterrupted, op) for op in ops]
    first = make()
    before = [apply(first, op) for op in ops[:split]]
    state = json.loads(json.dumps(first.state_dict(), allow_nan=False))
    restored = make()
    restored.load_state_dict(state)
    after = [apply(restored, op) for op in ops[split:]]
    assert before + after == expected
    assert restored.state_dict() == uninterrupted.state_dict()


def test_the_default_adaptive_policy_never_starves_and_recovers() -> None:
    policy = make_lr_policy(LRSettings(), base_lr=1e-3)
    rng = random.Random(0)
    rates = [policy.step(1.0 + rng.random()) for _ in range(5_000)]  # noise, never improving
    assert min(rates) == pytest.approx(1e-4), "floored at min_scale x the base rate"
    assert rates[-1] == pytest.approx(1e-4)
    loss = 1.0
    for _ in range(2_000):  # a steady improvement raises it again
        loss *= 0.995
        policy.step(loss)
    assert policy.lr > 3e-4
    assert policy.lr <= 1e-2 + 1e-12, "and never past max_scale x the base rate"
