"""The online learner: prequential test-then-train on mini-batches.

Each call to :meth:`OnlineLearner.learn_many` takes a polled batch and walks it in
micro-batches of :attr:`OnlineLearner.micro_batch` events (None: the whole batch): each is first
predicted with the current model (those predictions are what the prequential metrics score),
then learned in one gradient step. How fine the steps are is chosen outside (a
:class:`~driftd.learning.granularity.StepSizeController`); the learner knows nothing of where
the batch came from.

In a trainer group that all-reduces gradients, :attr:`OnlineLearner.gradient_sync` is set: every
micro-batch, even one with nothing to learn, then makes exactly one sync call (a collective), the
step applies the ranks' event-weighted mean gradient, and the LR policy and step counter follow
the group's loss and events, so every replica takes the same steps.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
from torch import nn

from driftd.learning.lr import LRPolicy
from driftd.learning.models import train_matches_eval
from driftd.learning.prequential import PrequentialWindow, regression_errors
from driftd.learning.standardize import standardizer_of

Task = Literal["classification", "regression"]
LossName = Literal["cross_entropy", "mse", "huber"]


@dataclass(frozen=True)
class StepReport:
    """What one mini-batch did.

    Attributes:
        n_events: Events predicted.
        n_learned: Labelled events the gradient step used (0 if skipped or none labelled).
        loss: Mean prequential loss of the labelled events, before the update.
        accuracy: Fraction of labelled events predicted right, before the update (classification).
        event_losses: Per labelled event prequential loss (for drift detectors).
        predictions: Predicted class per event, or predicted values (regression).
        lr: Learning rate used for the step.
        skipped: Why the gradient step was skipped, or None.
        dropped: Bool mask (CPU) over the rows given: True where the event's prequential loss
            was not finite (e.g. an input that overflows the model). Such rows are neither
            scored nor learned, and every other field leaves them out (``predictions`` has a
            row per kept event); the caller dead-letters them. None when none was dropped.
    """

    n_events: int
    n_learned: int
    loss: float | None
    accuracy: float | None
    event_losses: torch.Tensor
    predictions: torch.Tensor
    lr: float
    skipped: str | None = None
    dropped: torch.Tensor | None = None


@dataclass(frozen=True)
class _Part:
    """What one micro-batch of :meth:`OnlineLearner.learn_many` did."""

    n_labelled: int
    n_learned: int
    loss_sum: float
    correct: int
    event_losses: torch.Tensor
    predictions: torch.Tensor
    skipped: str | None = None
    dropped: torch.Tensor | None = None  # see StepReport.dropped


class GradientSync(Protocol):
    """Makes one step's gradients the trainer group's (see :mod:`driftd.distributed.replicas`)."""

    def __call__(
        self, params: list[nn.Parameter], weight: float, loss_sum: float
    ) -> tuple[float, float]:
        """Replace each ``.grad`` by the ranks' ``weight``-weighted mean; return the sums.

        Returns:
            The group's total weight (events learned) and loss sum; with a total of 0 the
            gradients are zero and no step should be taken.
        """
        ...


def _cat(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    return torch.cat(list(tensors))


def _dropped_rows(parts: list[_Part], n_rows: int, size: int) -> torch.Tensor | None:
    """The batch-wide :attr:`StepReport.dropped` mask of micro-batches of ``size`` rows."""
    if all(part.dropped is None for part in parts):
        return None
    masks = [
        torch.zeros(max(0, min(size, n_rows - i * size)), dtype=torch.bool)
        if part.dropped is None
        else part.dropped
        for i, part in enumerate(parts)
    ]
    return torch.cat(masks)


def make_optimizer(
    name: str, model: nn.Module, *, lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    """An optimizer with one parameter group per model part (``shared``, ``head``)."""
    groups: list[dict[str, Any]] = []
    for part in ("shared", "head"):
        params = [p for p in getattr(model, part).parameters() if p.requires_grad]
        if params:
            groups.append({"params": params, "name": part, "lr": lr, "lr_scale": 1.0})
    if name == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(
            groups, lr=lr, momentum=momentum, weight_decay=weight_decay
        )
    elif name == "adam":
        optimizer = torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)
    elif name == "adamw":
        optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)
    else:
        raise ValueError(f"unknown optimizer {name!r}: expected sgd, adam or adamw")
    prefer_fused(optimizer)
    return optimizer


def prefer_fused(optimizer: torch.optim.Optimizer) -> None:
    """Step every group with the fused kernel where its device has one, else ``foreach``.

    A small online step's optimizer cost is per-kernel overhead: the fused kernel does a
    group's whole update in one (half the time of ``foreach`` for the default MLP on a CPU).
    Call it again after ``load_state_dict``, which brings back the saved groups' choice.
    """
    for group in optimizer.param_groups:
        fused = all(_has_fused_kernel(p) for p in group["params"])
        group["fused"], group["foreach"] = (True, False) if fused else (None, True)
        for param in group["params"] if fused else ():
            state = optimizer.state.get(param, {})
            step = state.get("step")
            if isinstance(step, torch.Tensor) and step.device != param.device:
                state["step"] = step.to(param.device)  # the fused kernel reads it there


def _has_fused_kernel(param: torch.Tensor) -> bool:
    return param.is_floating_point() and param.device.type in ("cpu", "cuda")


class OnlineLearner:
    """Predicts, scores and learns one mini-batch at a time.

    ``after_step_hooks`` run after every optimizer step, the scored ones and :meth:`fit_many`'s
    alike (pruning keeps its masked weights at zero there).
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        lr_policy: LRPolicy,
        task: Task,
        loss: LossName,
        metrics_window: int,
        huber_delta: float = 1.0,
        grad_clip_norm: float | None = None,
        device: torch.device | str = "cpu",
        micro_batch: int | None = None,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.lr_policy = lr_policy
        self.task = task
        self.loss_name = loss
        self.huber_delta = huber_delta
        self.grad_clip_norm = grad_clip_norm
        self.device = torch.device(device)
        self.window = PrequentialWindow(metrics_window, task=task)
        self.steps = 0
        self.events_learned = 0
        self.steps_skipped = 0
        self.extra_steps = 0
        self.micro_batch: int | None = micro_batch
        self.after_step_hooks: list[Callable[[], None]] = []
        self.gradient_sync: GradientSync | None = None
        self._group_sums = [0.0, 0.0]  # this call's group-wide events learned and loss sum
        self._stochastic = not train_matches_eval(model)
        self._apply_lr(lr_policy.lr)

    @torch.no_grad()
    def predict_many(self, x: torch.Tensor) -> torch.Tensor:
        """Raw model outputs (logits or values) in eval mode."""
        self.model.eval()
        outputs: torch.Tensor = self.model(x.to(self.device, non_blocking=True))
        return outputs

    def learn_many(
        self, x: torch.Tensor, y: torch.Tensor, labelled: torch.Tensor, *, parts: int | None = None
    ) -> StepReport:
        """Predict and learn a batch in micro-batches of :attr:`micro_batch` events.

        Each micro-batch is predicted (and scored) by the model as the previous micro-batches
        left it, then learned in one gradient step: prequential at the micro-batch's grain.
        The LR policy and :attr:`steps` count one step per call. ``parts`` (a trainer group's
        agreed count): exactly that many micro-batches, the last ones empty if ``x`` is short.
        """
        x = x.to(self.device, non_blocking=True)
        self._group_sums = [0.0, 0.0]
        lr = self.lr_policy.lr
        standardizer = standardizer_of(self.model)
        if standardizer is not None and not standardizer.count:
            standardizer.update(x)  # the very first batch: no statistics to score it with yet
            standardizer = None
        size = len(x) if self.micro_batch is None else max(1, self.micro_batch)
        if parts is not None:
            size = max(size, math.ceil(len(x) / max(1, parts)), 1)
            starts: Iterable[int] = (i * size for i in range(max(1, parts)))
        else:
            starts = range(0, len(x), size) if size < len(x) else (0,)
        done = [
            self._learn_part(x[i : i + size], y[i : i + size], labelled[i : i + size])
            for i in starts
        ]
        if standardizer is not None:
            standardizer.update(x)  # after the batch is scored: the next one is standardised so
        n_labelled = sum(part.n_labelled for part in done)
        predictions = done[0].predictions if len(done) == 1 else _cat(p.predictions for p in done)
        dropped = _dropped_rows(done, len(x), size)
        if self.gradient_sync is not None:
            self._follow_group()
        if n_labelled == 0:
            skipped = None if dropped is None else "non_finite_loss"
            return StepReport(
                len(predictions), 0, None, None, x.new_zeros(0), predictions, lr, skipped, dropped
            )
        losses = done[0].event_losses if len(done) == 1 else _cat(p.event_losses for p in done)
        n_learned = sum(part.n_learned for part in done)
        loss_sum = sum(part.loss_sum for part in done)
        report_loss = loss_sum / n_labelled
        accuracy = None
        if self.task == "classification":
            accuracy = sum(part.correct for part in done) / n_labelled
        skipped = next((part.skipped for part in done if part.skipped is not None), None)
        if n_learned and self.gradient_sync is not None:
            self.events_learned += n_learned  # steps and LR followed the group's
        elif n_learned:
            self.steps += 1
            self.events_learned += n_learned
            self._apply_lr(self.lr_policy.step(report_loss if math.isfinite(report_loss) else None))
        return StepReport(
            len(predictions), n_learned, report_loss, accuracy, losses, predictions, lr,
            skipped=skipped, dropped=dropped,
        )  # fmt: skip

    def _follow_group(self) -> None:
        """Count the step and move the LR by the group's events and loss (same on every rank)."""
        learned, loss_sum = self._group_sums
        if learned > 0:
            self.steps += 1
            loss = loss_sum / learned
            self._apply_lr(self.lr_policy.step(loss if math.isfinite(loss) else None))

    def _learn_part(self, x: torch.Tensor, y: torch.Tensor, labelled: torch.Tensor) -> _Part:
        """Predict one micro-batch, score its labelled events, then take one step on them."""
        n_labelled = int(labelled.sum())
        if n_labelled == 0:
            outputs = self.predict_many(x)
            self._idle_step()
            return _Part(0, 0, 0.0, 0, outputs.new_zeros(0), self._decide(outputs))
        y = y.to(self.device, non_blocking=True)
        mask = None if n_labelled == len(x) else labelled.to(self.device)
        train_y = y if mask is None else y[mask]
        if self._stochastic:
            # Dropout / batch norm: the prequential prediction is the eval-mode one.
            predicted = self.predict_many(x)
            self.model.train()
            outputs = self.model(x if mask is None else x[mask])
        else:
            # Train and eval mode agree: one forward serves prediction and learning.
            if not self.model.training:
                self.model.train()
            all_outputs = self.model(x)
            predicted = all_outputs.detach()
            outputs = all_outputs if mask is None else all_outputs[mask]
        event_losses = self._event_losses(outputs, train_y)
        scored = predicted if mask is None else predicted[mask]
        scored_losses = (
            self._event_losses(scored, train_y) if self._stochastic else event_losses.detach()
        )
        finite = torch.isfinite(scored_losses)
        if self._stochastic:
            finite &= torch.isfinite(event_losses.detach())
        if not bool(finite.all()):  # a row overflowed the model: learn from the others
            return self._learn_without(x, y, labelled, ~finite)
        loss = event_losses.mean()
        decided = self._decide(predicted)
        loss_sum, correct = self._score(
            decided if mask is None else decided[mask], train_y, scored_losses
        )
        errors = regression_errors(scored, train_y) if self.task == "regression" else None
        self.window.update(n_labelled, loss_sum, correct, errors)
        if not math.isfinite(loss_sum):
            self.optimizer.zero_grad(set_to_none=True)
            self._idle_step()
            self.steps_skipped += 1
            skipped = _Part(n_labelled, 0, loss_sum, correct, event_losses.detach(), decided)
            return dataclasses.replace(skipped, skipped="non_finite_loss")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        if self._synced(n_labelled, loss_sum):
            self._clip_and_step()
        return _Part(n_labelled, n_labelled, loss_sum, correct, event_losses.detach(), decided)

    def _synced(self, weight: float, loss_sum: float) -> bool:
        """Make the gradients the group's (if in one); whether a step is to be taken."""
        if self.gradient_sync is None:
            return weight > 0
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        total, total_loss = self.gradient_sync(params, weight, loss_sum)
        self._group_sums[0] += total
        self._group_sums[1] += total_loss
        return total > 0

    def _idle_step(self) -> None:
        """Nothing to learn here: in a group, still join the sync and take the group's step."""
        if self.gradient_sync is None:
            return
        self.optimizer.zero_grad(set_to_none=True)
        if self._synced(0.0, 0.0):
            self._clip_and_step()

    def _clip_and_step(self) -> None:
        if self.grad_clip_norm is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip_norm)
        self._optimizer_step()

    def _learn_without(
        self, x: torch.Tensor, y: torch.Tensor, labelled: torch.Tensor, bad: torch.Tensor
    ) -> _Part:
        """Learn the micro-batch without the labelled rows ``bad`` (their loss is not finite).

        The kept rows go through a fresh forward: a backward through the overflowed rows'
        activations would turn their zero gradients into NaN (``inf * 0``).
        """
        labelled = labelled.cpu()
        dropped = torch.zeros(len(x), dtype=torch.bool)
        dropped[labelled.nonzero()[:, 0][bad.cpu()]] = True
        keep = ~dropped
        if not bool(keep.any()):
            self._idle_step()
            self.steps_skipped += 1
            empty = self._decide(self.predict_many(x[:0]))
            return _Part(0, 0, 0.0, 0, empty.new_zeros(0, dtype=torch.float32), empty,
                         "non_finite_loss", dropped)  # fmt: skip
        part = self._learn_part(x[keep.to(x.device)], y[keep.to(y.device)], labelled[keep])
        if part.dropped is not None:  # dropped in turn (a stochastic forward): both count
            dropped[keep.nonzero()[:, 0][part.dropped]] = True
        return dataclasses.replace(part, dropped=dropped)

    def fit_many(self, x: torch.Tensor, y: torch.Tensor) -> float | None:
        """One extra gradient step on labelled events (e.g. replayed ones), nothing scored.

        The prequential window, the LR policy and the step counters used for snapshots are
        untouched; :attr:`extra_steps` counts these. Returns the mean loss, or None when it
        was not finite (no step taken).
        """
        self.model.train()
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        loss = self.event_losses(self.model(x), y).mean()
        self.optimizer.zero_grad(set_to_none=True)
        value = float(loss.detach())
        if not math.isfinite(value):
            return None
        loss.backward()  # type: ignore[no-untyped-call]
        if self.grad_clip_norm is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip_norm)
        self._optimizer_step()
        self.extra_steps += 1
        return value

    def _optimizer_step(self) -> None:
        """The optimizer step, then the hooks that must follow every one (e.g. pruning masks)."""
        self.optimizer.step()
        for hook in self.after_step_hooks:
            hook()

    def param_group(self, name: str) -> dict[str, Any] | None:
        """The optimizer parameter group ``name`` (``shared`` or ``head``), if any."""
        for group in self.optimizer.param_groups:
            if group.get("name") == name:
                return group
        return None

    def refresh_lr(self) -> None:
        """Re-apply the policy's rate to every group (after a group's ``lr_scale`` changed)."""
        self._apply_lr(self.lr_policy.lr)

    def event_losses(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-event loss of ``outputs`` against targets ``y`` (the configured loss)."""
        return self._event_losses(outputs, y)

    def _event_losses(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.loss_name == "cross_entropy":
            return F.cross_entropy(outputs, y, reduction="none")
        if self.loss_name == "mse":
            return F.mse_loss(outputs, y, reduction="none").mean(dim=1)
        return F.huber_loss(outputs, y, reduction="none", delta=self.huber_delta).mean(dim=1)

    def _score(
        self, decided: torch.Tensor, y: torch.Tensor, scored_losses: torch.Tensor
    ) -> tuple[float, int]:
        """The scored events' loss sum and (classification) how many ``decided`` got right."""
        loss_sum = float(scored_losses.sum(dtype=torch.float64))
        if self.task != "classification":
            return loss_sum, 0
        return loss_sum, int((decided == y).sum())

    def _decide(self, outputs: torch.Tensor) -> torch.Tensor:
        if self.task == "classification":
            return outputs.argmax(dim=1)
        return outputs.detach()

    def _apply_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)

    def state_dict(self) -> dict[str, Any]:
        """JSON-ready counters, LR policy and window state (tensors are saved separately)."""
        return {
            "steps": self.steps,
            "events_learned": self.events_learned,
            "steps_skipped": self.steps_skipped,
            "extra_steps": self.extra_steps,
            "lr_policy": self.lr_policy.state_dict(),
            "window": self.window.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.steps = int(state["steps"])
        self.events_learned = int(state["events_learned"])
        self.steps_skipped = int(state["steps_skipped"])
        self.extra_steps = int(state.get("extra_steps", 0))
        self.lr_policy.load_state_dict(state["lr_policy"])
        self.window.load_state_dict(state["window"])
        self._apply_lr(self.lr_policy.lr)
