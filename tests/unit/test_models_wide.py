"""The wide trunk (``wide`` config): the head sees the standardised inputs beside deep features."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812 - the conventional alias
from torch import nn

from driftd.adapters.file_snapshot_store import FileSnapshotStore
from driftd.adapters.hot_model import HotModel
from driftd.learning.models import ModelConfigError, SplitModel, WideTrunk, build_model
from driftd.ports import Snapshot
from driftd.pruning import (
    prunable_weights,
    quantize_int8,
    unit_layers,
)
from driftd.settings.root import ModelSettings
from driftd.wiring.learning import model_config_from_settings
from tests.fakes import FakeClock
from tests.unit.pruning.builders import FakeLearner, inputs, labels, make_pruner


def config(**overrides: Any) -> dict[str, Any]:
    settings = ModelSettings(n_classes=3, hidden=[16, 12]).model_copy(update=overrides)
    return model_config_from_settings(settings, 10)


def build(model_config: dict[str, Any], seed: int = 0) -> SplitModel:
    return build_model(model_config, torch.Generator().manual_seed(seed))


def standardised(model: SplitModel, x: torch.Tensor) -> torch.Tensor:
    assert model.inputs is not None
    model.inputs.update(x)
    return model.inputs(x)


def test_wide_is_the_default_and_its_head_sees_the_standardised_inputs() -> None:
    assert config()["wide"] is True
    model = build(config()).eval()
    x = torch.randn(8, 10, generator=torch.Generator().manual_seed(1)) * 5 + 3
    z = standardised(model, x)
    assert isinstance(model.shared, WideTrunk)
    assert model.embedding_dim == 12 + 10
    assert model.head[0].in_features == 12 + 10
    with torch.no_grad():
        deep = nn.Sequential(*model.shared.children())(z)
        expected = model.head(torch.cat([deep, z], dim=1))
        torch.testing.assert_close(model(x), expected, rtol=0, atol=0)
    head = model.new_head(torch.Generator().manual_seed(2))  # a domain's head: its own linear part
    assert head[0].weight.shape == model.head[0].weight.shape


def test_wide_cnn_appends_the_flat_image() -> None:
    settings = ModelSettings(kind="cnn", input_shape=[1, 8, 8], n_features=64, channels=[4, 6])
    model = build(model_config_from_settings(settings, 64))
    assert model.embedding_dim == 6 * 2 * 2 + 64
    assert model(torch.randn(3, 64)).shape == (3, 2)


def test_without_the_key_or_hidden_layers_the_model_is_the_plain_one() -> None:
    old = config()  # a snapshot's config from before the key
    del old["wide"]
    plain, narrow = build(old), build(config(wide=False))
    assert not isinstance(plain.shared, WideTrunk)
    shapes = {k: v.shape for k, v in plain.state_dict().items()}
    assert shapes == {k: v.shape for k, v in narrow.state_dict().items()}
    assert plain.embedding_dim == 12
    linear = build(config(hidden=[]))  # already a linear model: nothing to add
    assert linear.embedding_dim == 10
    with pytest.raises(ModelConfigError, match="wide must be true or false"):
        build(config() | {"wide": "yes"})


def rule(n: int, columns: slice, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Events whose class (of 3) is a linear rule of the given input columns only."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 10, generator=generator)
    weights = torch.randn(10, 3, generator=generator)
    mask = torch.zeros(10, 1)
    mask[columns] = 1.0
    return x, (x @ (weights * mask)).argmax(dim=1)


def online_accuracy(model: SplitModel, x: torch.Tensor, y: torch.Tensor, lr: float) -> float:
    """Predict, then learn, one event at a time (Adam, the trainable parameters only)."""
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    correct = 0
    for k in range(len(x)):
        logits = model(x[k : k + 1])
        correct += int(logits.argmax(dim=1).item() == y[k].item())
        optimizer.zero_grad()
        F.cross_entropy(logits, y[k : k + 1]).backward()  # type: ignore[no-untyped-call]
        optimizer.step()
    return correct / len(x)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_fresh_head_learns_a_new_linear_rule_faster_when_wide(seed: int) -> None:
    """What a drift does: a new head, the trunk held. The wide head reaches the inputs directly;
    the plain one only through features the trunk learnt for the old rule."""
    old, new = rule(1_500, slice(0, 5), seed), rule(600, slice(5, 10), seed + 100)
    accuracies = {}
    for wide in (False, True):
        model = build(config(wide=wide, standardize=False), seed)
        online_accuracy(model, *old, lr=3e-3)
        model.head = model.new_head(torch.Generator().manual_seed(seed))
        model.shared.requires_grad_(False)
        accuracies[wide] = online_accuracy(model, *new, lr=3e-3)
    assert accuracies[True] > accuracies[False] + 0.05, accuracies


def test_snapshot_round_trip_and_hot_model_predict_like_the_trainer(tmp_path: Path) -> None:
    model_config = config()
    model = build(model_config)
    x, y = rule(300, slice(0, 10), seed=3)
    model.inputs.update(x)  # type: ignore[union-attr]
    online_accuracy(model, x, y, lr=1e-2)
    store = FileSnapshotStore(tmp_path, keep=2, clock=FakeClock())
    store.save(Snapshot(1, model.state_dict(), {}, {"model": model_config, "watermark": 1.0}))
    loaded = store.load_newest()
    assert loaded is not None
    assert loaded.manifest["model"]["wide"] is True
    rebuilt = build(dict(loaded.manifest["model"]), seed=9)
    rebuilt.load_state_dict(dict(loaded.weights))
    with torch.no_grad():
        expected = torch.softmax(model.eval()(x[:20]), dim=1)
        torch.testing.assert_close(rebuilt.eval()(x[:20]), model(x[:20]), rtol=0, atol=0)
    with HotModel(tmp_path, start=False) as hot:
        predictions = hot.predict(x[:20].numpy())
    assert predictions.probabilities is not None
    np.testing.assert_allclose(predictions.probabilities, expected.numpy(), rtol=1e-5, atol=1e-6)


def test_int8_keeps_the_wide_output_layer_float_and_stays_close() -> None:
    model = build(config()).eval()
    x = torch.randn(64, 10, generator=torch.Generator().manual_seed(4))
    model.inputs.update(x)  # type: ignore[union-attr]
    quantized = quantize_int8(model)
    assert isinstance(quantized.head[0], nn.Linear)  # the classes' layer, inputs columns included
    assert type(quantized.shared[0]).__name__ == "Int8DynamicLinear"
    with torch.no_grad():
        torch.testing.assert_close(quantized(x), model(x), rtol=0.0, atol=0.1)


@pytest.mark.parametrize(
    ("structured", "criterion"),
    [(False, "magnitude"), (True, "magnitude"), (True, "output_error"), (True, "entropy")],
)
def test_pruning_a_wide_model_keeps_its_inputs_columns(structured: bool, criterion: str) -> None:
    model_config = config(head_hidden=[8], standardize=False)
    x, y = inputs(model_config, 128, seed=11), labels(model_config, 128, seed=12)
    pruner = make_pruner(structured=structured, criterion=criterion)
    learner = FakeLearner(build(model_config))
    for seed in range(5):
        learner.step(inputs(model_config, 32, seed=seed), labels(model_config, 32, seed=seed))
        pruner.after_step(learner.model, learner.optimizer)
        pruner.observe(learner, 32.0, 32, lambda: (x, y))
    report = pruner.prune(5, learner, lambda: (x, y))
    assert report is not None
    model: Any = learner.model
    if structured:
        last = [layer for layer in unit_layers(model) if layer.part == "shared"][-1]
        assert last.n_units < 12
        assert model.head[0].in_features == last.n_units + 10  # every input column is kept
        assert model.embedding_dim == last.n_units + 10
        assert build(model.config).head[0].weight.shape == model.head[0].weight.shape
    else:
        params = dict(model.named_parameters())
        for weight in prunable_weights(model):
            assert float((params[weight.name] == 0).float().mean()) == pytest.approx(
                0.4375, abs=0.03
            )
    learner.step(x, y)  # the pruned wide model goes on training
    assert model(x).shape == (128, 3)
