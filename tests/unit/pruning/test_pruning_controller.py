"""PruningController: keep / recover / roll back on crafted loss sequences; JSON state."""

from __future__ import annotations

import json

import pytest

from driftd.pruning import PruningController
from driftd.triggers import EveryNStepsOrTSeconds
from tests.fakes import FakeClock


def controller(**overrides: object) -> PruningController:
    trigger = EveryNStepsOrTSeconds(every_steps=10, every_seconds=None, clock=FakeClock())
    settings: dict[str, object] = {
        "trigger": trigger, "n_events": 3, "tolerance": 0.1, "baseline_events": 100,
        "verify_events": 100, "max_recoveries": 1, "max_consecutive_rollbacks": 2,
    }  # fmt: skip
    return PruningController(**(settings | overrides))  # type: ignore[arg-type]


def feed(c: PruningController, mean_losses: list[float], n: int = 50) -> list[str]:
    """Observe batches of ``n`` events with the given mean loss; return the actions."""
    return [c.observe_loss(loss * n, n).action for loss in mean_losses]


def started(c: PruningController, step: int = 10) -> None:
    feed(c, [1.0, 1.0])  # baseline: 100 events at loss 1.0
    assert c.should_prune(step)
    c.pruned(step)


def test_waits_for_the_trigger_and_a_full_baseline() -> None:
    c = controller()
    assert not c.should_prune(10)  # no baseline yet
    feed(c, [1.0])
    assert not c.should_prune(10)  # 50 of 100 events
    feed(c, [1.0])
    assert not c.should_prune(9)  # trigger not due
    assert c.should_prune(10)
    assert c.baseline_loss == pytest.approx(1.0)


def test_a_new_domain_waits_for_a_fresh_baseline() -> None:
    """After an adaptation the old loss level means nothing: no pruning until re-measured."""
    c = controller()
    feed(c, [1.0, 1.0])
    assert c.should_prune(10)
    c.forget_baseline()
    assert c.baseline_loss is None
    assert not c.should_prune(10)
    feed(c, [0.4, 0.4])
    assert c.should_prune(10)
    assert c.baseline_loss == pytest.approx(0.4)


def test_an_interrupted_event_moves_the_schedule_on() -> None:
    """Kept unjudged: the next event targets the next sparsity, not the one already reached."""
    c = controller()
    started(c)
    assert c.busy
    c.interrupted()
    assert (c.phase, c.event, c.counts["interrupted"]) == ("idle", 1, 1)
    assert c.baseline_loss is None


def test_keeps_a_pruned_model_within_tolerance() -> None:
    c = controller()
    started(c)
    assert c.busy
    assert not c.should_prune(100)
    assert feed(c, [1.05]) == ["wait"]
    verdict = c.observe_loss(1.08 * 50, 50)
    assert (verdict.action, verdict.outcome) == ("keep", "kept")
    assert verdict.pruned_loss == pytest.approx(1.065)
    assert verdict.reference_loss == pytest.approx(1.0)
    assert (c.event, c.phase, c.counts["kept"]) == (1, "idle", 1)
    assert c.baseline_loss is None  # the next baseline is the pruned model's
    assert not c.should_prune(20)  # and must fill again first


def test_recovers_then_keeps_as_recovered() -> None:
    c = controller()
    started(c)
    verdict = feed(c, [1.3, 1.3])
    assert verdict == ["wait", "recover"]
    assert c.phase == "recovering"
    assert feed(c, [5.0]) == ["wait"]  # ignored until the loop says it recovered
    c.recovered()
    last = c.observe_loss(1.0 * 50, 50), c.observe_loss(1.1 * 50, 50)
    assert last[1].action == "keep"
    assert (last[1].outcome, last[1].attempt) == ("recovered", 1)
    assert c.counts == {"kept": 0, "recovered": 1, "rolled_back": 0, "interrupted": 0}


def test_rolls_back_when_recoveries_do_not_help_and_stops_after_repeated_rollbacks() -> None:
    c = controller()
    started(c)
    assert feed(c, [2.0, 2.0]) == ["wait", "recover"]
    c.recovered()
    verdict = c.observe_loss(2.0 * 100, 100)
    assert (verdict.action, verdict.outcome, verdict.attempt) == ("rollback", "rolled_back", 1)
    assert (c.phase, c.event) == ("idle", 0)  # the schedule did not advance
    assert c.baseline_loss == pytest.approx(1.0)  # the unpruned model's level still holds
    assert c.should_prune(20)
    c.pruned(20)
    assert feed(c, [3.0, 3.0]) == ["wait", "recover"]
    c.recovered()
    assert c.observe_loss(300.0, 100).action == "rollback"
    assert c.phase == "done"  # two rollbacks in a row: the target is out of reach
    assert not c.should_prune(1000)


def test_without_recoveries_a_bad_prune_rolls_back_at_once() -> None:
    c = controller(max_recoveries=0)
    started(c)
    assert feed(c, [1.2, 1.2]) == ["wait", "rollback"]


def test_non_finite_loss_fails_at_once() -> None:
    c = controller()
    started(c)
    assert c.observe_loss(float("nan"), 10).action == "recover"


def test_reference_on_the_same_events_replaces_the_baseline() -> None:
    c = controller()
    started(c)  # baseline 1.0; then drift lifts every loss
    c.observe_loss(2.0 * 50, 50, reference_loss_sum=1.9 * 50)
    verdict = c.observe_loss(2.0 * 50, 50, reference_loss_sum=1.9 * 50)
    assert verdict.action == "keep"  # 2.0 <= 1.9 * 1.1, though far above the old baseline
    assert verdict.reference_loss == pytest.approx(1.9)


def test_schedule_ends_after_n_kept_events() -> None:
    c = controller(n_events=2)
    for step in (10, 20):
        started(c, step)
        assert feed(c, [1.0, 1.0])[-1] == "keep"
    assert c.phase == "done"
    assert not c.should_prune(1000)


def test_state_round_trips_through_json_and_an_interrupted_event_is_not_resumed() -> None:
    c = controller()
    started(c)
    assert feed(c, [1.3, 1.3])[-1] == "recover"
    c.recovered()
    feed(c, [1.0])
    idle = controller()
    idle_state = json.loads(json.dumps(c.state_dict() | {"phase": "idle"}))
    idle.load_state_dict(idle_state)
    assert idle.state_dict() == c.state_dict() | {"phase": "idle"}
    restored = controller()
    restored.load_state_dict(json.loads(json.dumps(c.state_dict())))
    assert (restored.phase, restored.attempt, restored.counts["interrupted"]) == ("idle", 0, 1)
    assert restored.last_fired_step == 10
    assert not restored.should_prune(19)  # the trigger restarts from the saved step
