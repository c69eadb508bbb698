"""How much to prune at each pruning event, and which units make the cut.

The gradual schedule of Zhu & Gupta (2017) raises sparsity fast at first, while there is
redundancy to remove, then slowly as the target nears:

    s_k = s_f + (s_i - s_f) * (1 - k / n) ** 3,   k = 0 .. n

``k`` counts kept pruning events: before the first one the sparsity is the initial ``s_i``,
after the ``n``-th it is the target ``s_f``. The trunk (``shared``) and the head have their own
targets. For structured pruning the sparsity is the fraction of each layer's original units
removed (at 50%, a hidden layer of 64 keeps 32 units).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor


def cubic_sparsity(event: int, *, initial: float, target: float, n_events: int) -> float:
    """Sparsity after ``event`` pruning events (clamped to ``[0, n_events]``).

    Raises:
        ValueError: ``n_events`` below 1.
    """
    if n_events < 1:
        raise ValueError(f"n_events must be at least 1, got {n_events}")
    progress = min(max(event, 0), n_events) / n_events
    return target + (initial - target) * (1.0 - progress) ** 3


@dataclass(frozen=True)
class SparsitySchedule:
    """Cubic sparsity targets per model part over ``n_events`` pruning events.

    Attributes:
        targets: Final sparsity per part, e.g. ``{"shared": 0.5, "head": 0.3}``; a missing
            part is not pruned.
        n_events: Pruning events to reach the targets.
        initial: Sparsity before the first event (the same for every part).
    """

    targets: Mapping[str, float] = field(default_factory=lambda: {"shared": 0.5, "head": 0.0})
    n_events: int = 10
    initial: float = 0.0

    def __post_init__(self) -> None:
        if self.n_events < 1:
            raise ValueError(f"n_events must be at least 1, got {self.n_events}")
        for part, target in self.targets.items():
            if not 0.0 <= target < 1.0 or not 0.0 <= self.initial <= target:
                raise ValueError(f"{part}: need 0 <= initial <= target < 1, got {target}")

    def at(self, event: int) -> dict[str, float]:
        """The sparsity of each part after ``event`` pruning events."""
        return {
            part: cubic_sparsity(event, initial=self.initial, target=target, n_events=self.n_events)
            for part, target in self.targets.items()
        }

    def finished(self, event: int) -> bool:
        """Whether ``event`` events already reached the targets."""
        return event >= self.n_events


def select_units(
    scores: Mapping[str, Tensor],
    *,
    parts: Mapping[str, str],
    original_units: Mapping[str, int],
    sparsities: Mapping[str, float],
    scope: str = "layer",
    min_units: int = 1,
) -> dict[str, Tensor]:
    """Which units of each layer to keep (sorted indices into the layer's current units).

    A layer keeps ``round(original * (1 - sparsity))`` units, never more than it has now and
    never fewer than ``min_units``. With ``scope="global"`` a part's total is kept instead and
    its units compete across layers on scores divided by their layer's mean (so layers of
    different scale compete fairly), each layer keeping at least ``min_units``.

    Args:
        scores: Importance of each current unit, per layer name.
        parts: The part (``shared``/``head``) of each layer.
        original_units: Width of each layer before any pruning.
        sparsities: Fraction of the original units to remove, per part.
        scope: ``layer`` or ``global``.
        min_units: Units every layer keeps at least.

    Raises:
        ValueError: Unknown scope.
    """
    if scope not in ("layer", "global"):
        raise ValueError(f"scope must be layer or global, got {scope!r}")

    def quota(name: str) -> int:
        wanted = round(original_units[name] * (1.0 - sparsities.get(parts[name], 0.0)))
        return min(len(scores[name]), max(min_units, wanted))

    if scope == "layer":
        return {name: _top(score, quota(name)) for name, score in scores.items()}
    keep: dict[str, Tensor] = {}
    for part in sorted(set(parts[name] for name in scores)):
        names = [name for name in scores if parts[name] == part]
        budget = sum(quota(name) for name in names)
        normalised = {name: _normalised(scores[name]) for name in names}
        chosen = {
            name: set(_top(normalised[name], min(min_units, len(scores[name]))).tolist())
            for name in names
        }
        candidates = [
            (float(value), name, index)
            for name in names
            for index, value in enumerate(normalised[name].tolist())
            if index not in chosen[name]
        ]
        candidates.sort(key=lambda item: (-item[0], item[1], item[2]))
        room = budget - sum(len(units) for units in chosen.values())
        for _, name, index in candidates[: max(0, room)]:
            chosen[name].add(index)
        keep |= {name: torch.tensor(sorted(chosen[name]), dtype=torch.long) for name in names}
    return keep


def _top(scores: Tensor, n_keep: int) -> Tensor:
    """Sorted indices of the ``n_keep`` highest scores (ties: the earlier unit)."""
    order = torch.sort(scores.detach().float().cpu(), descending=True, stable=True).indices
    return order[:n_keep].sort().values


def _normalised(scores: Tensor) -> Tensor:
    values = scores.detach().float().cpu()
    mean = values.abs().mean()
    return values / mean if float(mean) > 0 else values
