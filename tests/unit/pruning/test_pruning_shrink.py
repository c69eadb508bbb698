"""Structured shrinking: smaller shapes, the masked model's outputs, sliced optimizer state."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
from safetensors.torch import load_file, save_file

from driftd.learning.models import build_model
from driftd.pruning import (
    StructureError,
    rebind_optimizer,
    shrink_model,
    slice_head_state,
    structured_mask,
    unit_layers,
)
from tests.unit.pruning.builders import build, cnn_config, inputs, labels, mlp_config

CASES = [
    mlp_config(norm="none"),
    mlp_config(norm="batch", dropout=0.2),
    cnn_config(norm="none"),
    cnn_config(norm="batch", head_hidden=[5]),
    mlp_config(norm="none", head_hidden=[], wide=True),  # the trunk's input reaches head.0
    cnn_config(norm="batch", wide=True),
]


def some_units(model: torch.nn.Module, seed: int = 3) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        layer.name: torch.randperm(layer.n_units, generator=generator)[: layer.n_units // 2]
        for layer in unit_layers(model)
    }


def trained_a_little(config: dict[str, Any]) -> torch.nn.Module:
    """A model whose batch-norm statistics and weights moved away from their initial values."""
    model = build(config)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    for seed in range(3):
        loss = F.cross_entropy(model(inputs(config, seed=seed)), labels(config, seed=seed))
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    return model


@pytest.mark.parametrize(
    "config", CASES, ids=lambda c: f"{c['kind']}-{c['norm']}{'-wide' if c.get('wide') else ''}"
)
def test_shrunk_model_is_smaller_and_computes_what_the_masked_model_computes(
    config: dict[str, Any],
) -> None:
    model = trained_a_little(config).eval()
    keep = some_units(model)
    result = shrink_model(model, keep)
    shrunk = result.model.eval()
    masked = build(config)
    masked.load_state_dict(model.state_dict())
    structured_mask(masked, unit_layers(model), keep).apply(masked)
    masked.eval()
    x = inputs(config, 16, seed=9)
    with torch.no_grad():
        torch.testing.assert_close(shrunk(x), masked(x), rtol=1e-5, atol=1e-6)
        # the trunk's output, for the kept units of its last layer
        if config["kind"] == "mlp":
            last = [layer for layer in unit_layers(model) if layer.part == "shared"][-1]
            columns = keep[last.name].sort().values
            if config.get("wide"):  # then the trunk's own input, every column of it
                assert last.passthrough == config["n_features"]
                inputs_start = last.n_units
                wide_columns = torch.arange(inputs_start, inputs_start + config["n_features"])
                columns = torch.cat([columns, wide_columns])
            torch.testing.assert_close(shrunk.shared(x), masked.shared(x)[:, columns])
    for layer in unit_layers(model):  # every unit layer lost half its units
        assert shrunk.get_submodule(layer.name).weight.shape[0] == layer.n_units // 2
    assert sum(p.numel() for p in shrunk.parameters()) < sum(p.numel() for p in model.parameters())
    assert shrunk.head[-1].out_features == config["n_outputs"]  # the classes are all there


@pytest.mark.parametrize(
    "config",
    [*CASES, mlp_config(norm="layer"), cnn_config(norm="layer"), mlp_config(wide=True)],
)
def test_shrunk_config_rebuilds_the_same_architecture(config: dict[str, Any]) -> None:
    result = shrink_model(build(config), some_units(build(config)))
    rebuilt = build_model(result.config, torch.Generator().manual_seed(5))
    shapes = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in result.model.state_dict().items()}
    rebuilt.load_state_dict(result.model.state_dict())  # a snapshot of it loads as is
    assert result.model.config == result.config
    assert result.model.embedding_dim == rebuilt.embedding_dim
    assert build(config).config == config  # the original is untouched


def test_layer_norm_is_recomputed_over_the_kept_units() -> None:
    config = mlp_config(norm="layer", hidden=[6], head_hidden=[])
    model = trained_a_little(config).eval()
    kept = torch.tensor([0, 2, 5])
    shrunk = shrink_model(model, {"shared.0": kept}).model.eval()
    x = inputs(config, 8)
    linear, norm, head = model.shared[0], model.shared[1], model.head[0]
    with torch.no_grad():
        hidden = F.linear(x, linear.weight[kept], linear.bias[kept])
        hidden = F.layer_norm(hidden, (3,), norm.weight[kept], norm.bias[kept], norm.eps)
        expected = F.linear(torch.relu(hidden), head.weight[:, kept], head.bias)
        torch.testing.assert_close(shrunk(x), expected)


@pytest.mark.parametrize(
    ("optimizer_name", "config"),
    [
        ("adam", CASES[0]),
        ("adam", CASES[2]),
        ("sgd", CASES[0]),
        ("sgd", CASES[2]),
        # Not Adam with batch norm: the bias before it has a gradient of rounding noise only,
        # which Adam scales up to full steps, differently in the two models.
        ("sgd", CASES[1]),
    ],
    ids=["adam-mlp", "adam-cnn", "sgd-mlp", "sgd-cnn", "sgd-mlp-batch"],
)
def test_sliced_optimizer_state_continues_training_as_the_masked_model_does(
    optimizer_name: str, config: dict[str, Any]
) -> None:
    config = config | {"dropout": 0.0}

    def make(params: Any) -> torch.optim.Optimizer:
        if optimizer_name == "adam":
            return torch.optim.Adam(params, lr=0.01)
        return torch.optim.SGD(params, lr=0.05, momentum=0.9)

    reference = build(config)
    keep = some_units(reference)
    masks = structured_mask(reference, unit_layers(reference), keep)
    masks.apply(reference)
    optimizer = make(reference.parameters())

    def train(model: torch.nn.Module, opt: torch.optim.Optimizer, seeds: range) -> None:
        model.train()
        for seed in seeds:
            loss = F.cross_entropy(model(inputs(config, seed=seed)), labels(config, seed=seed))
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            if model is reference:
                masks.enforce(model, opt)

    train(reference, optimizer, range(5))  # moments built up on the masked full model
    # the masked full model goes on with its own copy of the (unsliced) state
    reference_optimizer = make(reference.parameters())
    reference_optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    result = shrink_model(reference, keep)
    rebind_optimizer(optimizer, reference, result.model, result.slices)
    shrunk_optimizer = optimizer
    assert {id(p) for p in result.model.parameters()} == {
        id(p) for group in shrunk_optimizer.param_groups for p in group["params"]
    }
    train(reference, reference_optimizer, range(5, 10))
    train(result.model, shrunk_optimizer, range(5, 10))
    expected = shrink_model(reference, keep).model
    for (name, got), (_, want) in zip(
        result.model.named_parameters(), expected.named_parameters(), strict=True
    ):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=name)


def test_optimizer_keeps_groups_and_slices_state_shapes() -> None:
    config = mlp_config()
    model = build(config)
    groups = [
        {"params": list(model.shared.parameters()), "name": "shared"},
        {"params": list(model.head.parameters()), "name": "head"},
    ]
    optimizer = torch.optim.Adam(groups, lr=0.01)
    F.cross_entropy(model(inputs(config)), labels(config)).backward()  # type: ignore[no-untyped-call]
    optimizer.step()
    result = shrink_model(model, {"shared.0": torch.tensor([1, 3, 5]), "head.0": torch.tensor([0])})
    rebind_optimizer(optimizer, model, result.model, result.slices)
    assert [g["name"] for g in optimizer.param_groups] == ["shared", "head"]
    for param in result.model.parameters():
        state = optimizer.state[param]
        assert state["exp_avg"].shape == param.shape
        assert int(state["step"]) == 1
    assert result.model.shared[0].weight.shape == (3, 10)
    assert result.model.shared[2].weight.shape == (12, 3)
    assert result.model.head[2].weight.shape == (3, 1)


def test_stored_heads_are_sliced_like_the_live_head() -> None:
    config = mlp_config(head_hidden=[])
    model = build(config)
    result = shrink_model(model, {"shared.2": torch.tensor([0, 4, 7])})
    other_head = {k: v + 1.0 for k, v in model.head.state_dict().items()}
    sliced = slice_head_state(other_head, result)
    assert sliced["0.weight"].shape == (3, 3)
    torch.testing.assert_close(sliced["0.weight"], other_head["0.weight"][:, [0, 4, 7]])
    torch.testing.assert_close(sliced["0.bias"], other_head["0.bias"])


def test_rejects_what_it_cannot_shrink() -> None:
    model = build(mlp_config())
    with pytest.raises(StructureError, match="not a prunable unit layer"):
        shrink_model(model, {"head.2": torch.tensor([0])})  # the output layer: the classes
    with pytest.raises(StructureError, match="every unit"):
        shrink_model(model, {"shared.0": torch.tensor([], dtype=torch.long)})
    with pytest.raises(StructureError, match="distinct"):
        shrink_model(model, {"shared.0": torch.tensor([1, 1])})
    factory_like = build(mlp_config())
    factory_like.config = {"kind": "factory"}
    with pytest.raises(StructureError, match="built-in"):
        unit_layers(factory_like)


@pytest.mark.parametrize(
    "config", [CASES[1], CASES[3], CASES[4]], ids=["mlp-batch", "cnn-batch-head", "mlp-wide"]
)
def test_shrunk_model_round_trips_like_a_snapshot(config: dict[str, Any], tmp_path: Path) -> None:
    """Weights in safetensors + config in JSON: what a restart or the inference side loads."""
    model = trained_a_little(config)
    shrunk = shrink_model(model, some_units(model)).model.eval()
    save_file({k: v.contiguous() for k, v in shrunk.state_dict().items()}, str(tmp_path / "w"))
    (tmp_path / "manifest.json").write_text(json.dumps({"model": shrunk.config}))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    loaded = build_model(manifest["model"], torch.Generator().manual_seed(42))
    loaded.load_state_dict(load_file(str(tmp_path / "w")))
    assert not any(key.endswith(("_orig", "_mask")) for key in loaded.state_dict())
    x = inputs(config, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), shrunk(x), rtol=0, atol=0)
