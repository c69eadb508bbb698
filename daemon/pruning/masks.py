"""Explicit pruning masks, owned by driftd rather than ``torch.nn.utils.prune``.

A :class:`MaskSet` maps parameter names to boolean tensors of the same shape: True keeps an
entry, False holds it at zero. The model keeps its plain ``weight`` parameters (no
``weight_orig``/``weight_mask`` renaming), so snapshots and the inference side load it as any
other model; the masks travel separately, as bool tensors, for training to go on.

Optimizers keep moving a zeroed weight (Adam's moments remember old gradients, weight decay,
momentum), so call :meth:`MaskSet.enforce` after every optimizer step: it zeroes the masked
weights again and the optimizer's per-entry state for them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from driftd.pruning.layers import UnitLayer, consumer_columns

_PREFIX = "mask."


class MaskSet:
    """Keep-masks over named parameters (True keeps the entry, False prunes it).

    A value rather than a stateful component: the pruner replaces it at each pruning event and
    rebuilds it from a snapshot (:meth:`from_tensors`), so it has tensors to save
    (:meth:`to_tensors`, part of :meth:`Pruner.state_dict <driftd.pruning.Pruner.state_dict>`)
    and no ``state_dict``/``load_state_dict`` of its own.

    Args:
        masks: Parameter name to a bool tensor shaped like that parameter.
    """

    def __init__(self, masks: Mapping[str, Tensor] | None = None) -> None:
        self.masks: dict[str, Tensor] = {k: v.bool() for k, v in (masks or {}).items()}

    def __len__(self) -> int:
        return len(self.masks)

    def __contains__(self, name: object) -> bool:
        return name in self.masks

    @property
    def pruned(self) -> int:
        """Entries held at zero."""
        return sum(int((~mask).sum()) for mask in self.masks.values())

    @property
    def total(self) -> int:
        """Entries covered by a mask."""
        return sum(mask.numel() for mask in self.masks.values())

    def sparsity(self, names: Iterable[str] | None = None) -> float:
        """Fraction of the covered entries (of ``names`` only, if given) that are pruned."""
        chosen = [self.masks[n] for n in (self.masks if names is None else names) if n in self]
        total = sum(mask.numel() for mask in chosen)
        return sum(int((~mask).sum()) for mask in chosen) / total if total else 0.0

    def copy(self) -> MaskSet:
        """An independent copy."""
        return MaskSet({name: mask.clone() for name, mask in self.masks.items()})

    def combined(self, other: MaskSet) -> MaskSet:
        """Entries kept by both (a name in one set only keeps that set's mask)."""
        merged = {name: mask.clone() for name, mask in self.masks.items()}
        for name, mask in other.masks.items():
            mine = merged.get(name)
            merged[name] = mine & mask.to(mine.device) if mine is not None else mask.clone()
        return MaskSet(merged)

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        """Zero the masked entries of ``model``'s parameters in place.

        Raises:
            KeyError: A mask names a parameter the model does not have.
        """
        params = dict(model.named_parameters())
        for name in self.masks:
            param = params[name]
            param.masked_fill_(~self._on(name, param.device), 0.0)

    @torch.no_grad()
    def zero_optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Zero the optimizer's per-entry state (moments, momentum) of masked entries."""
        params = dict(model.named_parameters())
        for name, mask in self.masks.items():
            state = optimizer.state.get(params[name])
            if not state:
                continue
            for value in state.values():
                if isinstance(value, Tensor) and value.shape == mask.shape:
                    value.masked_fill_(~self._on(name, value.device), 0)

    @torch.no_grad()
    def mask_gradients(self, model: nn.Module) -> None:
        """Zero the gradients of masked entries (optional, before a step)."""
        params = dict(model.named_parameters())
        for name in self.masks:
            grad = params[name].grad
            if grad is not None:
                grad.masked_fill_(~self._on(name, grad.device), 0.0)

    def enforce(self, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Keep pruned entries pruned: call after every optimizer step."""
        self.apply(model)
        if optimizer is not None:
            self.zero_optimizer_state(model, optimizer)

    def _on(self, name: str, device: torch.device) -> Tensor:
        """The mask on ``device``, moved there once (not on every step)."""
        mask = self.masks[name]
        if mask.device != device:
            mask = self.masks[name] = mask.to(device)
        return mask

    def to_tensors(self) -> dict[str, Tensor]:
        """Bool tensors keyed ``mask.<parameter>`` (safetensors stores bool)."""
        return {
            _PREFIX + name: mask.detach().cpu().contiguous() for name, mask in self.masks.items()
        }

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, Tensor]) -> MaskSet:
        """Rebuild from :meth:`to_tensors` output (other keys are ignored)."""
        return cls({k[len(_PREFIX) :]: v for k, v in tensors.items() if k.startswith(_PREFIX)})


def masks_from_scores(
    scores: Mapping[str, Tensor],
    sparsities: Mapping[str, float],
    *,
    groups: Mapping[str, str],
    scope: str = "layer",
    current: MaskSet | None = None,
    keep_one_per_row: Iterable[str] = (),
) -> MaskSet:
    """Prune the lowest-scoring entries to the sparsity of each parameter's group.

    Pruning is monotone: entries ``current`` already prunes stay pruned (they rank last).

    Args:
        scores: Importance per entry of each parameter (higher is kept).
        sparsities: Target pruned fraction per group (e.g. ``{"shared": 0.5, "head": 0.3}``).
        groups: The group of each parameter name.
        scope: ``layer`` prunes each parameter to its group's fraction; ``global`` ranks all of
            a group's entries together (one threshold per group).
        current: The masks already in force.
        keep_one_per_row: Parameters whose rows must keep their best entry (the output layer:
            a class is never cut off).

    Raises:
        ValueError: Unknown scope.
    """
    if scope not in ("layer", "global"):
        raise ValueError(f"scope must be layer or global, got {scope!r}")
    ranked = {name: _ranked(name, score, current) for name, score in scores.items()}
    keep: dict[str, Tensor] = {}
    if scope == "layer":
        for name, score in ranked.items():
            keep[name] = _keep_top(score, sparsities.get(groups[name], 0.0))
    else:
        for group in sorted(set(groups[name] for name in ranked)):
            names = [name for name in ranked if groups[name] == group]
            flat = torch.cat([ranked[name].flatten() for name in names])
            kept = _keep_top(flat, sparsities.get(group, 0.0))
            start = 0
            for name in names:
                size = ranked[name].numel()
                keep[name] = kept[start : start + size].view_as(ranked[name])
                start += size
    for name in keep_one_per_row:
        if name in keep:
            rows = ranked[name].flatten(1)
            best = rows.argmax(dim=1)
            flat_keep = keep[name].flatten(1)
            flat_keep[torch.arange(len(rows)), best] = True
    return MaskSet(keep)


def structured_mask(
    model: nn.Module, layers: Iterable[UnitLayer], keep: Mapping[str, Tensor]
) -> MaskSet:
    """Masks that remove units without shrinking: the unit's row and bias, and its consumer columns.

    The masked model computes what the model :func:`~driftd.pruning.shrink.shrink_model` gives
    for the same ``keep`` computes, whenever no norm mixes units (none, batch norm).
    """
    params = dict(model.named_parameters())
    masks: dict[str, Tensor] = {}
    for layer in layers:
        if layer.name not in keep:
            continue
        kept = keep[layer.name].to(torch.long)
        rows = torch.zeros(layer.n_units, dtype=torch.bool)
        rows[kept] = True
        for attr in ("weight", "bias"):
            name = f"{layer.name}.{attr}"
            if name in params:
                shape = params[name].shape
                row_mask = rows.view(-1, *([1] * (len(shape) - 1))).expand(shape)
                masks[name] = masks.get(name, torch.ones(shape, dtype=torch.bool)) & row_mask
        consumer = f"{layer.consumer}.weight"
        shape = params[consumer].shape
        columns = torch.zeros(shape[1], dtype=torch.bool)
        columns[consumer_columns(layer, kept)] = True
        column_mask = columns.view(1, -1, *([1] * (len(shape) - 2))).expand(shape)
        masks[consumer] = masks.get(consumer, torch.ones(shape, dtype=torch.bool)) & column_mask
    return MaskSet({name: mask.clone() for name, mask in masks.items()})


def _ranked(name: str, score: Tensor, current: MaskSet | None) -> Tensor:
    ranked = score.detach().float().cpu().clone()
    if current is not None and name in current:
        ranked[~current.masks[name].cpu()] = -torch.inf
    return ranked


def _keep_top(scores: Tensor, sparsity: float) -> Tensor:
    """True for the ``(1 - sparsity)`` share of highest scores (ties: the earlier entry)."""
    flat = scores.flatten()
    n_keep = flat.numel() - round(sparsity * flat.numel())
    order = torch.sort(flat, descending=True, stable=True).indices
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    keep[order[:n_keep]] = True
    already_pruned = torch.isneginf(flat)
    return (keep & ~already_pruned).view_as(scores)
