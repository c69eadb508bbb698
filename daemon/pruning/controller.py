"""The keep / recover / roll back decision, as a small state machine driven by calls.

The loop tells it what happens; it says what to do next. No threads, no model, only numbers:

* ``idle``: :meth:`PruningController.observe_loss` feeds the recent prequential loss of the
  unpruned model (the baseline, over the last ``baseline_events`` events).
  :meth:`~PruningController.should_prune` says when a pruning event is due (trigger fired,
  baseline full, schedule not finished).
* The loop prunes and fine-tunes, then calls :meth:`~PruningController.pruned`: ``verifying``.
* ``verifying``: the prequential loss of the next ``verify_events`` events (the pruned model's)
  is compared with the reference: the baseline, or, when the loop passes it, the unpruned
  model's loss on the very same events (drift-proof). Within
  ``reference * (1 + tolerance) + abs_tolerance`` the verdict is ``keep``; otherwise
  ``recover`` while recoveries are left (the loop restores some pruned weights, fine-tunes
  and calls :meth:`~PruningController.recovered`), else ``rollback``.
* ``done``: the schedule finished, or too many consecutive rollbacks (the target is out of
  reach); nothing is pruned any more.

Outcomes for ``driftd_prune_total{outcome}``: ``kept`` (first try), ``recovered`` (kept after
recovering), ``rolled_back``, and ``interrupted`` (kept unjudged: a restart or a domain change
cut the verification short).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Phase = Literal["idle", "verifying", "recovering", "done"]
Action = Literal["wait", "keep", "recover", "rollback"]
Outcome = Literal["kept", "recovered", "rolled_back"]


class StepTrigger(Protocol):
    """When pruning is due: :class:`driftd.triggers.EveryNStepsOrTSeconds` fits."""

    def due(self, step: int) -> bool:
        """Whether it fires at ``step``."""
        ...

    def fired(self, step: int) -> None:
        """Start counting again from ``step``."""
        ...


@dataclass(frozen=True)
class Verdict:
    """What to do after an observation.

    Attributes:
        action: ``wait`` (nothing to do), ``keep``, ``recover`` or ``rollback``.
        outcome: The final outcome of a pruning event (``keep``/``rollback`` only).
        pruned_loss: Mean loss of the pruned model over the verification window.
        reference_loss: What it was compared with.
        attempt: Recoveries made so far in this pruning event.
    """

    action: Action
    outcome: Outcome | None = None
    pruned_loss: float | None = None
    reference_loss: float | None = None
    attempt: int = 0


_WAIT = Verdict("wait")


class PruningController:
    """Decides when to prune and whether a pruned model is kept (see the module docstring).

    Args:
        trigger: When a pruning event is due (every N steps or T seconds).
        n_events: Pruning events of the schedule.
        tolerance: Allowed relative rise of the loss over the reference.
        abs_tolerance: Allowed absolute rise on top (for losses near zero).
        baseline_events: Events of unpruned loss needed before pruning (the baseline).
        verify_events: Events the pruned model is judged on.
        max_recoveries: Recover-and-retry rounds before rolling back (0: roll back at once).
        max_consecutive_rollbacks: Rollbacks in a row after which pruning stops.
    """

    def __init__(
        self,
        *,
        trigger: StepTrigger,
        n_events: int,
        tolerance: float = 0.05,
        abs_tolerance: float = 0.0,
        baseline_events: int = 512,
        verify_events: int = 512,
        max_recoveries: int = 2,
        max_consecutive_rollbacks: int = 3,
    ) -> None:
        if n_events < 1 or baseline_events < 1 or verify_events < 1:
            raise ValueError("n_events, baseline_events and verify_events must be at least 1")
        if tolerance < 0 or abs_tolerance < 0 or max_recoveries < 0:
            raise ValueError("tolerances and max_recoveries must not be negative")
        if max_consecutive_rollbacks < 1:
            raise ValueError("max_consecutive_rollbacks must be at least 1")
        self.trigger = trigger
        self.n_events = n_events
        self.tolerance, self.abs_tolerance = tolerance, abs_tolerance
        self.baseline_events, self.verify_events = baseline_events, verify_events
        self.max_recoveries = max_recoveries
        self.max_consecutive_rollbacks = max_consecutive_rollbacks
        self.phase: Phase = "idle"
        self.event = 0  # pruning events kept: the schedule's position
        self.attempt = 0
        self.counts: dict[str, int] = {
            "kept": 0,
            "recovered": 0,
            "rolled_back": 0,
            "interrupted": 0,
        }
        self.consecutive_rollbacks = 0
        self.last_fired_step = 0
        self.reference_loss: float | None = None
        self._baseline: deque[tuple[float, int]] = deque()
        self._baseline_n = 0
        self._verify = [0.0, 0, 0.0, 0]  # loss sum, events, reference sum, events with reference

    @property
    def busy(self) -> bool:
        """Whether a pruning event is being verified or recovered."""
        return self.phase in ("verifying", "recovering")

    @property
    def baseline_loss(self) -> float | None:
        """Mean loss of the unpruned model over the recent baseline window."""
        if self._baseline_n == 0:
            return None
        return sum(total for total, _ in self._baseline) / self._baseline_n

    def should_prune(self, step: int) -> bool:
        """Whether to start a pruning event now."""
        return (
            self.phase == "idle"
            and self._baseline_n >= self.baseline_events
            and self.trigger.due(step)
        )

    def skipped(self, step: int) -> None:
        """The loop found nothing to prune at a due event: wait for the next trigger."""
        self.trigger.fired(step)
        self.last_fired_step = step

    def pruned(self, step: int) -> None:
        """The model was pruned and fine-tuned: judge it on the next events.

        Raises:
            RuntimeError: Not idle.
        """
        if self.phase != "idle":
            raise RuntimeError(f"pruned() while {self.phase}")
        self.skipped(step)
        self.reference_loss = self.baseline_loss
        self.phase, self.attempt = "verifying", 0
        self._verify = [0.0, 0, 0.0, 0]

    def recovered(self) -> None:
        """Pruned weights were restored and the model fine-tuned again: judge it afresh.

        Raises:
            RuntimeError: No recovery was asked for.
        """
        if self.phase != "recovering":
            raise RuntimeError(f"recovered() while {self.phase}")
        self.phase = "verifying"
        self.attempt += 1
        self._verify = [0.0, 0, 0.0, 0]

    def forget_baseline(self) -> None:
        """The loss level changed for another reason (a new domain): measure it afresh.

        No pruning starts until ``baseline_events`` events of the new level are known.
        """
        self._baseline.clear()
        self._baseline_n = 0

    def interrupted(self) -> None:
        """The event under verification ends unjudged (a restart, or the domain changed).

        The pruned model stays, so the schedule moves on as if it had been kept (otherwise the
        next event would target the sparsity the model already has and never advance); the
        outcome is counted as ``interrupted``.
        """
        if not self.busy:
            return
        self.counts["interrupted"] = self.counts.get("interrupted", 0) + 1
        self.event += 1
        self._baseline.clear()
        self._baseline_n = 0
        self.phase = "done" if self.event >= self.n_events else "idle"
        self.attempt = 0

    def observe_loss(
        self, loss_sum: float, n_events: int, reference_loss_sum: float | None = None
    ) -> Verdict:
        """Record a batch's prequential loss (a sum over ``n_events`` labelled events).

        Args:
            loss_sum: Summed per-event loss of the live model.
            n_events: Labelled events in it (0: nothing happens).
            reference_loss_sum: While verifying, the unpruned model's summed loss on the same
                events, if the loop evaluates it (then it is the reference, not the baseline).
        """
        if n_events <= 0 or self.phase == "recovering":
            return _WAIT
        if self.phase != "verifying":
            self._add_baseline(loss_sum, n_events)
            return _WAIT
        self._verify[0] += loss_sum
        self._verify[1] += n_events
        if reference_loss_sum is not None:
            self._verify[2] += reference_loss_sum
            self._verify[3] += n_events
        if math.isfinite(loss_sum) and self._verify[1] < self.verify_events:
            return _WAIT
        return self._decide()

    def _decide(self) -> Verdict:
        total, n, reference_total, reference_n = self._verify
        pruned_loss = total / n
        reference = reference_total / reference_n if reference_n == n else self.reference_loss
        within = math.isfinite(pruned_loss) and (
            reference is None
            or pruned_loss <= reference * (1.0 + self.tolerance) + self.abs_tolerance
        )
        if within:
            outcome: Outcome = "kept" if self.attempt == 0 else "recovered"
            self.event += 1
            self.consecutive_rollbacks = 0
            self._baseline.clear()  # the next baseline is the pruned model's level
            self._baseline_n = 0
            self.phase = "done" if self.event >= self.n_events else "idle"
            return self._counted(Verdict("keep", outcome, pruned_loss, reference, self.attempt))
        if self.attempt < self.max_recoveries:
            self.phase = "recovering"
            return Verdict("recover", None, pruned_loss, reference, self.attempt)
        self.consecutive_rollbacks += 1
        out_of_reach = self.consecutive_rollbacks >= self.max_consecutive_rollbacks
        self.phase = "done" if out_of_reach else "idle"
        return self._counted(
            Verdict("rollback", "rolled_back", pruned_loss, reference, self.attempt)
        )

    def _counted(self, verdict: Verdict) -> Verdict:
        assert verdict.outcome is not None
        self.counts[verdict.outcome] += 1
        return verdict

    def _add_baseline(self, loss_sum: float, n_events: int) -> None:
        if not math.isfinite(loss_sum):
            return
        self._baseline.append((loss_sum, n_events))
        self._baseline_n += n_events
        while self._baseline and self._baseline_n - self._baseline[0][1] >= self.baseline_events:
            self._baseline_n -= self._baseline.popleft()[1]

    def state_dict(self) -> dict[str, Any]:
        """JSON-ready state (the trigger's clock is not saved: it restarts from the last step)."""
        return {
            "phase": self.phase,
            "event": self.event,
            "attempt": self.attempt,
            "counts": dict(self.counts),
            "consecutive_rollbacks": self.consecutive_rollbacks,
            "last_fired_step": self.last_fired_step,
            "reference_loss": self.reference_loss,
            "baseline": [list(item) for item in self._baseline],
            "verify": list(self._verify),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output.

        A pruning event that was being verified cannot resume (the unpruned model it would
        roll back to is not part of a snapshot): it ends as :meth:`interrupted`.
        """
        self.phase = state["phase"]
        self.event = int(state["event"])
        self.attempt = int(state["attempt"])
        self.counts = {key: int(value) for key, value in state["counts"].items()}
        self.consecutive_rollbacks = int(state["consecutive_rollbacks"])
        self.last_fired_step = int(state["last_fired_step"])
        self.reference_loss = state["reference_loss"]
        self._baseline = deque((float(total), int(n)) for total, n in state["baseline"])
        self._baseline_n = sum(n for _, n in self._baseline)
        total, n, reference_total, reference_n = state["verify"]
        self._verify = [float(total), int(n), float(reference_total), int(reference_n)]
        self.interrupted()
        self.trigger.fired(self.last_fired_step)
