"""Re-adaptation after pruning: fine-tuning on a replay window, optionally distilled.

The pre-pruning model can serve as a teacher: the pruned student then also learns to match the
teacher's outputs (Hinton et al., 2015), which carries what the removed weights knew beyond the
labels of the few replayed events.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
from torch import Tensor, nn

LossFn = Callable[[Tensor, Tensor], Tensor]
AfterStep = Callable[[], None]


def distillation_loss(
    student: Tensor, teacher: Tensor, *, temperature: float = 2.0, task: str = "classification"
) -> Tensor:
    """How far the student's outputs are from the teacher's (a scalar).

    Classification: ``KL(softmax(teacher / T) || softmax(student / T)) * T^2``, averaged over
    events (the ``T^2`` keeps its gradients on the scale of the label loss). Regression: the mean
    squared difference of the outputs.

    Raises:
        ValueError: ``temperature`` is not positive.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    teacher = teacher.detach()
    if task != "classification":
        return F.mse_loss(student, teacher)
    log_student = F.log_softmax(student / temperature, dim=1)
    log_teacher = F.log_softmax(teacher / temperature, dim=1)
    kl = F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


def fine_tune(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    *,
    loss_fn: LossFn,
    generator: torch.Generator,
    epochs: int = 1,
    batch_size: int = 64,
    teacher: nn.Module | None = None,
    distill_weight: float = 0.5,
    temperature: float = 2.0,
    task: str = "classification",
    after_step: AfterStep | None = None,
) -> float | None:
    """Train ``model`` for ``epochs`` shuffled passes over the replay window ``(x, y)``.

    Args:
        model: The pruned model (trained in place, left in train mode).
        optimizer: Its optimizer (the learner's: momentum and moments carry on).
        x: Replayed inputs, on the model's device.
        y: Their targets.
        loss_fn: Per-event loss of outputs against targets (the learner's).
        generator: Shuffles the window.
        epochs: Passes over the window.
        batch_size: Events per gradient step.
        teacher: The unpruned model, for distillation (None: labels only).
        distill_weight: Share of the distillation term: ``(1 - w) * label + w * distill``.
        temperature: Softmax temperature of the distillation.
        task: ``classification`` or ``regression`` (the distillation's form).
        after_step: Called after each optimizer step (e.g. to re-apply pruning masks).

    Returns:
        The mean label loss of the last pass, or None if the window is empty or a loss was not
        finite (that step is skipped).
    """
    if not 0.0 <= distill_weight <= 1.0:
        raise ValueError(f"distill_weight must be in [0, 1], got {distill_weight}")
    if len(x) == 0 or epochs < 1:
        return None
    teacher_outputs = None
    if teacher is not None and distill_weight > 0:
        mode = teacher.training
        teacher.eval()
        with torch.no_grad():
            teacher_outputs = teacher(x)
        teacher.train(mode)
    model.train()
    last: float | None = None
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator).to(x.device)
        total, seen, finite = 0.0, 0, True
        for start in range(0, len(x), batch_size):
            rows = order[start : start + batch_size]
            outputs = model(x[rows])
            label_loss = loss_fn(outputs, y[rows]).mean()
            loss = label_loss
            if teacher_outputs is not None:
                distill = distillation_loss(
                    outputs, teacher_outputs[rows], temperature=temperature, task=task
                )
                loss = (1.0 - distill_weight) * label_loss + distill_weight * distill
            optimizer.zero_grad(set_to_none=True)
            if not math.isfinite(float(loss.detach())):
                finite = False
                continue
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            if after_step is not None:
                after_step()
            total += float(label_loss.detach()) * len(rows)
            seen += len(rows)
        last = total / seen if finite and seen else None
    optimizer.zero_grad(set_to_none=True)
    return last
