"""Floating-point operations per event of the Linear and Conv2d layers.

One multiply-add counts as 2 FLOPs. ``dense`` counts every weight, as a dense kernel computes
them, zeros included: the cost the model really has unless the runtime exploits sparsity.
``nonzero`` counts only the nonzero weights: what masks could save with a sparse kernel.
Structured pruning lowers both, since it removes the weights. Norms, activations, pooling and
biases are left out (a few percent at most for these models).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from driftd.pruning.measured import forward_with_hooks


def flops_per_event(model: nn.Module, n_features: int | None = None) -> dict[str, int]:
    """``{"dense": ..., "nonzero": ...}`` FLOPs of one event through ``model``.

    Args:
        model: Any model on flat ``(N, n_features)`` batches; quantized Linear layers of
            :mod:`driftd.pruning.quantize` count like float ones.
        n_features: Input width; defaults to ``model.config["n_features"]``.

    Raises:
        ValueError: The input width is unknown.
    """
    if n_features is None:
        config = getattr(model, "config", None)
        n_features = config.get("n_features") if isinstance(config, dict) else None
    if not isinstance(n_features, int):
        raise ValueError("flops_per_event needs n_features (the model has no config saying it)")
    totals = {"dense": 0, "nonzero": 0}

    def counter(module: nn.Module) -> Callable[[nn.Module, tuple[Tensor, ...], Tensor], None]:
        def count(_: nn.Module, __: tuple[Tensor, ...], output: Tensor) -> None:
            weight = _weight_of(module)
            positions = output[0, 0].numel() if isinstance(module, nn.Conv2d) else 1
            totals["dense"] += 2 * weight.numel() * positions
            totals["nonzero"] += 2 * int(torch.count_nonzero(weight)) * positions

        return count

    handles = [
        module.register_forward_hook(counter(module))
        for module in model.modules()
        if isinstance(module, nn.Conv2d | nn.Linear) or hasattr(module, "weight_int8")
    ]
    reference = next(model.parameters(), None)
    device = reference.device if reference is not None else None
    forward_with_hooks(model, torch.zeros(1, n_features, device=device), handles)
    return totals


def _weight_of(module: nn.Module) -> Tensor:
    weight = getattr(module, "weight_int8", None)
    if isinstance(weight, Tensor):
        return weight
    weight = getattr(module, "weight", None)
    assert isinstance(weight, Tensor)
    return weight.detach()
