"""Optimizer state as flat tensors plus JSON, so snapshots never need pickle.

``torch.optim.Optimizer.state_dict()`` mixes tensors (momentum buffers, Adam moments, 0-dim
``step`` counters) with plain values (hyper-parameters, tuples such as ``betas``, ``None``).
:func:`flatten_optimizer_state` splits it into a ``{key: tensor}`` dict for safetensors and a
JSON-serialisable description; :func:`unflatten_optimizer_state` reassembles what
``load_state_dict`` accepts, tuples included, so a resumed optimizer continues bit-identically.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

FORMAT = 1
_TUPLE = "__tuple__"

TensorState = tuple[dict[str, torch.Tensor], dict[str, Any]]
"""A stateful component's ``state_dict()``: tensors (for safetensors) and JSON-serialisable meta.

Every core component's state has one of two shapes: ``dict[str, Any]`` when it is plain JSON,
:data:`TensorState` when it holds tensors. ``load_state_dict`` takes the same shape back, as
``Mapping`` parameters, and returns None: ``load_state_dict(state)`` for the first,
``load_state_dict(tensors, meta)`` for the second (the tensors may hold other keys, so an owner
can pass its part of a snapshot's tensors without copying).
"""


def flatten_optimizer_state(
    state_dict: Mapping[str, Any], *, prefix: str = "optimizer"
) -> TensorState:
    """Split an optimizer state_dict into tensors and JSON-serialisable metadata.

    Tensors are detached copies, so later optimizer steps do not change them.

    Args:
        state_dict: What ``Optimizer.state_dict()`` returned.
        prefix: First component of every tensor key, e.g. ``optimizer.state.0.exp_avg``.

    Returns:
        ``(tensors, meta)``: give both to :func:`unflatten_optimizer_state` to rebuild it.

    Raises:
        TypeError: A value is neither a tensor nor representable in JSON.
    """
    tensors: dict[str, torch.Tensor] = {}
    state_entries: list[dict[str, Any]] = []
    for param_id, param_state in state_dict["state"].items():
        tensor_names: list[str] = []
        values: dict[str, Any] = {}
        for name, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.state.{param_id}.{name}"] = value.detach().clone()
                tensor_names.append(name)
            else:
                values[name] = _to_json(value, where=f"state[{param_id!r}][{name!r}]")
        state_entries.append(
            {
                "param": _to_json(param_id, where="state key"),
                "tensors": tensor_names,
                "values": values,
            }
        )
    groups: list[dict[str, Any]] = []
    group_tensor_names: list[list[str]] = []
    for index, group in enumerate(state_dict["param_groups"]):
        plain: dict[str, Any] = {}
        names: list[str] = []
        for key, value in group.items():
            if isinstance(value, torch.Tensor):  # e.g. a tensor learning rate
                tensors[f"{prefix}.param_groups.{index}.{key}"] = value.detach().clone()
                names.append(key)
            else:
                plain[key] = _to_json(value, where=f"param_groups[{index}][{key!r}]")
        groups.append(plain)
        group_tensor_names.append(names)
    meta = {
        "format": FORMAT,
        "prefix": prefix,
        "state": state_entries,
        "param_groups": groups,
        "param_group_tensors": group_tensor_names,
    }
    return tensors, meta


def unflatten_optimizer_state(
    tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]
) -> dict[str, Any]:
    """Rebuild the state_dict that :func:`flatten_optimizer_state` split.

    Args:
        tensors: The tensors it returned (other keys are ignored, so a snapshot's whole
            training dict can be passed).
        meta: The metadata it returned, possibly after a JSON round trip.

    Returns:
        A dict ``Optimizer.load_state_dict`` accepts.

    Raises:
        ValueError: The metadata has an unknown format.
        KeyError: A tensor the metadata names is missing.
    """
    if meta.get("format") != FORMAT:
        raise ValueError(f"unknown optimizer state format {meta.get('format')!r}")
    prefix = meta["prefix"]
    state: dict[Any, dict[str, Any]] = {}
    for entry in meta["state"]:
        param_id = _from_json(entry["param"])
        param_state = {name: _from_json(value) for name, value in entry["values"].items()}
        for name in entry["tensors"]:
            param_state[name] = tensors[f"{prefix}.state.{param_id}.{name}"]
        state[param_id] = param_state
    groups: list[dict[str, Any]] = []
    for index, (plain, names) in enumerate(
        zip(meta["param_groups"], meta["param_group_tensors"], strict=True)
    ):
        group = {key: _from_json(value) for key, value in plain.items()}
        for key in names:
            group[key] = tensors[f"{prefix}.param_groups.{index}.{key}"]
        groups.append(group)
    return {"state": state, "param_groups": groups}


def _to_json(value: Any, *, where: str) -> Any:
    """Encode a state value as JSON-compatible data, marking tuples so they come back."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, tuple):
        return {_TUPLE: [_to_json(item, where=where) for item in value]}
    if isinstance(value, list):
        return [_to_json(item, where=where) for item in value]
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return {key: _to_json(item, where=where) for key, item in value.items()}
    raise TypeError(f"optimizer {where}: cannot store {type(value).__name__} without pickle")


def _from_json(value: Any) -> Any:
    """Invert :func:`_to_json`."""
    if isinstance(value, list):
        return [_from_json(item) for item in value]
    if isinstance(value, dict):
        if set(value) == {_TUPLE}:
            return tuple(_from_json(item) for item in value[_TUPLE])
        return {key: _from_json(item) for key, item in value.items()}
    return value
