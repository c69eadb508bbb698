"""The pruning cycle on a live learner: prune, fine-tune, verify, then keep, recover or roll back.

:class:`Pruner` composes the pure pieces (criteria, masks or shrinking, the cubic schedule, the
:class:`~driftd.pruning.controller.PruningController`) and acts on anything with a ``model``,
an ``optimizer`` and ``event_losses`` (an :class:`~driftd.learning.learner.OnlineLearner`). The loop
drives it, without threads, once per learning step::

    report = learner.learn_many(x, y, labelled)           # predict, score, learn
    pruner.after_step(learner.model, learner.optimizer)   # Taylor scores, masks back to zero
    reference = pruner.reference_loss_sum(x_l, y_l, learner)  # unpruned model, while verifying
    verdict = pruner.observe(learner, report.loss * n, n, replay, reference)  # keep/recover/...
    if pruner.due(learner.steps):
        pruner.prune(learner.steps, learner, replay)      # prune + fine-tune on the replay window

A structured prune replaces ``learner.model`` by a smaller model (the optimizer follows it);
recovering rebuilds from the unpruned copy with the most important (or random) removed units
back, and fine-tunes again; rolling back restores the unpruned model and optimizer.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from driftd.learning.tensor_state import TensorState
from driftd.pruning import criteria, measured, scoring
from driftd.pruning.controller import PruningController, Verdict
from driftd.pruning.cycle import PruneReport, Replay, Trainable
from driftd.pruning.distill import fine_tune
from driftd.pruning.flops import flops_per_event
from driftd.pruning.layers import unit_layers
from driftd.pruning.masks import MaskSet
from driftd.pruning.policy import PruningPolicy
from driftd.pruning.recovery import choose_restored, removed_units, removed_weights
from driftd.pruning.shrink import ShrinkResult, rebind_optimizer, shrink_model

FORMAT = 1


@dataclass
class _Pending:
    """The unpruned state of the event being verified, and how it was pruned."""

    step: int
    targets: dict[str, float]
    model: nn.Module
    optimizer: dict[str, Any]
    masks: MaskSet
    scores: dict[str, Tensor]
    keep: dict[str, Tensor]  # structured: kept units, in the unpruned model's numbering


class Pruner:
    """Periodic pruning with re-adaptation and recovery (see the module docstring).

    Args:
        policy: Criterion, scope, schedule, recovery and fine-tuning settings.
        controller: When to prune and the keep/recover/rollback decision.
        generator: Random source (shuffling, random recovery).
        on_reshape: Told whenever a structured event changes the live model's shapes: the
            shrink from the unpruned model of the event, or None when it is back (rollback).
            Whoever keeps tensors shaped like the model (stored domain heads) follows it.
    """

    def __init__(
        self,
        policy: PruningPolicy,
        controller: PruningController,
        *,
        generator: torch.Generator,
        on_reshape: Callable[[ShrinkResult | None], None] | None = None,
    ) -> None:
        self.policy = policy
        self.on_reshape = on_reshape
        self.controller = controller
        self.generator = generator
        self.masks = MaskSet()
        self.taylor = criteria.TaylorAccumulator() if policy.criterion == "taylor" else None
        self.original_units: dict[str, int] = {}
        self.shrink: ShrinkResult | None = None  # unpruned -> live model of the current event
        self._pending: _Pending | None = None

    def penalty(self, model: nn.Module) -> Tensor | None:
        """The ``sparse`` criterion's term to add to the training loss (None otherwise).

        Use either this or the proximal step of :meth:`after_step` (``proximal=True``).
        """
        return scoring.sparse_penalty(self.policy, model)

    def after_step(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, *, proximal: bool = True
    ) -> None:
        """After each optimizer step: Taylor scores, sparse proximal step, masks back to zero.

        The proximal step (``sparse`` criterion, ``proximal=True``, outside verification)
        soft-thresholds by the penalty strength times the learning rate.
        """
        if self.taylor is not None:
            self.taylor.update(model)
        if proximal and not self.controller.busy:
            lr = max(float(group["lr"]) for group in optimizer.param_groups)
            scoring.sparse_proximal_step(self.policy, model, lr)
        self.masks.enforce(model, optimizer)

    def due(self, step: int) -> bool:
        """Whether a pruning event should start now."""
        return self.controller.should_prune(step)

    def prune(self, step: int, target: Trainable, replay: Replay) -> PruneReport | None:
        """Prune towards the next scheduled sparsity, fine-tune, and start verifying.

        Returns None when there was nothing left to prune (the trigger restarts).
        """
        targets = self.policy.schedule.at(self.controller.event + 1)
        x, y = replay()
        model = target.model
        pending = _Pending(
            step, targets, copy.deepcopy(model), copy.deepcopy(target.optimizer.state_dict()),
            self.masks.copy(), {}, {},
        )  # fmt: skip
        if self.policy.structured:
            removed = self._prune_units(target, pending, x, y)
        else:
            removed = self._prune_weights(target, pending, x)
        if removed == 0:
            self.controller.skipped(step)
            return None
        self._pending = pending
        loss = self._fine_tune(target, x, y)
        self.controller.pruned(step)
        return PruneReport(step, targets, removed, _parameters(target.model), loss)

    def observe(
        self,
        target: Trainable,
        loss_sum: float,
        n_events: int,
        replay: Replay,
        reference_loss_sum: float | None = None,
    ) -> Verdict:
        """Feed a batch's prequential loss; act on the verdict (recover, roll back, keep)."""
        verdict = self.controller.observe_loss(loss_sum, n_events, reference_loss_sum)
        pending = self._pending
        if verdict.action == "wait" or pending is None:
            return verdict
        if verdict.action == "recover":
            self._recover(target, pending)
            x, y = replay()
            self._fine_tune(target, x, y)
            self.controller.recovered()
        elif verdict.action == "rollback":
            self._rollback(target, pending)
        if verdict.action in ("keep", "rollback"):
            self._pending = None
            if self.taylor is not None:
                self.taylor.reset()
        return verdict

    @property
    def busy(self) -> bool:
        """Whether a pruned model is being verified (or recovered)."""
        return self._pending is not None and self.controller.busy

    def interrupt(self) -> bool:
        """End the event under verification unjudged, keeping the pruned model.

        For when the comparison lost its meaning (the domain changed under it). True if an
        event was interrupted.
        """
        if self._pending is None:
            return False
        self._pending = None
        self.controller.interrupted()
        if self.taylor is not None:
            self.taylor.reset()
        return True

    @torch.no_grad()
    def reference_loss_sum(self, x: Tensor, y: Tensor, target: Trainable) -> float | None:
        """While verifying: the unpruned model's summed loss on the batch (else None)."""
        if self._pending is None or not self.controller.busy:
            return None
        with measured.evaluating(self._pending.model):
            return float(target.event_losses(self._pending.model(x), y).sum())

    def _prune_weights(self, target: Trainable, pending: _Pending, x: Tensor) -> int:
        masks, pending.scores = scoring.choose_masks(
            self.policy, target.model, x, pending.targets, current=self.masks, taylor=self.taylor
        )
        before, self.masks = self.masks.pruned, masks
        self.masks.enforce(target.model, target.optimizer)
        return self.masks.pruned - before

    def _prune_units(self, target: Trainable, pending: _Pending, x: Tensor, y: Tensor) -> int:
        for layer in unit_layers(target.model):
            self.original_units.setdefault(layer.name, layer.n_units)
        keep, pending.scores, removed = scoring.choose_units(
            self.policy, target.model, x, y, pending.targets, loss_fn=target.event_losses,
            original_units=self.original_units, taylor=self.taylor,
        )  # fmt: skip
        if removed:
            pending.keep = keep
            self._install(target, target.model, keep)
        return removed

    def _install(self, target: Trainable, unpruned: nn.Module, keep: dict[str, Tensor]) -> None:
        """Make ``target`` train a shrunk copy of ``unpruned`` (its optimizer state sliced)."""
        result = shrink_model(unpruned, keep)
        rebind_optimizer(target.optimizer, unpruned, result.model, result.slices)
        target.model = result.model
        self.shrink = result
        if self.on_reshape is not None:
            self.on_reshape(result)

    def _recover(self, target: Trainable, pending: _Pending) -> None:
        if self.policy.structured:
            candidates = removed_units(pending.scores, pending.keep)
        else:
            candidates = removed_weights(pending.scores, pending.masks.masks, self.masks.masks)
        restored = choose_restored(
            candidates, fraction=self.policy.restore_fraction, mode=self.policy.recovery,
            generator=self.generator,
        )  # fmt: skip
        if self.policy.structured:
            self._rollback(target, pending)
            for name, units in restored.items():
                pending.keep[name] = torch.cat([pending.keep[name], units]).sort().values
            self._install(target, pending.model, pending.keep)
            return
        params = dict(target.model.named_parameters())
        unpruned = dict(pending.model.named_parameters())
        with torch.no_grad():
            for name, indices in restored.items():
                self.masks.masks[name].view(-1)[indices] = True
                params[name].view(-1)[indices] = unpruned[name].detach().view(-1)[indices]

    def _rollback(self, target: Trainable, pending: _Pending) -> None:
        """Back to the unpruned model, optimizer state and masks."""
        if self.policy.structured:  # the unpruned copy becomes the live model again
            rebind_optimizer(target.optimizer, target.model, pending.model, {})
            target.model = pending.model
            self.shrink = None
            if self.on_reshape is not None:
                self.on_reshape(None)
        else:
            target.model.load_state_dict(pending.model.state_dict())
        target.optimizer.load_state_dict(pending.optimizer)
        self.masks = pending.masks.copy()

    def _fine_tune(self, target: Trainable, x: Tensor, y: Tensor) -> float | None:
        policy, pending = self.policy, self._pending
        teacher = pending.model if pending is not None and policy.distill_weight > 0 else None
        return fine_tune(
            target.model, target.optimizer, x, y, loss_fn=target.event_losses,
            generator=self.generator, epochs=policy.fine_tune_epochs,
            batch_size=policy.fine_tune_batch_size, teacher=teacher,
            distill_weight=policy.distill_weight, temperature=policy.temperature,
            task=policy.task, after_step=lambda: self.masks.enforce(target.model, target.optimizer),
        )  # fmt: skip

    def summary(self, model: nn.Module) -> dict[str, Any]:
        """JSON-ready figures for metrics and the manifest: sizes, sparsity, FLOPs, outcomes.

        ``weight_sparsity`` is the share of masked weights (unstructured); ``unit_sparsity`` the
        share of each part's original units removed (structured).
        """
        layers = unit_layers(model) if self.original_units else []
        unit_sparsity = {}
        for part in ("shared", "head"):
            original = sum(self.original_units[la.name] for la in layers if la.part == part)
            if original:
                now = sum(la.n_units for la in layers if la.part == part)
                unit_sparsity[part] = 1.0 - now / original
        return {
            "parameters": _parameters(model),
            "weight_sparsity": self.masks.sparsity(),
            "unit_sparsity": unit_sparsity,
            "units": {layer.name: layer.n_units for layer in layers},
            "flops_per_event": flops_per_event(model),
            "schedule_event": self.controller.event,
            "phase": self.controller.phase,
            "outcomes": dict(self.controller.counts),
        }

    def state_dict(self) -> TensorState:
        """Tensors (masks, Taylor averages) for safetensors and JSON-ready metadata."""
        tensors = self.masks.to_tensors()
        if self.taylor is not None:
            taylor, _ = self.taylor.state_dict()  # tensors only: its meta is empty
            tensors |= {f"taylor.{k}": v for k, v in taylor.items()}
        meta = {
            "format": FORMAT,
            "structured": self.policy.structured,
            "original_units": dict(self.original_units),
            "controller": self.controller.state_dict(),
        }
        return tensors, meta

    def load_state_dict(self, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output (an event mid-verification is not resumed).

        Raises:
            ValueError: Unknown format.
        """
        if meta.get("format") != FORMAT:
            raise ValueError(f"unknown pruning state format {meta.get('format')!r}")
        self.masks = MaskSet.from_tensors(tensors)
        if self.taylor is not None:
            taylor = {k[len("taylor.") :]: v for k, v in tensors.items() if k.startswith("taylor.")}
            if taylor:
                self.taylor.load_state_dict(taylor, {})
        self.original_units = {k: int(v) for k, v in meta["original_units"].items()}
        self.controller.load_state_dict(meta["controller"])
        self._pending, self.shrink = None, None


def _parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
