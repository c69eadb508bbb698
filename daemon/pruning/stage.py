"""The pruning stage of the training loop: a :class:`~driftd.pruning.Pruner` on the live learner.

After every learning step the loop hands the stage the batch it scored. The stage feeds the
batch's prequential loss (and, while a pruned model is verified, the unpruned model's loss on
the same events) to the pruner, which keeps, recovers or rolls back; it remembers the last
``replay_events`` labelled events for fine-tuning; and it starts the next pruning event when one
is due. After every optimizer step of the learner (scored or replayed), the pruner re-zeroes
masked weights and accumulates Taylor scores.

Everything here is part of a snapshot (masks, schedule position, controller, recent window,
random state), so a restart continues exactly; a snapshot is never taken while a pruned model is
being verified (:attr:`PruningStage.busy`), except the final one at shutdown.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from driftd.adaptation.replay import ReplayBuffer
from driftd.learning.learner import OnlineLearner, StepReport
from driftd.learning.models import count_parameters, sparsity
from driftd.learning.tensor_state import TensorState
from driftd.ports import Telemetry
from driftd.pruning import Pruner, PruneReport, Verdict, flops_per_event

log = logging.getLogger("driftd.pruning")


@dataclass(frozen=True)
class PruningOutcome:
    """What the stage did after a step: an event started, and/or a verdict reached."""

    pruned: PruneReport | None = None
    verdict: Verdict | None = None


_NOTHING = PruningOutcome()


class PruningStage:
    """Drives a pruner from the loop (see the module docstring).

    Args:
        pruner: The pruning cycle.
        learner: The live learner (its model may be replaced by structured pruning).
        replay_events: Recent labelled events kept for fine-tuning.
        generator: The pruner's random source (its state is saved here).
        on_settle: Called when an event ends keeping the pruned shapes (kept or interrupted).
    """

    def __init__(
        self,
        pruner: Pruner,
        learner: OnlineLearner,
        *,
        replay_events: int,
        generator: torch.Generator,
        on_settle: Callable[[], None] | None = None,
    ) -> None:
        self.pruner = pruner
        self.learner = learner
        self.generator = generator
        self.window = ReplayBuffer(replay_events, mode="sliding", generator=generator)
        self._on_settle = on_settle
        learner.after_step_hooks.append(self._after_step)

    @property
    def busy(self) -> bool:
        """Whether a pruned model is under verification (no snapshot should catch it)."""
        return self.pruner.busy

    def after_batch(
        self, x: torch.Tensor, y: torch.Tensor, labelled: torch.Tensor, report: StepReport
    ) -> PruningOutcome:
        """Judge, remember and maybe prune after the learner's step on ``(x, y)``."""
        if report.n_learned == 0:  # nothing labelled, or a skipped (non-finite) step
            return _NOTHING
        learner = self.learner
        if report.n_learned != len(x):
            x, y = x[labelled], y[labelled]
        x, y = x.to(learner.device), y.to(learner.device)
        reference = self.pruner.reference_loss_sum(x, y, learner)
        loss_sum = float(report.event_losses.sum())
        verdict = self.pruner.observe(learner, loss_sum, len(x), self._replay, reference)
        self.window.extend(x.cpu(), y.cpu())
        if verdict.action == "keep":
            self._settled()
        if verdict.action != "wait" or not self.pruner.due(learner.steps):
            return PruningOutcome(verdict=None if verdict.action == "wait" else verdict)
        return PruningOutcome(pruned=self.pruner.prune(learner.steps, learner, self._replay))

    def adapted(self) -> bool:
        """The adaptation acted (the domain changed): True if a verification ended unjudged.

        A verification in progress ends ``interrupted`` (its comparison lost its meaning);
        otherwise the unpruned baseline is measured afresh, so the next pruning event waits for
        ``baseline_events`` of the new domain instead of starting while the model re-adapts.
        """
        if not self.pruner.interrupt():
            self.pruner.controller.forget_baseline()
            return False
        self._settled()
        return True

    def summary(self) -> dict[str, Any]:
        """Sizes, sparsity, FLOPs and outcomes of the live model (for metrics and manifest)."""
        return self.pruner.summary(self.learner.model)

    def _settled(self) -> None:
        if self._on_settle is not None:
            self._on_settle()

    def _after_step(self) -> None:
        self.pruner.after_step(self.learner.model, self.learner.optimizer)

    def _replay(self) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.window.since(0)
        return x.to(self.learner.device), y.to(self.learner.device)

    def state_dict(self) -> TensorState:
        """Tensors (masks, Taylor scores, recent window, random state) and JSON metadata."""
        pruner_tensors, pruner_meta = self.pruner.state_dict()
        window_tensors, window_meta = self.window.state_dict()
        tensors = {"generator": self.generator.get_state()}
        tensors |= {f"pruner.{key}": value for key, value in pruner_tensors.items()}
        tensors |= {f"window.{key}": value for key, value in window_tensors.items()}
        meta = {"pruner": pruner_meta, "window": window_meta, "summary": self.summary()}
        return tensors, meta

    def load_state_dict(self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output (a verification in progress ends interrupted)."""
        self.generator.set_state(tensors["generator"])
        self.pruner.load_state_dict(_part(tensors, "pruner."), meta["pruner"])
        self.window.load_state_dict(_part(tensors, "window."), meta["window"])


def _part(tensors: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key[len(prefix) :]: value for key, value in tensors.items() if key.startswith(prefix)}


def report_pruning(
    outcome: PruningOutcome, stage: PruningStage, telemetry: Telemetry, *, step: int
) -> None:
    """Count and log what the stage did; expose the model's new size when it changed."""
    pruned, verdict = outcome.pruned, outcome.verdict
    if pruned is not None:
        log.info(
            "pruned at step %d towards %s: %d removed, %d parameters; verifying",
            step, _targets_text(pruned.targets), pruned.removed, pruned.parameters,
            extra={"event": "pruned", "step": step, "targets": pruned.targets,
                   "removed": pruned.removed, "parameters": pruned.parameters,
                   "fine_tune_loss": pruned.fine_tune_loss},
        )  # fmt: skip
    if verdict is not None:
        if verdict.outcome is not None:
            telemetry.pruned(verdict.outcome)
        log.info(
            "pruning verdict at step %d: %s (loss %.4g vs reference %s, attempt %d)",
            step, verdict.outcome or verdict.action, verdict.pruned_loss or math.nan,
            "none" if verdict.reference_loss is None else f"{verdict.reference_loss:.4g}",
            verdict.attempt,
            extra={"event": "prune_verdict", "step": step, "action": verdict.action,
                   "outcome": verdict.outcome, "pruned_loss": verdict.pruned_loss,
                   "reference_loss": verdict.reference_loss, "attempt": verdict.attempt},
        )  # fmt: skip
    if pruned is not None or verdict is not None:
        report_model_size(stage, telemetry)


def report_interrupted(stage: PruningStage, telemetry: Telemetry, *, step: int) -> None:
    """A verification ended unjudged because the adaptation changed the domain."""
    telemetry.pruned("interrupted")
    log.info(
        "pruning verification interrupted at step %d by an adaptation: the pruned model stays",
        step, extra={"event": "prune_verdict", "step": step, "action": "interrupt",
                     "outcome": "interrupted"},
    )  # fmt: skip
    report_model_size(stage, telemetry)


def report_model_size(stage: PruningStage, telemetry: Telemetry) -> None:
    """Parameters, sparsity and FLOPs per event of the live model."""
    model = stage.learner.model
    telemetry.model_shape(count_parameters(model), sparsity(model))
    telemetry.model_flops(flops_per_event(model)["dense"])


def _targets_text(targets: dict[str, float]) -> str:
    return ", ".join(f"{part} {value:.0%}" for part, value in targets.items())
