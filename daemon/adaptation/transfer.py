"""Transfer from another deployment's snapshot: its architecture, and optionally its weights.

*Structure transfer* builds a fresh, seeded model from the other snapshot's architecture config.
*Parameter transfer* (warm start) then loads every tensor whose name and shape match, so a trunk
transfers even when the head differs (another class count); the optimizer starts fresh and the
offsets are not taken (they belong to the other deployment's stream). Reading the snapshot is
the composition root's business: this module only sees a :class:`~driftd.ports.Snapshot`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


def transferred_config(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The architecture config recorded in another snapshot's manifest.

    Raises:
        ValueError: The manifest has no model config.
    """
    config = manifest.get("model")
    if not isinstance(config, dict):
        raise ValueError("the transfer snapshot's manifest has no model config")
    return dict(config)


def transfer_weights(model: nn.Module, weights: Mapping[str, torch.Tensor]) -> list[str]:
    """Copy every tensor of ``weights`` whose key and shape match ``model``'s.

    Returns:
        The keys copied, in model order.
    """
    own = model.state_dict()
    matching = {
        key: value
        for key, value in weights.items()
        if key in own and tuple(own[key].shape) == tuple(value.shape)
    }
    model.load_state_dict(matching, strict=False)
    return [key for key in own if key in matching]
