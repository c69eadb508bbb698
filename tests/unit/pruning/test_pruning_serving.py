"""int8 export, FLOPs per event and the distillation loss."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from driftd.pruning import (
    Int8DynamicLinear,
    distillation_loss,
    flops_per_event,
    int8_accuracy_delta,
    load_int8,
    quantize_int8,
    shrink_model,
)
from tests.unit.pruning.builders import build, cnn_config, inputs, labels, mlp_config


def test_int8_linear_is_close_to_the_float_layer() -> None:
    linear = torch.nn.Linear(64, 32)
    quantized = Int8DynamicLinear.from_float(linear)
    assert quantized.weight_int8.dtype == torch.int8
    x = torch.randn(256, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = linear(x), quantized(x)
    assert got.shape == expected.shape
    assert float((got - expected).abs().max()) < 0.02 * float(expected.abs().max())
    assert quantized(torch.zeros(0, 64)).shape == (0, 32)
    assert quantized(torch.randn(2, 3, 64)).shape == (2, 3, 32)


def test_the_output_layer_stays_float_unless_asked() -> None:
    model = build(mlp_config())
    everything = quantize_int8(model, keep_output_float=False)
    assert not any(isinstance(m, torch.nn.Linear) for m in everything.modules())
    assert sum(isinstance(m, Int8DynamicLinear) for m in everything.modules()) == 4


@pytest.mark.parametrize("config", [mlp_config(), cnn_config()], ids=["mlp", "cnn"])
def test_quantized_model_round_trips_through_safetensors(
    config: dict[str, object], tmp_path: Path
) -> None:
    model = build(config).eval()
    quantized = quantize_int8(model)
    linears = [m for m in quantized.modules() if isinstance(m, torch.nn.Linear)]
    assert linears == [quantized.head[-1]]  # only the output layer stays float
    assert any(isinstance(m, torch.nn.Linear) for m in model.modules())  # original untouched
    path = tmp_path / "model.int8.safetensors"
    save_file(quantized.state_dict(), str(path))
    reloaded = load_int8(build(config, seed=99), load_file(str(path)))
    x = inputs(config, 16)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(x), quantized(x), rtol=0, atol=0)


def test_accuracy_delta_reports_both_models_on_the_window() -> None:
    config = mlp_config()
    model = build(config)
    x, y = inputs(config, 64), labels(config, 64)
    report = int8_accuracy_delta(model, quantize_int8(model), x, y)
    float_acc = float((model.eval()(x).argmax(dim=1) == y).float().mean())
    assert report["float_accuracy"] == pytest.approx(float_acc)
    assert report["accuracy_delta"] == pytest.approx(
        report["int8_accuracy"] - report["float_accuracy"]
    )
    assert report["agreement"] >= 0.9
    assert report["events"] == 64


def test_flops_per_event_of_mlp_and_cnn() -> None:
    # 2 * (10*16 + 16*12 + 12*8 + 8*3)
    assert flops_per_event(build(mlp_config())) == {"dense": 944, "nonzero": 944}
    # conv 4x1x3x3 at 8x8, conv 6x4x3x3 at 4x4, Linear 24 -> 10
    assert flops_per_event(build(cnn_config()))["dense"] == 2 * (36 * 64 + 216 * 16 + 240)


def test_flops_follow_masks_and_shrinking() -> None:
    model = build(mlp_config())
    with torch.no_grad():
        model.shared[0].weight[:, :5] = 0.0
    flops = flops_per_event(model)
    assert flops == {"dense": 944, "nonzero": 944 - 2 * 16 * 5}
    shrunk = shrink_model(model, {"shared.0": torch.arange(8)}).model
    assert flops_per_event(shrunk)["dense"] == 2 * (10 * 8 + 8 * 12 + 12 * 8 + 8 * 3)
    assert flops_per_event(quantize_int8(shrunk))["dense"] == flops_per_event(shrunk)["dense"]


def test_distillation_loss_is_zero_for_the_teacher_itself_and_grows_with_disagreement() -> None:
    teacher = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    assert float(distillation_loss(teacher, teacher)) == pytest.approx(0.0, abs=1e-7)
    near = distillation_loss(teacher + torch.tensor([0.1, 0.0, 0.0]), teacher)
    far = distillation_loss(teacher.flip(1), teacher)
    assert 0 < float(near) < float(far)
    assert float(distillation_loss(teacher + 1.0, teacher, task="regression")) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="temperature"):
        distillation_loss(teacher, teacher, temperature=0.0)
