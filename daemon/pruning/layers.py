"""Where a model can be pruned: its weight matrices and kernels, and its removable units.

Unstructured pruning works on any model: every ``nn.Linear`` / ``nn.Conv2d`` weight is a
candidate. Structured pruning removes whole units (output neurons of a Linear, output channels
of a Conv2d) and the matching inputs of the next such layer, so it must know how data flows.
It supports the built-in kinds (``mlp`` and ``cnn`` configs of :mod:`driftd.learning.models`), whose
trunk and head are flat ``nn.Sequential`` stacks: the leaf modules in registration order are the
forward pass. A unit's path to its consumer may cross norm layers (sliced with it), activations,
dropout and pooling (unit-wise, untouched) and the CNN's flatten boundary (one channel feeds
``H * W`` consecutive columns of the next Linear). A wide trunk (``wide`` config) appends its
input to its output: the head's first Linear then has those columns after the units', which
pruning always keeps. The head's last layer is never a unit layer: its units are the classes.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

PARTS = ("shared", "head")
WeightLayer = nn.Linear | nn.Conv2d
NORMS = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)
ACTIVATIONS = (nn.ReLU, nn.GELU, nn.Tanh, nn.SiLU, nn.LeakyReLU, nn.Identity)
UNIT_WISE = (nn.Dropout, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Flatten)


class StructureError(ValueError):
    """The model's layout is not one structured pruning understands."""


@dataclass(frozen=True)
class PrunableWeight:
    """A weight matrix or kernel that unstructured pruning may zero.

    Attributes:
        name: Parameter name in ``model.named_parameters()``, e.g. ``shared.0.weight``.
        layer: Name of the module owning it.
        part: ``shared`` or ``head`` (the trunk/head split; ``shared`` for other models).
        is_output: Whether it is the head's last layer (its rows are the outputs/classes).
    """

    name: str
    layer: str
    part: str
    is_output: bool


@dataclass(frozen=True)
class UnitLayer:
    """A layer whose output units structured pruning may remove.

    Attributes:
        name: Module name, e.g. ``shared.0``.
        part: ``shared`` or ``head``.
        n_units: Output features (Linear) or channels (Conv2d) now.
        norms: Names of the norm layers between it and its consumer (sliced with it).
        signal: Module whose output carries the units' activations (after norm and activation).
        consumer: Name of the next Linear/Conv2d, whose inputs are the units.
        columns_per_unit: Consumer input columns fed by one unit (``H * W`` across a flatten).
        config_key: The model config list holding its width (``hidden``, ``channels``,
            ``head_hidden``).
        config_index: Position of its width in that list.
        passthrough: Consumer input columns after the units' that no unit feeds (a wide trunk's
            own input, for its last layer); always kept.
    """

    name: str
    part: str
    n_units: int
    norms: tuple[str, ...]
    signal: str
    consumer: str
    columns_per_unit: int
    config_key: str
    config_index: int
    passthrough: int = 0


def part_of(name: str) -> str:
    """The model part (``shared``/``head``) a parameter or module name belongs to."""
    first = name.split(".", 1)[0]
    return first if first in PARTS else "shared"


def prunable_weights(model: nn.Module) -> list[PrunableWeight]:
    """Every Linear/Conv2d weight of ``model``, in registration order."""
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, WeightLayer)]
    head_layers = [name for name, _ in layers if part_of(name) == "head"]
    output = head_layers[-1] if head_layers else None
    return [
        PrunableWeight(f"{name}.weight", name, part_of(name), name == output) for name, _ in layers
    ]


def leaf_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules without children, in registration order (the forward pass of built-ins)."""
    return [(name, m) for name, m in model.named_modules() if next(m.children(), None) is None]


def unit_layers(model: nn.Module) -> list[UnitLayer]:
    """The layers of a built-in model whose units may be removed, in forward order.

    Raises:
        StructureError: The model is not a built-in ``mlp``/``cnn`` or has a layer structured
            pruning cannot slice (e.g. grouped convolutions, a GroupNorm with 1 < groups < C).
    """
    found_config = getattr(model, "config", None)
    config: dict[str, Any] = found_config if isinstance(found_config, dict) else {}
    kind = config.get("kind")
    if kind not in ("mlp", "cnn"):
        raise StructureError(f"structured pruning needs a built-in mlp or cnn model, got {kind!r}")
    leaves = leaf_modules(model)
    positions = [i for i, (_, m) in enumerate(leaves) if isinstance(m, WeightLayer)]
    found: list[UnitLayer] = []
    counters = {"shared": 0, "head": 0}
    wide = int(config["n_features"]) if config.get("wide", False) else 0
    for position, next_position in itertools.pairwise(positions):
        part = part_of(leaves[position][0])
        key = "head_hidden" if part == "head" else ("hidden" if kind == "mlp" else "channels")
        crosses = part == "shared" and part_of(leaves[next_position][0]) == "head"
        found.append(
            _unit_layer(
                leaves, position, next_position, part, key, counters[part], wide if crosses else 0
            )
        )
        counters[part] += 1
    for key, part in (
        ("hidden" if kind == "mlp" else "channels", "shared"),
        ("head_hidden", "head"),
    ):
        if len(config.get(key, [])) != counters[part]:
            raise StructureError(f"model config {key} does not match the {part} layers")
    return found


def _unit_layer(
    leaves: list[tuple[str, nn.Module]],
    start: int,
    end: int,
    part: str,
    key: str,
    index: int,
    passthrough: int,
) -> UnitLayer:
    name, layer = leaves[start]
    consumer_name, consumer = leaves[end]
    n_units = _units_of(layer)
    if isinstance(layer, nn.Conv2d) and layer.groups != 1:
        raise StructureError(f"{name}: grouped convolutions are not supported")
    norms: list[str] = []
    signal = name
    crossed_flatten = False
    for between_name, module in leaves[start + 1 : end]:
        if isinstance(module, NORMS):
            _check_norm(between_name, module, n_units)
            norms.append(between_name)
            signal = between_name
        elif isinstance(module, ACTIVATIONS):
            signal = between_name
        elif isinstance(module, UNIT_WISE):
            crossed_flatten |= isinstance(module, nn.Flatten)
        else:
            raise StructureError(f"{between_name}: cannot prune across {type(module).__name__}")
    consumer_inputs = _inputs_of(consumer) - passthrough
    if consumer_inputs % n_units or (consumer_inputs != n_units and not crossed_flatten):
        raise StructureError(f"{consumer_name}: {consumer_inputs} inputs from {n_units} units")
    return UnitLayer(
        name, part, n_units, tuple(norms), signal, consumer_name,
        consumer_inputs // n_units, key, index, passthrough,
    )  # fmt: skip


def _check_norm(name: str, module: nn.Module, n_units: int) -> None:
    if isinstance(module, nn.GroupNorm) and module.num_groups not in (1, module.num_channels):
        raise StructureError(f"{name}: GroupNorm with {module.num_groups} groups cannot be sliced")
    if isinstance(module, nn.LayerNorm) and tuple(module.normalized_shape) != (n_units,):
        raise StructureError(f"{name}: LayerNorm must normalise the units alone")


def _units_of(layer: nn.Module) -> int:
    """Output units of a Linear (features) or Conv2d (channels)."""
    assert isinstance(layer, WeightLayer)
    return int(layer.weight.shape[0])


def _inputs_of(layer: nn.Module) -> int:
    """Input units of a Linear (features) or Conv2d (channels, ungrouped)."""
    assert isinstance(layer, WeightLayer)
    return int(layer.weight.shape[1])


def unit_columns(units: Tensor, columns_per_unit: int) -> Tensor:
    """The consumer input columns fed by ``units`` (channel-major across a flatten)."""
    offsets = torch.arange(columns_per_unit, device=units.device)
    return (units[:, None] * columns_per_unit + offsets).reshape(-1)


def consumer_columns(layer: UnitLayer, units: Tensor) -> Tensor:
    """The consumer input columns kept with ``units``: theirs, then every passthrough column."""
    fed = unit_columns(units, layer.columns_per_unit)
    start = layer.n_units * layer.columns_per_unit
    rest = torch.arange(start, start + layer.passthrough, device=units.device)
    return torch.cat([fed, rest])


def unit_signal(activation: Tensor) -> Tensor:
    """One value per unit and event: conv maps are averaged over their spatial positions."""
    return activation.flatten(2).mean(dim=2) if activation.dim() > 2 else activation
