"""int8 dynamic quantization of the Linear layers, for CPU serving.

``torch.ao.quantization.quantize_dynamic`` still exists in torch 2.13 but is deprecated (its
warning points to torchao's ``quantize_``, a separate package driftd does not depend on), and
its packed weights cannot be stored in safetensors. :class:`Int8DynamicLinear` does the same
computation with plain tensors, as torchao's int8-dynamic-activation/int8-weight scheme does:

* weights: symmetric int8 per output row, ``w ~ weight_int8 * weight_scale[:, None]``;
* activations: symmetric int8 per event, scaled at run time from the batch itself;
* the int8 x int8 product accumulates in int32 (``torch._int_mm`` on the CPU; elsewhere a float
  matmul of the int8 values, exact for these sizes), then is rescaled and the bias added.

Its state (``weight_int8``, ``weight_scale``, ``bias``) is plain tensors, so a quantized copy
is saved as safetensors beside a snapshot and rebuilt from the architecture config alone
(:func:`load_int8`). Conv2d layers stay float, and so, by default, does the output layer.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from driftd.pruning.measured import evaluating

_QMAX = 127.0


class Int8DynamicLinear(nn.Module):
    """A Linear layer with int8 weights and dynamically quantized int8 activations.

    Args:
        in_features: Input width.
        out_features: Output width.
        bias: Whether it has a (float) bias.
    """

    weight_int8: Tensor
    weight_scale: Tensor
    bias: Tensor | None

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer(
            "weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8)
        )
        self.register_buffer("weight_scale", torch.ones(out_features))
        self.register_buffer("bias", torch.zeros(out_features) if bias else None)

    @classmethod
    def from_float(cls, linear: nn.Linear) -> Int8DynamicLinear:
        """Quantize a float Linear (per output row, symmetric)."""
        weight = linear.weight.detach().float()
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None)
        scale = weight.abs().amax(dim=1).clamp(min=1e-12) / _QMAX
        layer.weight_int8 = torch.round(weight / scale[:, None]).clamp(-_QMAX, _QMAX).to(torch.int8)
        layer.weight_scale = scale
        if linear.bias is not None:
            layer.bias = linear.bias.detach().float().clone()
        return layer.to(linear.weight.device)

    def forward(self, x: Tensor) -> Tensor:
        """``x @ W.T + b`` computed in int8 with an int32 accumulator."""
        rows = x.reshape(-1, self.in_features).float()
        row_max = rows.abs().amax(dim=1, keepdim=True).clamp_(min=1e-12)
        quantized = (rows * (_QMAX / row_max)).round_().to(torch.int8)  # |values| <= 127
        weight = self.weight_int8
        if rows.device.type == "cpu" and len(rows):
            out = torch._int_mm(quantized, weight.t()).float()
        else:
            out = quantized.float() @ weight.float().t()
        out.mul_(row_max.mul_(1.0 / _QMAX)).mul_(self.weight_scale)
        if self.bias is not None:
            out.add_(self.bias)
        return out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        """Sizes, as ``nn.Linear`` shows them."""
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def quantize_int8(model: nn.Module, *, keep_output_float: bool = True) -> nn.Module:
    """A copy of ``model`` whose Linear layers are :class:`Int8DynamicLinear` (for inference).

    Args:
        model: A float model (left untouched).
        keep_output_float: Leave the head's last Linear (the outputs/classes) in float: it is
            small, so int8 would cost more in quantizing its input than it saves, and the
            logits keep full precision.
    """
    quantized = copy.deepcopy(model).eval()
    linears = [(name, m) for name, m in quantized.named_modules() if isinstance(m, nn.Linear)]
    if keep_output_float and linears:
        linears = linears[:-1]
    for name, module in linears:
        parent, _, attr = name.rpartition(".")
        setattr(quantized.get_submodule(parent), attr, Int8DynamicLinear.from_float(module))
    return quantized


def load_int8(
    float_model: nn.Module, tensors: Mapping[str, Tensor], *, keep_output_float: bool = True
) -> nn.Module:
    """Rebuild a quantized model from its ``state_dict``, given a float model of the same shape.

    The inference side builds ``float_model`` from the snapshot's config
    (``build_model(config, generator)``); its float weights are replaced by ``tensors``.
    """
    quantized = quantize_int8(float_model, keep_output_float=keep_output_float)
    quantized.load_state_dict(dict(tensors))
    return quantized


def int8_accuracy_delta(
    float_model: nn.Module,
    int8_model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    task: str = "classification",
) -> dict[str, Any]:
    """How the quantized model compares with the float one on a window (for the manifest).

    Returns:
        ``float_accuracy``, ``int8_accuracy``, ``accuracy_delta`` (int8 minus float) and
        ``agreement`` (share of identical predictions) for classification; ``float_mse``,
        ``int8_mse`` and ``mse_delta`` for regression; ``max_abs_output_error`` and ``events``
        always.
    """
    with evaluating(float_model), evaluating(int8_model):
        reference, quantized = float_model(x), int8_model(x)
    result: dict[str, Any] = {
        "events": len(x),
        "max_abs_output_error": float((reference - quantized).abs().max()) if len(x) else 0.0,
    }
    if task == "classification":
        float_pred, int8_pred = reference.argmax(dim=1), quantized.argmax(dim=1)
        float_acc = float((float_pred == y).float().mean()) if len(x) else 0.0
        int8_acc = float((int8_pred == y).float().mean()) if len(x) else 0.0
        agreement = float((float_pred == int8_pred).float().mean()) if len(x) else 1.0
        return result | {
            "float_accuracy": float_acc,
            "int8_accuracy": int8_acc,
            "accuracy_delta": int8_acc - float_acc,
            "agreement": agreement,
        }
    float_mse = float((reference - y).pow(2).mean()) if len(x) else 0.0
    int8_mse = float((quantized - y).pow(2).mean()) if len(x) else 0.0
    return result | {
        "float_mse": float_mse,
        "int8_mse": int8_mse,
        "mse_delta": int8_mse - float_mse,
    }
