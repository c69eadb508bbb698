"""An int8 copy of the model beside each snapshot, with its measured accuracy cost.

For CPU serving: :func:`~driftd.pruning.quantize.quantize_int8` quantizes the Linear layers
(per-row int8 weights, per-event int8 activations). Before it is written, the copy is compared
with the float model on the most recent labelled events, and the figures go into the manifest
(``int8``: float and int8 accuracy, their delta, agreement, events), so whoever serves it knows
what it costs. The window is not part of the snapshot: after a restart the first figures come
from fewer events.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from driftd.adaptation.replay import ReplayBuffer
from driftd.decode import DecodedBatch
from driftd.pruning.quantize import int8_accuracy_delta, quantize_int8


class Int8Exporter:
    """Keeps the recent labelled events and quantizes the model for a snapshot.

    Args:
        window_events: Recent labelled events the accuracy delta is measured on.
        task: ``classification`` or ``regression``.
    """

    def __init__(self, *, window_events: int, task: str) -> None:
        self.task = task
        self.window = ReplayBuffer(window_events, mode="sliding", generator=torch.Generator())

    def observe(self, batch: DecodedBatch) -> None:
        """Remember the batch's labelled events."""
        labelled = batch.labelled
        if bool(labelled.all()):
            self.window.extend(batch.x, batch.y)
        elif bool(labelled.any()):
            self.window.extend(batch.x[labelled], batch.y[labelled])

    def export(self, model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The int8 copy's tensors and the manifest entry measuring it."""
        on_cpu = next(model.parameters()).device.type == "cpu"
        float_model = model if on_cpu else copy.deepcopy(model).cpu()
        quantized = quantize_int8(float_model)
        x, y = self.window.since(0)
        figures: dict[str, Any] = {"events": 0}
        if len(x):
            figures = int8_accuracy_delta(float_model, quantized, x, y, task=self.task)
        tensors = {key: value.detach().clone() for key, value in quantized.state_dict().items()}
        return tensors, figures | {"file": "model.int8.safetensors"}
