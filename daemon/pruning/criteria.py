"""Importance criteria read from the weights and gradients: magnitude, Taylor, sparse penalty.

Each criterion gives either per-weight scores (unstructured: a tensor shaped like each
Linear/Conv2d weight, keyed by parameter name) or per-unit scores (structured: one value per
output neuron/channel, keyed by layer name). Higher means more important: pruning removes the
lowest scores first. The measured criteria (output error, activation entropy) are in
:mod:`driftd.pruning.measured`.

Sparse optimisation is two steps: drive unimportant weights towards zero for a while, then cut
by magnitude. Either add :func:`l1_penalty` (weights) or :func:`group_l1_penalty` (whole units)
to the training loss, or, with no change to the loss, apply the matching proximal step after
each optimizer step (:func:`proximal_l1_`, :func:`proximal_group_l1_`): soft-thresholding,
which sets small weights exactly to zero.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from driftd.learning.tensor_state import TensorState
from driftd.pruning.layers import WeightLayer, prunable_weights


def weight_layers(model: nn.Module) -> dict[str, WeightLayer]:
    """Every Linear/Conv2d of ``model`` by module name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, WeightLayer)}


@torch.no_grad()
def magnitude_scores(model: nn.Module) -> dict[str, Tensor]:
    """|w| of every Linear/Conv2d weight (L1 magnitude), keyed by parameter name."""
    params = dict(model.named_parameters())
    return {w.name: params[w.name].detach().abs().clone() for w in prunable_weights(model)}


@torch.no_grad()
def unit_magnitude_scores(
    model: nn.Module, layers: Iterable[str] | None = None
) -> dict[str, Tensor]:
    """L1 norm of each unit's incoming weights (a Linear row, a Conv2d filter), per layer."""
    modules = weight_layers(model)
    names = modules if layers is None else layers
    return {name: modules[name].weight.detach().abs().flatten(1).sum(dim=1) for name in names}


def l1_penalty(model: nn.Module, names: Iterable[str], strength: float) -> Tensor:
    """``strength * sum |w|`` over the named parameters: add it to the loss (sparse optimisation).

    Raises:
        ValueError: No parameter is named.
    """
    params = dict(model.named_parameters())
    terms = [params[name].abs().sum() for name in names]
    if not terms:
        raise ValueError("l1_penalty needs at least one parameter")
    return strength * torch.stack(terms).sum()


def group_l1_penalty(model: nn.Module, layers: Iterable[str], strength: float) -> Tensor:
    """``strength * sum_units ||unit's row and bias||_2`` (group lasso): drives whole units to zero.

    Raises:
        ValueError: No layer is named.
    """
    modules = weight_layers(model)
    terms = []
    for name in layers:
        module = modules[name]
        rows = module.weight.flatten(1)
        if module.bias is not None:
            rows = torch.cat([rows, module.bias[:, None]], dim=1)
        terms.append(rows.norm(dim=1).sum())
    if not terms:
        raise ValueError("group_l1_penalty needs at least one layer")
    return strength * torch.stack(terms).sum()


@torch.no_grad()
def proximal_l1_(model: nn.Module, names: Iterable[str], threshold: float) -> None:
    """Soft-threshold the named parameters in place: ``sign(w) * max(|w| - threshold, 0)``."""
    params = dict(model.named_parameters())
    for name in names:
        param = params[name]
        param.copy_(param.sign() * (param.abs() - threshold).clamp_(min=0.0))


@torch.no_grad()
def proximal_group_l1_(model: nn.Module, layers: Iterable[str], threshold: float) -> None:
    """Shrink each unit's row and bias in place by ``threshold`` in L2 norm (zero if below)."""
    modules = weight_layers(model)
    for name in layers:
        module = modules[name]
        rows = module.weight.flatten(1)
        norms = rows.pow(2).sum(dim=1)
        if module.bias is not None:
            norms = norms + module.bias.pow(2)
        factor = (1.0 - threshold / norms.sqrt().clamp(min=1e-12)).clamp_(min=0.0)
        module.weight.mul_(factor.view(-1, *([1] * (module.weight.dim() - 1))))
        if module.bias is not None:
            module.bias.mul_(factor)


class TaylorAccumulator:
    """First-order Taylor importance, ``|w * dL/dw|``, averaged over recent steps.

    Call :meth:`update` after each backward pass (the gradients are still on the parameters
    after the optimizer step: the learner clears them at the start of the next step). Averages
    are exponential with ``decay`` and bias-corrected, so early scores are not shrunk towards
    zero. A layer whose shape changed (structured pruning) starts afresh; :meth:`reset` after
    each pruning event.

    Per weight the score is the average of ``|w * g|``. Per unit it is the average of
    ``|sum over the unit's weights and bias of w * g|``: the first-order change of the loss if the
    unit were removed (Molchanov et al., 2019).

    Args:
        decay: Weight of the past in the moving average, in ``[0, 1)``.
    """

    def __init__(self, *, decay: float = 0.9) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.steps = 0
        self._weights: dict[str, Tensor] = {}
        self._units: dict[str, Tensor] = {}

    def reset(self) -> None:
        """Forget everything accumulated."""
        self.steps = 0
        self._weights.clear()
        self._units.clear()

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the gradients now on ``model``'s Linear/Conv2d layers into the averages."""
        updated = False
        for name, module in weight_layers(model).items():
            grad = module.weight.grad
            if grad is None:
                continue
            contribution = module.weight.detach() * grad
            unit = contribution.flatten(1).sum(dim=1)
            if module.bias is not None and module.bias.grad is not None:
                unit = unit + module.bias.detach() * module.bias.grad
            self._fold(self._weights, f"{name}.weight", contribution.abs())
            self._fold(self._units, name, unit.abs())
            updated = True
        self.steps += int(updated)

    def weight_scores(self) -> dict[str, Tensor]:
        """Average ``|w * g|`` per weight, keyed by parameter name."""
        return {name: self._corrected(value) for name, value in self._weights.items()}

    def unit_scores(self) -> dict[str, Tensor]:
        """Average ``|sum w * g|`` per unit, keyed by layer name."""
        return {name: self._corrected(value) for name, value in self._units.items()}

    def state_dict(self) -> TensorState:
        """``(tensors, {})``: all of its state is tensors.

        Keys ``steps``, ``weights.<param>`` and ``units.<layer>``; ``steps`` stays a tensor, so
        snapshots keep their ``taylor.steps``.
        """
        tensors = {"steps": torch.tensor(self.steps, dtype=torch.int64)}
        tensors |= {f"weights.{k}": v.detach().cpu().clone() for k, v in self._weights.items()}
        tensors |= {f"units.{k}": v.detach().cpu().clone() for k, v in self._units.items()}
        return tensors, {}

    def load_state_dict(self, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (its ``meta`` is empty)."""
        self.reset()
        self.steps = int(tensors["steps"])
        for key, value in tensors.items():
            kind, _, name = key.partition(".")
            if kind == "weights":
                self._weights[name] = value.clone()
            elif kind == "units":
                self._units[name] = value.clone()

    def _fold(self, store: dict[str, Tensor], key: str, value: Tensor) -> None:
        previous = store.get(key)
        if previous is None or previous.shape != value.shape:
            previous = torch.zeros_like(value)
        store[key] = previous.to(value.device).mul_(self.decay).add_(value, alpha=1.0 - self.decay)

    def _corrected(self, value: Tensor) -> Tensor:
        return value / (1.0 - self.decay ** max(self.steps, 1))
