"""EveryNStepsOrTSeconds: fires on steps or on seconds, whichever comes first."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from driftd.triggers import EveryNStepsOrTSeconds
from tests.fakes import FakeClock


def schedule(
    clock: FakeClock, *, every_steps: int | None, every_seconds: float | None
) -> EveryNStepsOrTSeconds:
    return EveryNStepsOrTSeconds(every_steps=every_steps, every_seconds=every_seconds, clock=clock)


def test_fake_clock_moves_only_when_advanced() -> None:
    clock = FakeClock(monotonic=5.0, epoch=1_700_000_000.0)
    assert (clock.monotonic(), clock.time()) == (5.0, 1_700_000_000.0)
    clock.advance(2.5)
    assert (clock.monotonic(), clock.time()) == (7.5, 1_700_000_002.5)
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1.0)
    assert clock.monotonic() == 7.5


def test_fires_every_n_steps_and_stays_due_until_fired() -> None:
    trigger = schedule(FakeClock(), every_steps=3, every_seconds=None)
    assert [trigger.due(step) for step in range(5)] == [False, False, False, True, True]
    trigger.fired(3)
    assert [trigger.due(step) for step in (4, 5, 6, 7)] == [False, False, True, True]
    trigger.fired(7)
    assert trigger.due(9) is False
    assert trigger.due(10) is True


def test_fires_every_t_seconds() -> None:
    clock = FakeClock()
    trigger = schedule(clock, every_steps=None, every_seconds=10.0)
    assert trigger.due(0) is False
    clock.advance(9.5)
    assert trigger.due(0) is False
    clock.advance(0.5)
    assert trigger.due(0) is True
    trigger.fired(0)
    assert trigger.due(0) is False
    clock.advance(9.0)
    assert trigger.due(0) is False
    clock.advance(1.0)
    assert trigger.due(0) is True


def test_seconds_only_schedule_ignores_steps() -> None:
    trigger = schedule(FakeClock(), every_steps=None, every_seconds=1.0)
    assert trigger.due(10**9) is False


def test_steps_only_schedule_ignores_time() -> None:
    clock = FakeClock()
    trigger = schedule(clock, every_steps=5, every_seconds=None)
    clock.advance(10**9)
    assert trigger.due(4) is False
    assert trigger.due(5) is True


def test_without_bounds_it_never_fires() -> None:
    clock = FakeClock()
    trigger = schedule(clock, every_steps=None, every_seconds=None)
    clock.advance(10**9)
    assert trigger.due(10**9) is False


def test_seconds_win_when_they_come_first() -> None:
    clock = FakeClock()
    trigger = schedule(clock, every_steps=100, every_seconds=5.0)
    clock.advance(5.0)
    assert trigger.due(1) is True
    trigger.fired(1)
    assert trigger.due(2) is False


def test_steps_win_when_they_come_first() -> None:
    clock = FakeClock()
    trigger = schedule(clock, every_steps=100, every_seconds=5.0)
    clock.advance(0.1)
    assert trigger.due(99) is False
    assert trigger.due(100) is True


def test_fired_resets_both_the_step_and_the_time_count() -> None:
    clock = FakeClock()
    trigger = schedule(clock, every_steps=3, every_seconds=5.0)
    clock.advance(4.0)
    assert trigger.due(3) is True  # on steps
    trigger.fired(3)
    clock.advance(4.0)  # 8 s since the start, but only 4 s since it fired
    assert trigger.due(4) is False
    clock.advance(1.0)
    assert trigger.due(4) is True  # on seconds
    trigger.fired(4)
    assert trigger.due(6) is False  # 2 steps since it fired
    assert trigger.due(7) is True


def test_time_counts_from_construction_not_from_clock_zero() -> None:
    clock = FakeClock(monotonic=1_000_000.0)
    trigger = schedule(clock, every_steps=None, every_seconds=30.0)
    assert trigger.due(0) is False
    clock.advance(29.0)
    assert trigger.due(0) is False


@pytest.mark.parametrize(
    ("every_steps", "every_seconds", "message"),
    [
        (0, None, "every_steps"),
        (-3, 1.0, "every_steps"),
        (None, 0.0, "every_seconds"),
        (10, -1.0, "every_seconds"),
    ],
)
def test_rejects_non_positive_bounds(
    every_steps: int | None, every_seconds: float | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        schedule(FakeClock(), every_steps=every_steps, every_seconds=every_seconds)


TICK = 1 / 64  # a power of two: sums of ticks are exact in floating point


@given(
    every_steps=st.none() | st.integers(min_value=1, max_value=20),
    every_ticks=st.none() | st.integers(min_value=1, max_value=500),
    moves=st.lists(
        st.tuples(st.integers(min_value=0, max_value=5), st.integers(min_value=0, max_value=300)),
        max_size=60,
    ),
)
def test_due_matches_a_model_of_steps_or_seconds_since_last_fire(
    every_steps: int | None, every_ticks: int | None, moves: list[tuple[int, int]]
) -> None:
    # The model counts time in integer ticks; ticks are exact binary fractions of a second, so
    # the comparison at the boundary is exact on both sides.
    clock = FakeClock(monotonic=0.0)
    trigger = schedule(
        clock,
        every_steps=every_steps,
        every_seconds=None if every_ticks is None else every_ticks * TICK,
    )
    step = now = last_step = last_fire = 0
    for steps, ticks in moves:
        step += steps
        now += ticks
        clock.advance(ticks * TICK)
        expected = (every_steps is not None and step - last_step >= every_steps) or (
            every_ticks is not None and now - last_fire >= every_ticks
        )
        assert trigger.due(step) is expected
        if expected:
            trigger.fired(step)
            last_step, last_fire = step, now
            assert trigger.due(step) is False
