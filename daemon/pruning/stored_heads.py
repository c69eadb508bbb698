"""Stored domain heads follow the live model through structured pruning.

A structured pruning event shrinks the live trunk and head; the trunks and heads of the other
known domains, in the :class:`~driftd.adaptation.domain_store.DomainStore`, must shrink the same
way or a later switch to them would not fit. :class:`StoredHeadsFollower` is the
pruner's ``on_reshape`` callback: at the first reshape of an event it keeps the stored entries
as they were, slices them for every shape the event tries (prune, each recovery) and puts them
back on a rollback; when an event ends with the new shapes, it is told to ``settle``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from driftd.adaptation.domain_store import DomainStore, StoredDomain
from driftd.pruning.shrink import ShrinkResult, slice_head_state, slice_tensor


class StoredHeadsFollower:
    """Reshapes the stored domains' trunks and heads like the live model (see the module)."""

    def __init__(self, store: DomainStore) -> None:
        self.store = store
        self._originals: dict[str, StoredDomain] | None = None

    def __call__(self, result: ShrinkResult | None) -> None:
        """The live model now has ``result``'s shapes (None: the event's unpruned ones)."""
        if self._originals is None:
            if result is None:
                return
            self._originals = {name: _copy(self.store.entry(name)) for name in self.store.names}
        for name, original in self._originals.items():
            if name not in self.store:
                continue
            entry = self.store.entry(name)
            if result is None:
                restored = _copy(original)
                entry.head, entry.head_moments, entry.trunk = (
                    restored.head, restored.head_moments, restored.trunk,
                )  # fmt: skip
            else:
                entry.head = slice_head_state(original.head, result)
                entry.head_moments = {
                    key: _sliced(values, result, "head." + key)
                    for key, values in original.head_moments.items()
                }
                entry.trunk = slice_head_state(original.trunk, result, prefix="shared.")
        if result is None:
            self._originals = None

    def settle(self) -> None:
        """The event ended with the live shapes kept: forget the unpruned entries."""
        self._originals = None


def _copy(entry: StoredDomain) -> StoredDomain:
    """A shallow copy (tensors are never modified in place, only replaced)."""
    return StoredDomain(
        head=dict(entry.head),
        head_moments={key: dict(values) for key, values in entry.head_moments.items()},
        reference_loss=entry.reference_loss,
        trunk=dict(entry.trunk),
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
