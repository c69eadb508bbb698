"""Structured pruning that physically shrinks the layers, and the optimizer state with them.

:func:`shrink_model` removes units (output neurons / channels) from a built-in model: the
layer's rows and bias, the norm layers' parameters and running statistics after it, and the
consumer's matching input columns (``H * W`` of them per channel across the CNN's flatten). The
head's output layer is never shrunk. The result's ``config`` lists the new widths in the keys
the model was built from (``hidden``/``channels``/``head_hidden``), so
``driftd.learning.models.build_model(result.config, generator)`` rebuilds the same shapes.

:func:`rebind_optimizer` then points an existing optimizer at the new parameters, slicing Adam's
moments / SGD's momentum the same way, so training continues as if the removed units had never
been there (their param groups, names and hyper-parameters are kept).
"""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from driftd.pruning.layers import StructureError, consumer_columns, unit_layers

Slices = tuple[tuple[int, Tensor], ...]


@dataclass(frozen=True)
class ShrinkResult:
    """A shrunk model and how its tensors map to the original's.

    Attributes:
        model: The new, smaller model (the original is left untouched).
        kept_units: Layer name to the kept unit indices, sorted, in the original's numbering.
        slices: Parameter/buffer name to ``(dim, kept indices)`` steps taking an original
            tensor to the new one (see :func:`slice_tensor`).
        config: The new architecture config (also set as ``model.config``).
    """

    model: nn.Module
    kept_units: dict[str, Tensor]
    slices: dict[str, Slices]
    config: dict[str, Any]


def slice_tensor(tensor: Tensor, slices: Slices) -> Tensor:
    """Keep, along each listed dimension in turn, only the given indices."""
    for dim, index in slices:
        tensor = tensor.index_select(dim, index.to(tensor.device))
    return tensor


def shrink_model(model: nn.Module, keep: Mapping[str, Tensor]) -> ShrinkResult:  # noqa: C901
    """A smaller copy of a built-in model keeping only the ``keep`` units of each named layer.

    Args:
        model: A built-in ``mlp``/``cnn`` :class:`~driftd.learning.models.SplitModel`.
        keep: Unit layer name (see :func:`~driftd.pruning.layers.unit_layers`) to the indices
            of the units to keep; layers not named keep every unit.

    Raises:
        StructureError: The model cannot be pruned structurally, a name is not a unit layer,
            or an index set is empty, out of range or repeated.
    """
    layers = {layer.name: layer for layer in unit_layers(model)}
    steps: dict[str, list[tuple[int, Tensor]]] = defaultdict(list)
    kept_units: dict[str, Tensor] = {}
    norm_sizes: dict[str, int] = {}
    config = copy.deepcopy(_config_of(model))
    for name, indices in keep.items():
        if name not in layers:
            raise StructureError(f"{name!r} is not a prunable unit layer ({sorted(layers)})")
        layer = layers[name]
        kept = _checked(name, indices, layer.n_units)
        kept_units[name] = kept
        config[layer.config_key][layer.config_index] = len(kept)
        norm_sizes |= {norm: len(kept) for norm in layer.norms}
        for owner in (name, *layer.norms):
            for attr, tensor in _tensors_of(model.get_submodule(owner)):
                if tensor.dim() >= 1 and tensor.shape[0] == layer.n_units:
                    steps[f"{owner}.{attr}"].append((0, kept))
        steps[f"{layer.consumer}.weight"].append((1, consumer_columns(layer, kept)))
    slices = {name: tuple(sorted(parts, key=lambda part: part[0])) for name, parts in steps.items()}
    shrunk = copy.deepcopy(model)
    for name, tensor_slices in slices.items():
        owner, _, attr = name.rpartition(".")
        _replace(shrunk.get_submodule(owner), attr, tensor_slices)
    for name, layer in layers.items():
        if name in keep:
            _resize_weight_layer(shrunk.get_submodule(name))
            _resize_weight_layer(shrunk.get_submodule(layer.consumer))
    for owner, size in norm_sizes.items():
        _resize_norm(shrunk.get_submodule(owner), size)
    setattr(shrunk, "config", config)  # noqa: B010 - any built-in model, typed nn.Module
    if hasattr(shrunk, "embedding_dim"):
        setattr(shrunk, "embedding_dim", _first_linear_inputs(shrunk.get_submodule("head")))  # noqa: B010
    return ShrinkResult(shrunk, kept_units, slices, config)


@torch.no_grad()
def rebind_optimizer(
    optimizer: torch.optim.Optimizer,
    old_model: nn.Module,
    new_model: nn.Module,
    slices: Mapping[str, Slices],
) -> None:
    """Point ``optimizer`` at ``new_model``'s parameters (same names), slicing its state.

    Per-entry state tensors (shaped like their parameter: Adam's ``exp_avg``/``exp_avg_sq``,
    SGD's ``momentum_buffer``) are sliced by ``slices``; scalars such as ``step`` are kept.
    Parameters the optimizer holds that are not ``old_model``'s are left alone.
    """
    names = {id(param): name for name, param in old_model.named_parameters()}
    new_params = dict(new_model.named_parameters())

    def mapped(param: Tensor) -> Tensor:
        name = names.get(id(param))
        return param if name is None else new_params[name]

    for group in optimizer.param_groups:
        group["params"] = [mapped(param) for param in group["params"]]
    moved: defaultdict[Tensor, dict[str, Any]] = defaultdict(dict)
    for param, state in optimizer.state.items():
        name = names.get(id(param))
        if name is None:
            moved[param] = state
            continue
        steps = slices.get(name, ())
        moved[new_params[name]] = {
            key: slice_tensor(value, steps).clone()
            if isinstance(value, Tensor) and value.shape == param.shape
            else value
            for key, value in state.items()
        }
    optimizer.state = moved


def slice_head_state(
    state: Mapping[str, Tensor], result: ShrinkResult, *, prefix: str = "head."
) -> dict[str, Tensor]:
    """Shrink a stored head's ``state_dict`` (e.g. another domain's) like the live head.

    Keys are the head's own (``0.weight``); ``prefix`` is how the model names the head.
    """
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        steps = result.slices.get(prefix + key)
        out[key] = slice_tensor(value, steps).clone() if steps else value
    return out


def _config_of(model: nn.Module) -> dict[str, Any]:
    config = getattr(model, "config", None)
    if not isinstance(config, dict):
        raise StructureError("the model has no architecture config")
    return config


def _checked(name: str, indices: Tensor, n_units: int) -> Tensor:
    kept = torch.as_tensor(indices, dtype=torch.long).flatten().cpu()
    if kept.numel() == 0:
        raise StructureError(f"{name}: cannot remove every unit")
    distinct = len(set(kept.tolist())) == len(kept)
    if int(kept.min()) < 0 or int(kept.max()) >= n_units or not distinct:
        raise StructureError(f"{name}: unit indices must be distinct and in [0, {n_units})")
    return kept.sort().values


def _tensors_of(module: nn.Module) -> list[tuple[str, Tensor]]:
    params = [(name, p) for name, p in module.named_parameters(recurse=False)]
    buffers = [(name, b) for name, b in module.named_buffers(recurse=False) if b is not None]
    return params + buffers


def _replace(module: nn.Module, attr: str, steps: Slices) -> None:
    old = getattr(module, attr)
    new = slice_tensor(old.detach(), steps).clone()
    if isinstance(old, nn.Parameter):
        setattr(module, attr, nn.Parameter(new, requires_grad=old.requires_grad))
    else:
        module.register_buffer(attr, new)


def _resize_weight_layer(module: nn.Module) -> None:
    """Make a sliced Linear/Conv2d's size attributes agree with its weight."""
    if isinstance(module, nn.Linear):
        module.out_features, module.in_features = module.weight.shape
    elif isinstance(module, nn.Conv2d):
        module.out_channels, module.in_channels = module.weight.shape[:2]


def _resize_norm(module: nn.Module, size: int) -> None:
    """Make a sliced norm layer's size attributes say ``size`` units."""
    if isinstance(module, nn.LayerNorm):
        module.normalized_shape = (size,)
    elif isinstance(module, nn.GroupNorm):
        if module.num_groups == module.num_channels:
            module.num_groups = size
        module.num_channels = size
    elif isinstance(module, nn.modules.batchnorm._BatchNorm):
        module.num_features = size


def _first_linear_inputs(head: nn.Module) -> int:
    for module in head.modules():
        if isinstance(module, nn.Linear):
            return int(module.in_features)
    raise StructureError("the head has no Linear layer")
