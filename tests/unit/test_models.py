from __future__ import annotations

import json
import sys
import types
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from driftd.learning.models import (
    ModelConfigError,
    OnlineBatchNorm1d,
    OnlineBatchNorm2d,
    SplitModel,
    build_model,
    count_parameters,
    has_batch_norm,
    is_stochastic,
    load_factory,
    sparsity,
    train_matches_eval,
)
from driftd.settings.root import ModelSettings
from driftd.wiring.learning import model_config_from_settings


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def mlp_config(**overrides: Any) -> dict[str, Any]:
    return {
        "kind": "mlp",
        "task": "classification",
        "n_features": 10,
        "n_outputs": 3,
        "activation": "relu",
        "dropout": 0.0,
        "norm": "none",
        "head_hidden": [],
        "hidden": [64, 64],
    } | overrides


def cnn_config(**overrides: Any) -> dict[str, Any]:
    base = mlp_config(kind="cnn", n_features=64, n_outputs=2, input_shape=[1, 8, 8])
    del base["hidden"]
    return base | {"channels": [16, 32]} | overrides


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- configs from settings -------------------------------------------------------------------


def test_config_from_default_settings_is_the_mlp_default() -> None:
    config = model_config_from_settings(ModelSettings(n_classes=3), n_features=10)
    assert config == mlp_config(standardize=True, standardize_horizon=10_000, wide=True)
    assert json.loads(json.dumps(config)) == config


def test_config_from_settings_for_regression_cnn_and_factory() -> None:
    regression = ModelSettings(task="regression", n_outputs=4, hidden=[8], norm="layer")
    assert model_config_from_settings(regression, 5) == mlp_config(
        task="regression",
        n_features=5,
        n_outputs=4,
        hidden=[8],
        norm="layer",
        standardize=True,
        standardize_horizon=10_000,
        wide=True,
    )
    cnn = ModelSettings(
        kind="cnn", input_shape=[1, 8, 8], n_features=64, standardize=False, wide=False
    )
    assert model_config_from_settings(cnn, 64) == cnn_config(wide=False)
    factory = ModelSettings(kind="pkg.mod:make", n_classes=5)
    assert model_config_from_settings(factory, 7) == {
        "kind": "factory",
        "factory": "pkg.mod:make",
        "task": "classification",
        "n_features": 7,
        "n_outputs": 5,
        "standardize": True,  # a user's trunk sees standardised inputs too
        "standardize_horizon": 10_000,
    }


# --- MLP -------------------------------------------------------------------------------------


def test_mlp_shapes_and_parameter_count() -> None:
    model = build_model(mlp_config(), gen())
    assert isinstance(model, SplitModel)
    assert (model.embedding_dim, model.n_outputs) == (64, 3)
    # 10*64+64 + 64*64+64 + 64*3+3
    assert count_parameters(model) == 5059
    assert count_parameters(model.head) == 195
    x = torch.randn(7, 10, generator=gen(1))
    assert model.shared(x).shape == (7, 64)
    assert model(x).shape == (7, 3)
    assert torch.equal(model(x), model.head(model.shared(x)))


def test_mlp_without_hidden_layers_is_a_linear_model() -> None:
    model = build_model(mlp_config(hidden=[], head_hidden=[5]), gen())
    assert isinstance(model.shared, nn.Identity)
    assert model.embedding_dim == 10
    assert count_parameters(model) == 10 * 5 + 5 + 5 * 3 + 3


@pytest.mark.parametrize(
    ("name", "layer"),
    [
        ("relu", nn.ReLU),
        ("gelu", nn.GELU),
        ("tanh", nn.Tanh),
        ("silu", nn.SiLU),
        ("leaky_relu", nn.LeakyReLU),
    ],
)
def test_activation_is_used_in_trunk_and_head(name: str, layer: type[nn.Module]) -> None:
    model = build_model(mlp_config(activation=name, head_hidden=[4]), gen())
    assert sum(isinstance(m, layer) for m in model.shared.modules()) == 2
    assert sum(isinstance(m, layer) for m in model.head.modules()) == 1


def test_same_seed_same_weights_and_the_global_rng_is_untouched() -> None:
    before = torch.get_rng_state()
    a = build_model(mlp_config(norm="layer", head_hidden=[8]), gen(42))
    b = build_model(mlp_config(norm="layer", head_hidden=[8]), gen(42))
    c = build_model(mlp_config(norm="layer", head_hidden=[8]), gen(43))
    assert torch.equal(torch.get_rng_state(), before)
    assert same_weights(a, b)
    assert not same_weights(a, c)


def test_init_matches_torch_default_bounds() -> None:
    model = build_model(mlp_config(hidden=[400]), gen())
    first = model.shared[0]
    bound = 1 / 10**0.5
    assert first.weight.abs().max() <= bound
    assert first.weight.abs().max() > 0.9 * bound  # uniform over the whole range, not tiny
    assert first.bias.abs().max() <= bound


def test_rebuild_from_json_config_loads_the_state_dict() -> None:
    model = build_model(mlp_config(norm="batch", dropout=0.2), gen(1))
    config = json.loads(json.dumps(model.config))
    rebuilt = build_model(config, gen(99))
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    model.eval()
    rebuilt.eval()
    x = torch.randn(3, 10, generator=gen(2))
    assert torch.equal(model(x), rebuilt(x))


def test_config_is_a_private_copy() -> None:
    config = mlp_config()
    model = build_model(config, gen())
    config["hidden"].append(1)
    assert model.config["hidden"] == [64, 64]


def test_new_head_is_fresh_same_shape_and_deterministic() -> None:
    model = build_model(mlp_config(head_hidden=[8]), gen())
    old = {k: v.clone() for k, v in model.head.state_dict().items()}
    head = model.new_head(gen(5))
    again = model.new_head(gen(5))
    assert same_weights(head, again)
    assert {k: v.shape for k, v in head.state_dict().items()} == {
        k: v.shape for k, v in old.items()
    }
    assert not torch.equal(head.state_dict()["0.weight"], old["0.weight"])
    assert all(torch.equal(model.head.state_dict()[k], v) for k, v in old.items())
    assert head(model.shared(torch.zeros(2, 10))).shape == (2, 3)


def test_new_head_follows_the_model_dtype() -> None:
    model = build_model(mlp_config(), gen()).to(torch.float64)
    assert model.new_head(gen()).state_dict()["0.weight"].dtype == torch.float64


# --- norms, dropout and train/eval -----------------------------------------------------------


def test_norm_layers() -> None:
    layer = build_model(mlp_config(norm="layer"), gen())
    assert sum(isinstance(m, nn.LayerNorm) for m in layer.modules()) == 2
    batch = build_model(mlp_config(norm="batch", head_hidden=[4]), gen())
    assert sum(isinstance(m, OnlineBatchNorm1d) for m in batch.modules()) == 3
    assert isinstance(batch.shared[1], nn.BatchNorm1d)


def test_batch_norm_trains_on_one_event_with_running_stats() -> None:
    model = build_model(mlp_config(norm="batch"), gen())
    bn = model.shared[1]
    x = torch.randn(1, 10, generator=gen(3))
    model.eval()
    expected = model(x)
    model.train()
    out = model(x)
    assert torch.allclose(out, expected)
    assert torch.equal(bn.running_mean, torch.zeros(64))  # a single event leaves stats alone
    assert int(bn.num_batches_tracked) == 0
    out.sum().backward()
    assert bn.weight.grad is not None
    model(torch.randn(4, 10, generator=gen(4)))
    assert int(bn.num_batches_tracked) == 1
    assert not torch.equal(bn.running_mean, torch.zeros(64))


def test_helpers_say_when_train_mode_differs_from_eval() -> None:
    plain = build_model(mlp_config(), gen())
    assert (has_batch_norm(plain), is_stochastic(plain), train_matches_eval(plain)) == (
        False,
        False,
        True,
    )
    dropout = build_model(mlp_config(dropout=0.3), gen())
    assert (has_batch_norm(dropout), is_stochastic(dropout)) == (False, True)
    assert not train_matches_eval(dropout)
    batch = build_model(mlp_config(norm="batch"), gen())
    assert (has_batch_norm(batch), is_stochastic(batch)) == (True, False)
    assert not train_matches_eval(batch)
    assert not is_stochastic(nn.Dropout(0.0))


# --- CNN -------------------------------------------------------------------------------------


def test_cnn_small_image_shapes_and_parameter_count() -> None:
    model = build_model(cnn_config(), gen())
    # two 2x2 poolings: 8x8 -> 2x2, so the embedding is 32 channels x 2 x 2
    assert model.embedding_dim == 128
    # conv 1*16*9+16, conv 16*32*9+32, head 128*2+2
    assert count_parameters(model) == 160 + 4640 + 258
    x = torch.randn(5, 64, generator=gen(1))
    assert model.shared(x).shape == (5, 128)
    assert model(x).shape == (5, 2)


def test_cnn_colour_image_with_norms() -> None:
    config = cnn_config(n_features=3 * 32 * 32, input_shape=[3, 32, 32], channels=[4, 8, 8])
    layer = build_model(config | {"norm": "layer"}, gen())
    assert sum(isinstance(m, nn.GroupNorm) for m in layer.modules()) == 3
    assert sum(isinstance(m, nn.MaxPool2d) for m in layer.modules()) == 3
    assert layer(torch.zeros(2, 3072)).shape == (2, 2)
    batch = build_model(config | {"norm": "batch", "dropout": 0.5}, gen())
    assert sum(isinstance(m, OnlineBatchNorm2d) for m in batch.modules()) == 3
    assert is_stochastic(batch)
    assert batch.train()(torch.zeros(1, 3072)).shape == (1, 2)


def test_cnn_skips_pooling_where_the_image_is_too_small() -> None:
    model = build_model(cnn_config(n_features=2, input_shape=[2, 1, 1], norm="batch"), gen())
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert model.embedding_dim == 32
    assert model.train()(torch.ones(1, 2)).shape == (1, 2)  # a 1x1 batch of one: running stats
    wide = build_model(cnn_config(n_features=12, input_shape=[1, 2, 6]), gen())
    assert sum(isinstance(m, nn.MaxPool2d) for m in wide.modules()) == 1
    assert wide.embedding_dim == 32 * 1 * 2


def test_cnn_new_head_and_determinism() -> None:
    a, b = build_model(cnn_config(), gen(7)), build_model(cnn_config(), gen(7))
    assert same_weights(a, b)
    assert a.new_head(gen()).state_dict()["0.weight"].shape == (2, 128)


# --- invalid configs -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (mlp_config(kind="rnn"), "unknown kind"),
        (mlp_config(task="ranking"), "task"),
        (mlp_config(activation="swish"), "activation"),
        (mlp_config(dropout=1.0), "dropout"),
        (mlp_config(norm="group"), "norm"),
        (mlp_config(n_features=0), "n_features"),
        (mlp_config(hidden=[8, "x"]), "hidden"),
        (mlp_config(hidden=8), "hidden"),
        (cnn_config(n_features=63), "input_shape"),
        (cnn_config(input_shape=[8, 8], n_features=64), "input_shape"),
        (cnn_config(channels=[]), "channels"),
        ({"kind": "factory", "factory": 3, "n_features": 1, "n_outputs": 1}, "factory"),
    ],
)
def test_invalid_config_is_a_clear_error(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ModelConfigError, match=message):
        build_model(config, gen())


# --- user factories --------------------------------------------------------------------------


class TwoPart(nn.Module):
    def __init__(self, n_features: int, n_outputs: int, width: int = 6) -> None:
        super().__init__()
        self.shared = nn.Sequential(nn.Linear(n_features, width), nn.Tanh())
        self.head = nn.Linear(width, n_outputs)


def seeded_factory(
    *, n_features: int, n_outputs: int, task: str, generator: torch.Generator
) -> nn.Module:
    model = TwoPart(n_features, n_outputs)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.rand(p.shape, generator=generator))
    return model


def plain_factory(n_features: int, n_outputs: int, task: str) -> SplitModel:
    assert task == "regression"
    parts = TwoPart(n_features, n_outputs, width=4)
    return SplitModel(parts.shared, parts.head, embedding_dim=4, n_outputs=n_outputs, config={})


class Builders:
    @staticmethod
    def nested(**kwargs: Any) -> nn.Module:
        return TwoPart(kwargs["n_features"], kwargs["n_outputs"])


@pytest.fixture
def factories(monkeypatch: pytest.MonkeyPatch) -> str:
    module = types.ModuleType("driftd_test_factories")
    module.seeded = seeded_factory  # type: ignore[attr-defined]
    module.plain = plain_factory  # type: ignore[attr-defined]
    module.Builders = Builders  # type: ignore[attr-defined]
    module.linear = lambda **kw: nn.Linear(kw["n_features"], 1)  # type: ignore[attr-defined]
    module.wrong_width = lambda **kw: TwoPart(kw["n_features"], 9)  # type: ignore[attr-defined]
    module.boom = lambda **kw: 1 / 0  # type: ignore[attr-defined]
    module.not_callable = 3  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return module.__name__


def factory_config(path: str, task: str = "classification") -> dict[str, Any]:
    return {"kind": "factory", "factory": path, "task": task, "n_features": 5, "n_outputs": 3}


def test_factory_with_generator_is_deterministic_and_wrapped(factories: str) -> None:
    config = factory_config(f"{factories}:seeded")
    a, b = build_model(config, gen(1)), build_model(config, gen(1))
    assert isinstance(a, SplitModel)
    assert (a.embedding_dim, a.n_outputs, a.config) == (6, 3, config)
    assert same_weights(a, b)
    assert not same_weights(a, build_model(config, gen(2)))
    assert a(torch.zeros(4, 5)).shape == (4, 3)
    assert a.training  # the shape probe ran in eval mode and restored the mode
    head = a.new_head(gen(3))
    assert isinstance(head, nn.Linear)
    assert head.weight.shape == (3, 6)


def test_factory_without_generator_and_nested_attribute(factories: str) -> None:
    model = build_model(factory_config(f"{factories}:plain", "regression"), gen())
    assert model.embedding_dim == 4
    assert model.config["factory"] == f"{factories}:plain"
    assert build_model(factory_config(f"{factories}:Builders.nested"), gen()).embedding_dim == 6


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("linear", r"returned Linear: expected a SplitModel or an nn.Module .*`shared` and `head`"),
        ("wrong_width", r"head must return \(N, 3\)"),
        ("boom", "raised ZeroDivisionError"),
        ("not_callable", "not callable"),
        ("missing", "no attribute 'missing'"),
    ],
)
def test_bad_factory_is_a_clear_error(factories: str, target: str, message: str) -> None:
    with pytest.raises(ModelConfigError, match=message):
        build_model(factory_config(f"{factories}:{target}"), gen())


def test_factory_path_errors() -> None:
    with pytest.raises(ModelConfigError, match=r"expected `package\.module:factory`"):
        load_factory("no_colon_here")
    with pytest.raises(ModelConfigError, match="cannot import"):
        load_factory("driftd_no_such_module_xyz:make")
    assert load_factory("driftd.learning.models:build_model") is build_model


# --- parameters and sparsity -----------------------------------------------------------------


def test_sparsity_counts_zero_weights_not_biases() -> None:
    model = build_model(mlp_config(hidden=[4], n_features=2, n_outputs=2), gen())
    assert sparsity(model) == 0.0
    with torch.no_grad():
        model.shared[0].weight[0].zero_()  # 2 of the 8 + 8 weights
        model.shared[0].bias.zero_()  # biases do not count
    assert sparsity(model) == pytest.approx(2 / 16)
    assert sparsity(nn.ReLU()) == 0.0


def test_sparsity_reads_pruning_masks_before_the_next_forward() -> None:
    model = build_model(mlp_config(hidden=[8], n_features=4, n_outputs=2, norm="layer"), gen())
    linear = model.shared[0]
    prune.l1_unstructured(linear, "weight", amount=16)
    assert sparsity(model) == pytest.approx(16 / (32 + 16))
    # a mask changed by hand is counted at once, though `weight` is recomputed only on forward
    with torch.no_grad():
        linear.weight_mask.zero_()
    assert sparsity(model) == pytest.approx(32 / 48)
    assert count_parameters(model) == 4 * 8 + 8 + 16 + 8 * 2 + 2
