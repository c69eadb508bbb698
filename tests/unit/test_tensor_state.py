"""Optimizer state survives flatten -> safetensors/JSON -> unflatten bit for bit."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from driftd.learning.tensor_state import flatten_optimizer_state, unflatten_optimizer_state

MakeOptimizer = Callable[[Iterator[torch.nn.Parameter]], torch.optim.Optimizer]

OPTIMIZERS: dict[str, MakeOptimizer] = {
    "sgd-momentum": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True),
    "adam": lambda params: torch.optim.Adam(params, lr=0.01, betas=(0.8, 0.95)),
    "adamw": lambda params: torch.optim.AdamW(params, lr=0.01, weight_decay=0.1, amsgrad=True),
}


def make_model(generator: torch.Generator) -> torch.nn.Module:
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    return model


def batches(count: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(16, 5, generator=generator), torch.randint(0, 3, (16,), generator=generator))
        for _ in range(count)
    ]


def train(model: torch.nn.Module, optimizer: torch.optim.Optimizer, data: list[Any]) -> None:
    model.train()
    for x, y in data:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


def through_storage(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> tuple[Any, Any]:
    """What a snapshot does: safetensors bytes for tensors, strict JSON for the rest."""
    return load_tensors(save_tensors(tensors)), json.loads(json.dumps(meta, allow_nan=False))


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_restored_optimizer_continues_bit_identically(name: str) -> None:
    make_optimizer = OPTIMIZERS[name]
    model = make_model(torch.Generator().manual_seed(1))
    optimizer = make_optimizer(model.parameters())
    train(model, optimizer, batches(3, seed=2))

    tensors, meta = through_storage(*flatten_optimizer_state(optimizer.state_dict()))
    resumed_model = make_model(torch.Generator().manual_seed(99))
    resumed_model.load_state_dict(model.state_dict())
    resumed = make_optimizer(resumed_model.parameters())
    resumed.param_groups[0]["lr"] = 123.0  # must be overwritten by the restored groups
    resumed.load_state_dict(unflatten_optimizer_state(tensors, meta))
    fresh_model = make_model(torch.Generator().manual_seed(99))
    fresh_model.load_state_dict(model.state_dict())
    fresh = make_optimizer(fresh_model.parameters())

    later = batches(4, seed=3)
    train(model, optimizer, later)
    train(resumed_model, resumed, later)
    train(fresh_model, fresh, later)
    for original, restored in zip(model.parameters(), resumed_model.parameters(), strict=True):
        assert torch.equal(original, restored)
    # Control: without the restored state the trajectories differ, so the check above can fail.
    assert not all(
        torch.equal(a, b) for a, b in zip(model.parameters(), fresh_model.parameters(), strict=True)
    )
    assert resumed.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]


def test_flattened_keys_meta_and_copies() -> None:
    model = make_model(torch.Generator().manual_seed(1))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.8, 0.95))
    train(model, optimizer, batches(2, seed=2))
    tensors, meta = flatten_optimizer_state(optimizer.state_dict())

    assert sorted(k for k in tensors if k.startswith("optimizer.state.0.")) == [
        "optimizer.state.0.exp_avg",
        "optimizer.state.0.exp_avg_sq",
        "optimizer.state.0.step",
    ]
    assert len(tensors) == 4 * 3
    assert tensors["optimizer.state.0.step"].shape == ()
    assert tensors["optimizer.state.0.step"].item() == 2.0
    assert meta["param_groups"][0]["betas"] == {"__tuple__": [0.8, 0.95]}
    assert meta["param_groups"][0]["params"] == [0, 1, 2, 3]
    json.dumps(meta, allow_nan=False)

    before = tensors["optimizer.state.0.exp_avg"].clone()
    train(model, optimizer, batches(1, seed=5))
    assert torch.equal(tensors["optimizer.state.0.exp_avg"], before)  # a copy, not a live view
    restored = unflatten_optimizer_state(tensors, json.loads(json.dumps(meta)))
    assert restored["param_groups"][0]["betas"] == (0.8, 0.95)
    assert restored["param_groups"][0]["foreach"] is None


def test_non_tensor_state_values_and_tensor_group_values_round_trip() -> None:
    state_dict = {
        "state": {0: {"n_iter": 4, "buffer": torch.ones(2), "history": [1.5, (2, 3)]}},
        "param_groups": [{"lr": torch.tensor(0.1), "params": [0], "name": "head"}],
    }
    tensors, meta = flatten_optimizer_state(state_dict, prefix="opt")
    assert set(tensors) == {"opt.state.0.buffer", "opt.param_groups.0.lr"}
    restored = unflatten_optimizer_state(*through_storage(tensors, meta))
    assert restored["state"][0]["n_iter"] == 4
    assert restored["state"][0]["history"] == [1.5, (2, 3)]
    assert torch.equal(restored["state"][0]["buffer"], torch.ones(2))
    assert torch.equal(restored["param_groups"][0]["lr"], torch.tensor(0.1))
    assert restored["param_groups"][0]["name"] == "head"


def test_unstorable_values_and_unknown_formats_are_refused() -> None:
    with pytest.raises(TypeError, match=r"state\[0\]\['closure'\]"):
        flatten_optimizer_state({"state": {0: {"closure": object()}}, "param_groups": []})
    with pytest.raises(ValueError, match="format"):
        unflatten_optimizer_state({}, {"format": 99})
