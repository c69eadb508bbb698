"""Built-in networks, split into a shared trunk and a replaceable head.

Every model is a :class:`SplitModel`: ``forward(x) = head(shared(x))`` on flat ``(N, n_features)``
batches. Its ``config`` is a JSON-ready description from which :func:`build_model` rebuilds the
same architecture (a snapshot stores it); :meth:`SplitModel.new_head` builds a fresh head of the
same shape, e.g. one per domain on a common trunk.

Initialisation draws only from the ``torch.Generator`` passed in: the built-in layers are created
on the meta device and then initialised with torch's default schemes from that generator, so the
global RNG is neither read nor advanced.

How a learner should treat train/eval mode: predict (the prequential "test") under
``model.eval()`` and ``torch.no_grad()``, then ``model.train()`` before the learning forward.
When :func:`train_matches_eval` is true (no dropout, no batch norm), the learning forward's output
equals the eval output, so it may double as the prediction and save a forward pass. Batch norm
here falls back to its running statistics when a training batch holds a single value per channel
(a batch of one event), instead of raising as torch's layers do; larger batches normalise with
batch statistics and update the running ones as usual.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from driftd.settings import ModelSettings

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
}
NORMS = ("none", "layer", "batch")
FACTORY_HINT = "expected a SplitModel or an nn.Module with nn.Module attributes `shared` and `head`"


class ModelConfigError(ValueError):
    """A model config or user factory cannot produce a valid split model."""


class SplitModel(nn.Module):
    """A network made of a shared trunk and a task head.

    Attributes:
        shared: Maps ``(N, n_features)`` to ``(N, embedding_dim)``.
        head: Maps ``(N, embedding_dim)`` to ``(N, n_outputs)`` (logits for classification).
        embedding_dim: Width of the trunk's output.
        n_outputs: Width of the head's output.
        config: JSON-ready architecture description accepted by :func:`build_model`.
    """

    def __init__(
        self,
        shared: nn.Module,
        head: nn.Module,
        *,
        embedding_dim: int,
        n_outputs: int,
        config: dict[str, Any],
    ) -> None:
        super().__init__()
        self.shared = shared
        self.head = head
        self.embedding_dim = embedding_dim
        self.n_outputs = n_outputs
        self.config = copy.deepcopy(config)

    def forward(self, x: Tensor) -> Tensor:
        """Return ``head(shared(x))``."""
        out: Tensor = self.head(self.shared(x))
        return out

    def new_head(self, generator: torch.Generator) -> nn.Module:
        """Build a freshly initialised head shaped like ``self.head``, on the same device.

        Raises:
            ModelConfigError: The config (e.g. a user factory) produced a differently shaped head.
        """
        head = build_head(self.config, generator)
        fresh = {name: tuple(v.shape) for name, v in head.state_dict().items()}
        current = {name: tuple(v.shape) for name, v in self.head.state_dict().items()}
        if fresh != current:
            raise ModelConfigError(f"new head differs in shape from the current head: {fresh}")
        reference = next(self.head.parameters(), None)
        return head if reference is None else head.to(reference.device, reference.dtype)


class _OnlineBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm that uses running statistics when a training batch has one value per channel."""

    def forward(self, input: Tensor) -> Tensor:
        """Normalise; see the class docstring for the single-value fallback."""
        if self.training and input.numel() <= input.shape[1]:
            return F.batch_norm(
                input,
                self.running_mean,
                self.running_var,
                self.weight,
                self.bias,
                False,
                0.0,
                self.eps,
            )
        return super().forward(input)


class OnlineBatchNorm1d(_OnlineBatchNorm, nn.BatchNorm1d):
    """``BatchNorm1d`` that accepts a training batch of one sample."""


class OnlineBatchNorm2d(_OnlineBatchNorm, nn.BatchNorm2d):
    """``BatchNorm2d`` that accepts a training batch of one 1x1 sample."""


def model_config_from_settings(settings: ModelSettings, n_features: int) -> dict[str, Any]:
    """Describe the architecture that ``settings`` asks for, for ``n_features`` inputs."""
    task = settings.task
    n_outputs = settings.n_classes if task == "classification" else settings.n_outputs
    common: dict[str, Any] = {"task": task, "n_features": n_features, "n_outputs": n_outputs}
    if settings.kind in ("mlp", "cnn"):
        common |= {
            "head_hidden": list(settings.head_hidden),
            "activation": settings.activation,
            "dropout": settings.dropout,
            "norm": settings.norm,
        }
    if settings.kind == "mlp":
        return {"kind": "mlp", **common, "hidden": list(settings.hidden)}
    if settings.kind == "cnn":
        shape = list(settings.input_shape)
        return {"kind": "cnn", **common, "input_shape": shape, "channels": list(settings.channels)}
    return {"kind": "factory", "factory": settings.kind, **common}


def build_model(config: dict[str, Any], generator: torch.Generator) -> SplitModel:
    """Build (or rebuild from a snapshot's config) a model, initialised from ``generator``.

    Raises:
        ModelConfigError: The config is invalid or a user factory misbehaves.
    """
    if config.get("kind") == "factory":
        return _build_from_factory(config, generator)
    shared, embedding_dim, head = _builtin_parts(config)
    _materialise(shared, generator)
    _materialise(head, generator)
    return SplitModel(
        shared, head, embedding_dim=embedding_dim, n_outputs=config["n_outputs"], config=config
    )


def build_head(config: dict[str, Any], generator: torch.Generator) -> nn.Module:
    """Build only a freshly initialised head of the model ``config`` describes."""
    if config.get("kind") == "factory":
        return _call_factory(config, generator)[1]
    _, _, head = _builtin_parts(config)  # the trunk stays on the meta device: nothing allocated
    _materialise(head, generator)
    return head


def load_factory(path: str) -> Callable[..., Any]:
    """Import the callable named by ``package.module:attribute``.

    Raises:
        ModelConfigError: The path is malformed, the import fails or the target is not callable.
    """
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise ModelConfigError(f"model factory {path!r}: expected `package.module:factory`")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise ModelConfigError(f"model factory {path!r}: cannot import: {error}") from error
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ModelConfigError(f"model factory {path!r}: no attribute {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ModelConfigError(f"model factory {path!r}: {attribute!r} is not callable")
    return target  # type: ignore[no-any-return]


def has_batch_norm(model: nn.Module) -> bool:
    """Whether ``model`` has batch norm (train mode normalises with, and updates, batch stats)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def is_stochastic(model: nn.Module) -> bool:
    """Whether ``model`` has active dropout (train-mode outputs are random)."""
    return any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules())


def train_matches_eval(model: nn.Module) -> bool:
    """Whether a train-mode forward equals an eval-mode one (for torch's built-in layers)."""
    return not (has_batch_norm(model) or is_stochastic(model))


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters (each shared tensor counted once)."""
    return sum(p.numel() for p in model.parameters())


def sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero entries in the weight matrices and kernels (2-D or more).

    Biases and norm scales are left out. A weight pruned with ``torch.nn.utils.prune`` counts as
    ``weight_orig * weight_mask``, which is correct even before the next forward recomputes it.
    """
    zeros = total = 0
    for module in model.modules():
        params = dict(module.named_parameters(recurse=False))
        buffers = dict(module.named_buffers(recurse=False))
        weight = params.get("weight")
        if "weight_orig" in params and "weight_mask" in buffers:
            weight = params["weight_orig"] * buffers["weight_mask"]
        if weight is not None and weight.dim() >= 2:
            zeros += int((weight == 0).sum().item())
            total += weight.numel()
    return zeros / total if total else 0.0


def _builtin_parts(config: dict[str, Any]) -> tuple[nn.Module, int, nn.Module]:
    """Trunk, embedding width and head of a built-in kind, on the meta device."""
    kind = config.get("kind")
    if kind not in ("mlp", "cnn"):
        raise ModelConfigError(f"model config: unknown kind {kind!r} (mlp, cnn or factory)")
    if config.get("task") not in ("classification", "regression"):
        raise ModelConfigError(f"model config: task must be classification or regression")
    n_outputs = _int(config, "n_outputs")
    with torch.device("meta"):
        shared, embedding_dim = _mlp_trunk(config) if kind == "mlp" else _cnn_trunk(config)
        head = _head(config, embedding_dim, n_outputs)
    return shared, embedding_dim, head


def _int(config: dict[str, Any], key: str, minimum: int = 1) -> int:
    value = config.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ModelConfigError(
            f"model config: {key} must be an integer >= {minimum}, got {value!r}"
        )
    return value


def _ints(config: dict[str, Any], key: str) -> list[int]:
    values = config.get(key, [])
    if not isinstance(values, list):
        raise ModelConfigError(f"model config: {key} must be a list of integers, got {values!r}")
    return [_int({key: v}, key) for v in values]


def _layer_options(config: dict[str, Any]) -> tuple[type[nn.Module], float, str]:
    activation, dropout, norm = config.get("activation"), config.get("dropout"), config.get("norm")
    if activation not in ACTIVATIONS:
        raise ModelConfigError(f"model config: activation must be one of {sorted(ACTIVATIONS)}")
    if not isinstance(dropout, int | float) or not 0.0 <= dropout < 1.0:
        raise ModelConfigError(f"model config: dropout must be in [0, 1), got {dropout!r}")
    if norm not in NORMS:
        raise ModelConfigError(f"model config: norm must be one of {list(NORMS)}, got {norm!r}")
    return ACTIVATIONS[str(activation)], float(dropout), str(norm)


def _dense_block(width_in: int, width: int, config: dict[str, Any]) -> list[nn.Module]:
    activation, dropout, norm = _layer_options(config)
    layers: list[nn.Module] = [nn.Linear(width_in, width)]
    if norm == "layer":
        layers.append(nn.LayerNorm(width))
    elif norm == "batch":
        layers.append(OnlineBatchNorm1d(width))
    layers.append(activation())
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return layers


def _mlp_trunk(config: dict[str, Any]) -> tuple[nn.Module, int]:
    width = _int(config, "n_features")
    layers: list[nn.Module] = []
    for hidden in _ints(config, "hidden"):
        layers += _dense_block(width, hidden, config)
        width = hidden
    return (nn.Sequential(*layers) if layers else nn.Identity()), width


def _cnn_trunk(config: dict[str, Any]) -> tuple[nn.Module, int]:
    shape, channels = _ints(config, "input_shape"), _ints(config, "channels")
    if len(shape) != 3:
        raise ModelConfigError(f"model config: input_shape must be [C, H, W], got {shape}")
    if math.prod(shape) != _int(config, "n_features"):
        raise ModelConfigError(f"model config: n_features must equal prod(input_shape) {shape}")
    if not channels:
        raise ModelConfigError("model config: channels must name at least one conv width")
    activation, dropout, norm = _layer_options(config)
    (width, height, breadth) = shape
    layers: list[nn.Module] = [nn.Unflatten(1, (width, height, breadth))]
    for out in channels:
        layers.append(nn.Conv2d(width, out, kernel_size=3, padding=1))
        if norm == "layer":
            layers.append(nn.GroupNorm(1, out))
        elif norm == "batch":
            layers.append(OnlineBatchNorm2d(out))
        layers.append(activation())
        if height >= 2 and breadth >= 2:  # halve while there is room to
            layers.append(nn.MaxPool2d(2))
            height, breadth = height // 2, breadth // 2
        width = out
    grid = (min(height, 2), min(breadth, 2))  # a coarse grid keeps some layout, bounded width
    layers += [nn.AdaptiveAvgPool2d(grid), nn.Flatten()]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers), width * grid[0] * grid[1]


def _head(config: dict[str, Any], embedding_dim: int, n_outputs: int) -> nn.Module:
    layers: list[nn.Module] = []
    width = embedding_dim
    for hidden in _ints(config, "head_hidden"):
        layers += _dense_block(width, hidden, config)
        width = hidden
    layers.append(nn.Linear(width, n_outputs))
    return nn.Sequential(*layers)


def _materialise(module: nn.Module, generator: torch.Generator) -> None:
    """Allocate a meta-device module on the CPU and initialise it as torch would, from generator."""
    module.to_empty(device="cpu")
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, nn.Linear | nn.Conv2d):
                nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
                if layer.bias is not None:
                    bound = 1 / math.sqrt(layer.weight[0].numel())
                    nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
            elif hasattr(layer, "reset_parameters"):
                layer.reset_parameters()  # norm layers: deterministic ones, zeros, running stats


def _accepts_generator(factory: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "generator" or p.kind is p.VAR_KEYWORD for p in parameters)


def _call_factory(
    config: dict[str, Any], generator: torch.Generator
) -> tuple[nn.Module, nn.Module]:
    path = config.get("factory")
    if not isinstance(path, str):
        raise ModelConfigError(f"model config: factory must be an import path, got {path!r}")
    factory = load_factory(path)
    kwargs: dict[str, Any] = {
        "n_features": _int(config, "n_features"),
        "n_outputs": _int(config, "n_outputs"),
        "task": config.get("task"),
    }
    if _accepts_generator(factory):
        kwargs["generator"] = generator
    try:
        result = factory(**kwargs)
    except Exception as error:
        raise ModelConfigError(f"model factory {path!r} raised {error!r}") from error
    shared, head = getattr(result, "shared", None), getattr(result, "head", None)
    if not (isinstance(result, nn.Module) and isinstance(shared, nn.Module)):
        raise ModelConfigError(
            f"model factory {path!r} returned {type(result).__name__}: {FACTORY_HINT}"
        )
    if not isinstance(head, nn.Module):
        raise ModelConfigError(
            f"model factory {path!r} returned {type(result).__name__}: {FACTORY_HINT}"
        )
    return shared, head


def _build_from_factory(config: dict[str, Any], generator: torch.Generator) -> SplitModel:
    shared, head = _call_factory(config, generator)
    n_features, n_outputs = _int(config, "n_features"), _int(config, "n_outputs")
    modes = (shared.training, head.training)
    shared.eval()
    head.eval()
    try:
        with torch.no_grad():
            reference = next(shared.parameters(), None)
            device = reference.device if reference is not None else None
            embedding = shared(torch.zeros(2, n_features, device=device))
            output = head(embedding)
    except Exception as error:
        raise ModelConfigError(
            f"model factory {config['factory']!r}: forward of a (2, {n_features}) batch failed: "
            f"{error!r}"
        ) from error
    finally:
        shared.train(modes[0])
        head.train(modes[1])
    if not isinstance(embedding, Tensor) or embedding.dim() != 2 or embedding.shape[0] != 2:
        raise ModelConfigError(f"model factory {config['factory']!r}: shared must return (N, dim)")
    if not isinstance(output, Tensor) or tuple(output.shape) != (2, n_outputs):
        raise ModelConfigError(
            f"model factory {config['factory']!r}: head must return (N, {n_outputs})"
        )
    return SplitModel(
        shared, head, embedding_dim=int(embedding.shape[1]), n_outputs=n_outputs, config=config
    )
