"""Stored domain heads follow the live model through structured pruning.

A structured pruning event shrinks the live trunk and head; the heads of other domains, stored
in the :class:`~driftd.adaptation.heads.HeadRegistry`
with the trunk they were trained over, must shrink
the same way or a later switch to them would not fit. :class:`StoredHeadsFollower` is the
pruner's ``on_reshape`` callback: at the first reshape of an event it keeps the stored entries
as they were, slices them for every shape the event tries (prune, each recovery) and puts them
back on a rollback; when an event ends with the new shapes, it is told to ``settle``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from driftd.adaptation.heads import HeadEntry, HeadRegistry
from driftd.pruning.shrink import ShrinkResult, slice_head_state, slice_tensor


class StoredHeadsFollower:
    """Reshapes a head registry's entries like the live model (see the module docstring)."""

    def __init__(self, registry: HeadRegistry) -> None:
        self.registry = registry
        self._originals: dict[str, HeadEntry] | None = None

    def __call__(self, result: ShrinkResult | None) -> None:
        """The live model now has ``result``'s shapes (None: the event's unpruned ones)."""
        if self._originals is None:
            if result is None:
                return
            self._originals = {
                name: _copy(self.registry.entry(name)) for name in self.registry.names
            }
        for name, original in self._originals.items():
            if name not in self.registry:
                continue
            entry = self.registry.entry(name)
            if result is None:
                restored = _copy(original)
                entry.weights, entry.moments, entry.trunk = (
                    restored.weights, restored.moments, restored.trunk,
                )  # fmt: skip
            else:
                entry.weights = slice_head_state(original.weights, result)
                entry.moments = {
                    key: _sliced(values, result, "head." + key)
                    for key, values in original.moments.items()
                }
                entry.trunk = slice_head_state(original.trunk, result, prefix="shared.")
        if result is None:
            self._originals = None

    def settle(self) -> None:
        """The event ended with the live shapes kept: forget the unpruned entries."""
        self._originals = None


def _copy(entry: HeadEntry) -> HeadEntry:
    """A shallow copy (tensors are never modified in place, only replaced)."""
    return HeadEntry(
        dict(entry.weights),
        {key: dict(values) for key, values in entry.moments.items()},
        entry.reference_loss,
        dict(entry.trunk),
    )


def _sliced(
    values: Mapping[str, torch.Tensor], result: ShrinkResult, name: str
) -> dict[str, torch.Tensor]:
    """Optimizer state of one parameter: tensors shaped like it are sliced, scalars kept."""
    steps = result.slices.get(name)
    if not steps:
        return dict(values)
    return {key: slice_tensor(value, steps).clone() if value.dim() else value
            for key, value in values.items()}  # fmt: skip
