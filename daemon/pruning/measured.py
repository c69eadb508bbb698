"""Importance criteria measured on a window of recent events: output error and entropy.

* :func:`unit_output_error_scores` removes each unit in turn, for real (its activation is
  zeroed, which is what removing it does to the layers after it), and measures how much the
  model's output or loss on the window changes. Units are batched: ``k`` copies of the window
  go through the whole model at once, a forward hook zeroing unit ``j`` in copy ``j`` (the
  model's own forward, so a wide trunk's appended input reaches the head as it does in use).
* :func:`weight_output_error_scores` is the unstructured counterpart: zeroing one weight
  ``w_ij`` changes the layer's output ``i`` by ``w_ij * x_j`` for each event, so its mean
  squared change ``w_ij^2 * E[x_j^2]`` is computed exactly from the recorded layer inputs.
* :func:`activation_entropy_scores`: units whose activations on the window spread over few
  histogram bins (dead or saturated units) carry little information and go first.

All run in eval mode without gradients and restore the model's mode afterwards. Higher scores
are more important.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Literal

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from driftd.pruning.layers import WeightLayer, unit_layers, unit_signal

LossFn = Callable[[Tensor, Tensor], Tensor]
_ELEMENTS_PER_CHUNK = 4_000_000  # bounds the memory of the batched removals


@contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode and no gradients inside, the previous mode restored after."""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for module, training in modes.items():
            module.training = training


def forward_with_hooks(model: nn.Module, x: Tensor, handles: Iterable[RemovableHandle]) -> None:
    """One eval-mode forward of ``x`` for the hooks to record; they are removed afterwards."""
    try:
        with evaluating(model):
            model(x)
    finally:
        for handle in handles:
            handle.remove()


def unit_output_error_scores(
    model: nn.Module,
    x: Tensor,
    *,
    measure: Literal["output", "loss"] = "output",
    y: Tensor | None = None,
    loss_fn: LossFn | None = None,
) -> dict[str, Tensor]:
    """How much removing each unit changes the model on ``x``, per unit layer.

    Args:
        model: A built-in model (see :func:`~driftd.pruning.layers.unit_layers`).
        x: A window of recent inputs.
        measure: ``output``: mean squared change of the model's outputs; ``loss``: absolute
            change of the mean loss against ``y``.
        y: Targets of ``x`` (``loss`` only).
        loss_fn: Per-event loss of outputs against targets (``loss`` only).

    Raises:
        ValueError: ``loss`` without ``y`` and ``loss_fn``.
    """
    if measure == "loss" and (y is None or loss_fn is None):
        raise ValueError("measure='loss' needs y and loss_fn")

    def loss_of(outputs: Tensor) -> Tensor:
        assert y is not None
        assert loss_fn is not None
        return loss_fn(outputs, y).mean()

    scores: dict[str, Tensor] = {}
    layers = unit_layers(model)
    sizes: dict[str, int] = {}
    handles = [
        model.get_submodule(layer.signal).register_forward_hook(_size_recorder(layer.name, sizes))
        for layer in layers
    ]
    with evaluating(model):
        try:
            baseline = model(x)
        finally:
            for handle in handles:
                handle.remove()
        base_loss = loss_of(baseline) if measure == "loss" else baseline.new_zeros(())
        for layer in layers:
            signal = model.get_submodule(layer.signal)
            chunk = max(1, _ELEMENTS_PER_CHUNK // max(1, sizes[layer.name]))
            parts = []
            for start in range(0, layer.n_units, chunk):
                units = torch.arange(start, min(start + chunk, layer.n_units))
                handle = signal.register_forward_hook(_without_units(units, len(x)))
                try:  # the whole model runs on the copies: a wide trunk appends its own input
                    copies = x.repeat(len(units), *([1] * (x.dim() - 1)))
                    outputs = model(copies).view(len(units), *baseline.shape)
                finally:
                    handle.remove()
                if measure == "output":
                    change = (outputs - baseline).pow(2).flatten(2).sum(dim=2).mean(dim=1)
                else:
                    losses = torch.stack([loss_of(out) for out in outputs])
                    change = (losses - base_loss).abs()
                parts.append(change)
            scores[layer.name] = torch.cat(parts)
    return scores


def _size_recorder(name: str, sizes: dict[str, int]) -> Callable[[nn.Module, object, Tensor], None]:
    def record(_: nn.Module, __: object, output: Tensor) -> None:
        sizes[name] = output.numel()

    return record


def _without_units(units: Tensor, n_events: int) -> Callable[[nn.Module, object, Tensor], Tensor]:
    """A forward hook zeroing unit ``units[j]`` in copy ``j`` of a batch of stacked copies."""

    def zero(_: nn.Module, __: object, output: Tensor) -> Tensor:
        copies = output.view(len(units), n_events, *output.shape[1:]).clone()
        copies[torch.arange(len(units)), :, units] = 0.0
        return copies.flatten(0, 1)

    return zero


def weight_output_error_scores(model: nn.Module, x: Tensor) -> dict[str, Tensor]:
    """``w^2 * E[input^2]`` per weight: the mean squared change of its layer's output on ``x``.

    For a convolution the input is each weight's receptive-field entry, averaged over events
    and output positions.
    """
    energies: dict[str, Tensor] = {}
    layers = {name: m for name, m in model.named_modules() if isinstance(m, WeightLayer)}

    def recorder(name: str, layer: WeightLayer) -> Callable[[nn.Module, tuple[Tensor, ...]], None]:
        def record(_: nn.Module, inputs: tuple[Tensor, ...]) -> None:
            energies[name] = _input_energy(layer, inputs[0])

        return record

    handles = [m.register_forward_pre_hook(recorder(n, m)) for n, m in layers.items()]
    forward_with_hooks(model, x, handles)
    return {
        f"{name}.weight": layer.weight.detach().pow(2) * energies[name]
        for name, layer in layers.items()
        if name in energies
    }


def _input_energy(layer: WeightLayer, inputs: Tensor) -> Tensor:
    """Mean square of each input entry a weight multiplies, shaped to broadcast with it."""
    if isinstance(layer, nn.Linear):
        return inputs.flatten(0, -2).pow(2).mean(dim=0)[None, :]
    patches = F.unfold(
        inputs, layer.kernel_size, dilation=layer.dilation, padding=layer.padding,  # type: ignore[arg-type]
        stride=layer.stride,
    )  # fmt: skip
    energy = patches.pow(2).mean(dim=(0, 2))
    return energy.view(1, *layer.weight.shape[1:])


def activation_entropy_scores(model: nn.Module, x: Tensor, *, bins: int = 16) -> dict[str, Tensor]:
    """Shannon entropy (bits) of each unit's activation histogram on ``x``, per unit layer.

    A conv channel's activation per event is its spatial mean (Luo & Wu, 2017). Each unit's
    range on the window is split into ``bins`` equal bins; a constant unit scores 0.

    Raises:
        ValueError: ``bins`` below 2.
    """
    if bins < 2:
        raise ValueError(f"bins must be at least 2, got {bins}")
    layers = unit_layers(model)
    signals: dict[str, Tensor] = {}
    modules = dict(model.named_modules())

    def recorder(name: str) -> Callable[[nn.Module, tuple[Tensor, ...], Tensor], None]:
        def record(_: nn.Module, __: tuple[Tensor, ...], output: Tensor) -> None:
            signals[name] = unit_signal(output)

        return record

    handles = [
        modules[layer.signal].register_forward_hook(recorder(layer.name)) for layer in layers
    ]
    forward_with_hooks(model, x, handles)
    return {name: histogram_entropy(values, bins) for name, values in signals.items()}


def histogram_entropy(values: Tensor, bins: int) -> Tensor:
    """Entropy in bits of each column of ``values`` (events x units), binned over its range."""
    low = values.min(dim=0).values
    width = values.max(dim=0).values - low
    scaled = (values - low) / torch.where(width > 0, width, torch.ones_like(width))
    index = (scaled * bins).long().clamp_(0, bins - 1)
    counts = torch.zeros(values.shape[1], bins, dtype=values.dtype, device=values.device)
    counts.scatter_add_(1, index.T, torch.ones_like(index.T, dtype=values.dtype))
    p = counts / max(1, values.shape[0])
    entropy = -(p * torch.log2(torch.where(p > 0, p, torch.ones_like(p)))).sum(dim=1)
    return torch.where(width > 0, entropy, torch.zeros_like(entropy))
