"""Which pruned weights or units come back when a pruned model is not good enough."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor


def normalised_scores(scores: Tensor) -> Tensor:
    """Scores divided by their mean magnitude, so layers of different scale compare fairly."""
    values = scores.detach().float().cpu()
    finite = values[torch.isfinite(values)]
    mean = finite.abs().mean() if finite.numel() else torch.tensor(0.0)
    return values / mean if float(mean) > 0 else values


def choose_restored(
    candidates: Mapping[str, tuple[Tensor, Tensor]],
    *,
    fraction: float,
    mode: str,
    generator: torch.Generator,
) -> dict[str, Tensor]:
    """Pick ``ceil(fraction * n)`` of the ``n`` pruned candidates to restore.

    Args:
        candidates: Per name, the pruned indices and their (comparable) importance scores.
        fraction: Share to restore, in ``(0, 1]``.
        mode: ``greedy`` (highest scores first; ties by name, then index) or ``random``
            (uniform, drawn from ``generator``).
        generator: Random source of ``random``.

    Returns:
        Per name, the restored indices (sorted; names with none are left out).

    Raises:
        ValueError: Unknown mode or a fraction outside ``(0, 1]``.
    """
    if mode not in ("greedy", "random"):
        raise ValueError(f"mode must be greedy or random, got {mode!r}")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    names = sorted(candidates)
    indices = [candidates[name][0].flatten().long().cpu() for name in names]
    scores = torch.cat(
        [candidates[name][1].flatten().float().cpu() for name in names] or [torch.zeros(0)]
    )
    owners = torch.cat(
        [torch.full((len(idx),), position) for position, idx in enumerate(indices)]
        or [torch.zeros(0, dtype=torch.long)]
    )
    flat_indices = torch.cat(indices or [torch.zeros(0, dtype=torch.long)])
    n_restore = min(len(scores), math.ceil(fraction * len(scores)))
    if mode == "greedy":  # stable: ties go to the earlier name, then the earlier index
        order = torch.sort(scores, descending=True, stable=True).indices
    else:
        order = torch.randperm(len(scores), generator=generator)
    chosen = order[:n_restore]
    restored: dict[str, Tensor] = {}
    for position, name in enumerate(names):
        picked = flat_indices[chosen[owners[chosen] == position]]
        if len(picked):
            restored[name] = picked.sort().values
    return restored


def removed_units(
    scores: Mapping[str, Tensor], kept: Mapping[str, Tensor]
) -> dict[str, tuple[Tensor, Tensor]]:
    """Per layer, the units not in ``kept`` and their scores (candidates to restore)."""
    candidates = {}
    for name, kept_units in kept.items():
        removed = torch.ones(len(scores[name]), dtype=torch.bool)
        removed[kept_units] = False
        indices = removed.nonzero().flatten()
        candidates[name] = (indices, scores[name][indices])
    return candidates


def removed_weights(
    scores: Mapping[str, Tensor], before: Mapping[str, Tensor], now: Mapping[str, Tensor]
) -> dict[str, tuple[Tensor, Tensor]]:
    """Per parameter, the flat indices kept ``before`` but masked ``now``, and their scores."""
    candidates = {}
    for name, score in scores.items():
        mask = now[name].cpu()
        was_kept = before.get(name)
        removed = (was_kept.cpu() if was_kept is not None else torch.ones_like(mask)) & ~mask
        indices = removed.flatten().nonzero().flatten()
        candidates[name] = (indices, score.flatten().cpu()[indices])
    return candidates
