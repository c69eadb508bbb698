"""The policy applied to a model: importance scores, what to cut, the sparse penalty.

Scores are returned normalised per layer (divided by their mean magnitude) next to each cut, so
recovery can compare pruned weights or units across layers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import Tensor, nn

from driftd.pruning import criteria, measured
from driftd.pruning.layers import prunable_weights, unit_layers
from driftd.pruning.masks import MaskSet, masks_from_scores
from driftd.pruning.policy import PruningPolicy
from driftd.pruning.recovery import normalised_scores
from driftd.pruning.schedule import select_units

LossFn = Callable[[Tensor, Tensor], Tensor]


def weight_scores(
    policy: PruningPolicy,
    model: nn.Module,
    x: Tensor,
    taylor: criteria.TaylorAccumulator | None = None,
) -> dict[str, Tensor]:
    """Importance of every Linear/Conv2d weight (magnitude where the criterion has none yet)."""
    scores = criteria.magnitude_scores(model)
    if policy.criterion == "taylor" and taylor is not None:
        fresh = taylor.weight_scores()
        scores |= {k: v for k, v in fresh.items() if k in scores and v.shape == scores[k].shape}
    elif policy.criterion == "output_error":
        scores |= measured.weight_output_error_scores(model, x)
    return scores


def unit_scores(
    policy: PruningPolicy,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    loss_fn: LossFn,
    taylor: criteria.TaylorAccumulator | None = None,
) -> dict[str, Tensor]:
    """Importance of every removable unit (magnitude where the criterion has none yet)."""
    scores = criteria.unit_magnitude_scores(model, [layer.name for layer in unit_layers(model)])
    if policy.criterion == "taylor" and taylor is not None:
        fresh = taylor.unit_scores()
        scores |= {k: v for k, v in fresh.items() if k in scores and v.shape == scores[k].shape}
    elif policy.criterion == "output_error":
        measure = policy.output_error_measure
        scores |= measured.unit_output_error_scores(model, x, measure=measure, y=y, loss_fn=loss_fn)
    elif policy.criterion == "entropy":
        scores |= measured.activation_entropy_scores(model, x, bins=policy.entropy_bins)
    return scores


def sparse_targets(policy: PruningPolicy, model: nn.Module) -> list[str]:
    """Unit layers (structured) or weights (unstructured) of the parts with a target."""
    parts = {part for part, target in policy.schedule.targets.items() if target > 0}
    if policy.structured:
        return [layer.name for layer in unit_layers(model) if layer.part in parts]
    return [w.name for w in prunable_weights(model) if w.part in parts]


def sparse_penalty(policy: PruningPolicy, model: nn.Module) -> Tensor | None:
    """The ``sparse`` criterion's loss term: group lasso (structured) or L1; else None."""
    targets = sparse_targets(policy, model) if policy.criterion == "sparse" else []
    if not targets:
        return None
    if policy.structured:
        return criteria.group_l1_penalty(model, targets, policy.penalty_strength)
    return criteria.l1_penalty(model, targets, policy.penalty_strength)


def sparse_proximal_step(policy: PruningPolicy, model: nn.Module, lr: float) -> None:
    """The ``sparse`` criterion's proximal step after an optimizer step at rate ``lr``."""
    if policy.criterion != "sparse":
        return
    threshold = lr * policy.penalty_strength
    if policy.structured:
        criteria.proximal_group_l1_(model, sparse_targets(policy, model), threshold)
    else:
        criteria.proximal_l1_(model, sparse_targets(policy, model), threshold)


def choose_masks(
    policy: PruningPolicy,
    model: nn.Module,
    x: Tensor,
    targets: Mapping[str, float],
    *,
    current: MaskSet,
    taylor: criteria.TaylorAccumulator | None = None,
) -> tuple[MaskSet, dict[str, Tensor]]:
    """Masks at the ``targets`` sparsity per part (``current`` ones stay), and the scores used."""
    weights = [w for w in prunable_weights(model) if targets.get(w.part, 0.0) > 0]
    scores = weight_scores(policy, model, x, taylor)
    chosen = {w.name: scores[w.name] for w in weights}
    new = masks_from_scores(
        chosen, targets, groups={w.name: w.part for w in weights}, scope=policy.scope,
        current=current, keep_one_per_row=[w.name for w in weights if w.is_output],
    )  # fmt: skip
    return current.combined(new), {k: normalised_scores(v) for k, v in chosen.items()}


def choose_units(
    policy: PruningPolicy,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    targets: Mapping[str, float],
    *,
    loss_fn: LossFn,
    original_units: Mapping[str, int],
    taylor: criteria.TaylorAccumulator | None = None,
) -> tuple[dict[str, Tensor], dict[str, Tensor], int]:
    """Units to keep in each layer that shrinks, the scores used, and how many units go."""
    layers = [layer for layer in unit_layers(model) if targets.get(layer.part, 0.0) > 0]
    scores = unit_scores(policy, model, x, y, loss_fn, taylor)
    chosen = {layer.name: scores[layer.name] for layer in layers}
    keep = select_units(
        chosen, parts={layer.name: layer.part for layer in layers}, original_units=original_units,
        sparsities=targets, scope=policy.scope, min_units=policy.min_units,
    )  # fmt: skip
    widths = {layer.name: layer.n_units for layer in layers}
    keep = {name: kept for name, kept in keep.items() if len(kept) < widths[name]}
    removed = sum(widths[name] - len(kept) for name, kept in keep.items())
    return keep, {k: normalised_scores(v) for k, v in chosen.items()}, removed
