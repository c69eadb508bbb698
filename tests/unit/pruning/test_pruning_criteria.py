"""Importance criteria: each ranks a unit or weight it should, on seeded models."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias

from driftd.pruning import (
    TaylorAccumulator,
    activation_entropy_scores,
    group_l1_penalty,
    l1_penalty,
    magnitude_scores,
    proximal_group_l1_,
    proximal_l1_,
    unit_layers,
    unit_magnitude_scores,
    unit_output_error_scores,
    weight_output_error_scores,
)
from driftd.pruning.measured import histogram_entropy
from tests.unit.pruning.builders import build, cnn_config, inputs, labels, mlp_config


def test_magnitude_scores_are_absolute_weights_and_unit_l1_norms() -> None:
    model = build(mlp_config())
    scores = magnitude_scores(model)
    assert set(scores) == {"shared.0.weight", "shared.2.weight", "head.0.weight", "head.2.weight"}
    torch.testing.assert_close(scores["shared.0.weight"], model.shared[0].weight.abs())
    units = unit_magnitude_scores(model, ["shared.0"])
    torch.testing.assert_close(units["shared.0"], model.shared[0].weight.abs().sum(dim=1))


def test_taylor_accumulator_averages_w_times_grad() -> None:
    config = mlp_config(hidden=[4], head_hidden=[])
    model = build(config)
    taylor = TaylorAccumulator(decay=0.5)
    expected_w, expected_u = [], []
    for seed in range(2):
        model.zero_grad()
        F.cross_entropy(model(inputs(config, seed=seed)), labels(config, seed=seed)).backward()  # type: ignore[no-untyped-call]
        layer = model.shared[0]
        wg = layer.weight.detach() * layer.weight.grad
        expected_w.append(wg.abs())
        expected_u.append((wg.sum(dim=1) + layer.bias.detach() * layer.bias.grad).abs())
        taylor.update(model)
    # bias-corrected average of two steps with decay 0.5: (0.5 * a + b) / 1.5 ... times 0.5
    weights = (0.5 * 0.5 * expected_w[0] + 0.5 * expected_w[1]) / (1 - 0.25)
    units = (0.5 * 0.5 * expected_u[0] + 0.5 * expected_u[1]) / (1 - 0.25)
    torch.testing.assert_close(taylor.weight_scores()["shared.0.weight"], weights)
    torch.testing.assert_close(taylor.unit_scores()["shared.0"], units)
    copy = TaylorAccumulator(decay=0.5)
    tensors, meta = taylor.state_dict()
    assert meta == {}  # all of its state is tensors
    copy.load_state_dict(tensors, meta)
    assert copy.steps == 2
    torch.testing.assert_close(copy.unit_scores()["shared.0"], units)
    taylor.reset()
    assert taylor.weight_scores() == {}


def test_l1_penalties_are_differentiable_and_drive_towards_zero() -> None:
    model = build(mlp_config())
    penalty = l1_penalty(model, ["shared.0.weight"], 0.1)
    weight = model.shared[0].weight.detach()
    assert float(penalty.detach()) == pytest.approx(0.1 * float(weight.abs().sum()))
    group = group_l1_penalty(model, ["shared.0"], 1.0)
    rows = torch.cat([weight, model.shared[0].bias.detach()[:, None]], dim=1)
    assert float(group.detach()) == pytest.approx(float(rows.norm(dim=1).sum()), rel=1e-5)
    group.backward()  # type: ignore[no-untyped-call]
    grad = model.shared[0].weight.grad
    assert grad is not None
    assert (torch.sign(grad) == torch.sign(weight)).all()  # descent shrinks


def with_a_silent_unit(config: dict[str, Any], unit: int) -> torch.nn.Module:
    """A model whose ``unit`` of the first layer has zero outgoing weights."""
    model = build(config)
    layer = unit_layers(model)[0]
    consumer = model.get_submodule(layer.consumer)
    with torch.no_grad():
        columns = slice(unit * layer.columns_per_unit, (unit + 1) * layer.columns_per_unit)
        consumer.weight[:, columns] = 0.0
    return model


@pytest.mark.parametrize(
    "config",
    [
        mlp_config(),
        mlp_config(norm="batch"),
        cnn_config(),
        cnn_config(head_hidden=[4]),
        mlp_config(wide=True),
        cnn_config(wide=True),
    ],
    ids=["mlp", "mlp-batch", "cnn", "cnn-head", "mlp-wide", "cnn-wide"],
)
@pytest.mark.parametrize("measure", ["output", "loss"])
def test_min_output_error_ranks_a_unit_without_outgoing_weights_first(
    config: dict[str, Any], measure: str
) -> None:
    model = with_a_silent_unit(config, unit=2)
    x, y = inputs(config, 24), labels(config, 24)
    mode = model.training
    scores = unit_output_error_scores(
        model, x, measure=measure, y=y, loss_fn=lambda o, t: F.cross_entropy(o, t, reduction="none")
    )  # type: ignore[arg-type]
    first = scores[unit_layers(model)[0].name]
    assert first[2] == 0.0
    assert int(first.argmin()) == 2
    assert (first[torch.arange(len(first)) != 2] > 0).all()
    assert set(scores) == {layer.name for layer in unit_layers(model)}
    assert model.training == mode


@pytest.mark.parametrize("wide", [False, True])
def test_min_output_error_matches_removing_each_unit_one_by_one(wide: bool) -> None:
    config = mlp_config(hidden=[5], head_hidden=[], wide=wide)
    model = build(config).eval()
    x = inputs(config, 16)
    scores = unit_output_error_scores(model, x)["shared.0"]
    with torch.no_grad():
        base = model(x)
        for unit in range(5):
            hidden = torch.relu(model.shared[0](x))
            hidden[:, unit] = 0.0
            embedding = torch.cat([hidden, x], dim=1) if wide else hidden
            change = (model.head(embedding) - base).pow(2).sum(dim=1).mean()
            assert float(scores[unit]) == pytest.approx(float(change), rel=1e-5)


@pytest.mark.parametrize("config", [mlp_config(), cnn_config()], ids=["mlp", "cnn"])
def test_weight_output_error_is_the_measured_change_of_the_layer_output(
    config: dict[str, Any],
) -> None:
    model = build(config).eval()
    x = inputs(config, 8)
    scores = weight_output_error_scores(model, x)
    name = unit_layers(model)[0].name
    layer = model.get_submodule(name)
    index = (1, 0) if config["kind"] == "mlp" else (1, 0, 1, 2)
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_pre_hook(lambda _, args: captured.append(args[0]))
    with torch.no_grad():
        model(x)
        handle.remove()
        before = layer(captured[0])
        original = layer.weight[index].item()
        layer.weight[index] = 0.0
        after = layer(captured[0])
        layer.weight[index] = original
    output_change = (before - after).pow(2)
    expected = output_change.sum(dim=1).mean() if output_change.dim() == 2 else None
    if expected is None:  # conv: one output channel, mean over events and positions
        expected = output_change[:, index[0]].mean()
    assert float(scores[f"{name}.weight"][index]) == pytest.approx(float(expected), rel=1e-4)


def test_activation_entropy_ranks_a_dead_unit_first() -> None:
    config = mlp_config()
    model = build(config)
    with torch.no_grad():  # unit 3 of the first layer never fires: ReLU of a negative constant
        model.shared[0].weight[3] = 0.0
        model.shared[0].bias[3] = -1.0
    scores = activation_entropy_scores(model, inputs(config, 200), bins=8)
    first = scores["shared.0"]
    assert float(first[3]) == 0.0
    assert int(first.argmin()) == 3
    assert (first <= 3.0 + 1e-6).all()  # at most log2(8) bits
    assert set(scores) == {"shared.0", "shared.2", "head.0"}


def test_histogram_entropy_of_uniform_and_constant_columns() -> None:
    values = torch.stack([torch.arange(64.0), torch.full((64,), 2.0)], dim=1)
    entropy = histogram_entropy(values, bins=8)
    assert float(entropy[0]) == pytest.approx(math.log2(8))
    assert float(entropy[1]) == 0.0


def test_entropy_needs_structured_models() -> None:
    model = build(mlp_config())
    model.config = {"kind": "factory"}
    with pytest.raises(ValueError, match="built-in"):
        activation_entropy_scores(model, torch.zeros(2, 10))


def test_proximal_steps_soft_threshold_weights_and_whole_units() -> None:
    model = build(mlp_config(hidden=[2], head_hidden=[]))
    with torch.no_grad():
        model.shared[0].weight.copy_(
            torch.tensor([[0.5, -0.05] + [0.0] * 8, [3.0, 4.0] + [0.0] * 8])
        )
        model.shared[0].bias.zero_()
    proximal_l1_(model, ["shared.0.weight"], 0.1)
    assert model.shared[0].weight[0, :2].tolist() == pytest.approx([0.4, 0.0])
    assert model.shared[0].weight[1, :2].tolist() == pytest.approx([2.9, 3.9])
    with torch.no_grad():
        model.shared[0].weight[1, :2] = torch.tensor([3.0, 4.0])  # norm 5
    proximal_group_l1_(model, ["shared.0"], 1.0)
    assert model.shared[0].weight[0].abs().sum() == 0.0  # norm 0.4 < 1: the unit is gone
    assert model.shared[0].weight[1, :2].tolist() == pytest.approx([2.4, 3.2])  # norm 5 -> 4
