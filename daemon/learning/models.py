"""Built-in networks, split into a shared trunk and a replaceable head.

Every model is a :class:`SplitModel` on flat ``(N, n_features)`` batches. Its ``config`` is a
JSON-ready description from which :func:`build_model` rebuilds the same architecture (snapshots
store it); :meth:`SplitModel.new_head` builds a fresh head of the same shape (e.g. per domain).
With ``wide`` the trunk's embedding ends with the standardised input itself (:class:`WideTrunk`):
the head's first Linear then holds a linear model of the inputs beside the deep features, and a
per-domain head has its own.
Built-in layers are created on the meta device, then initialised with torch's default schemes
drawn from the ``torch.Generator`` given: same seed, same weights; the global RNG is untouched.

Train/eval mode, for the learner: predict (the prequential "test") under ``model.eval()`` and
``torch.no_grad()``, then call ``model.train()`` before the learning forward. When
:func:`train_matches_eval` holds (no dropout, no batch norm) the learning forward's output equals
the eval output and may double as the prediction. Batch norm here uses its running statistics
when a training batch holds one value per channel (a batch of one event) instead of raising.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from driftd.learning.standardize import RunningStandardizer

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
}
NORMS = ("none", "layer", "batch")
TASKS = ("classification", "regression")


class ModelConfigError(ValueError):
    """A model config or user factory cannot produce a valid split model."""


class SplitModel(nn.Module):
    """A network made of a shared trunk and a task head: ``forward(x) = head(shared(x))``.

    Attributes:
        shared: Maps ``(N, n_features)`` to ``(N, embedding_dim)``.
        head: Maps ``(N, embedding_dim)`` to ``(N, n_outputs)`` (logits for classification).
        embedding_dim: Width of the trunk's output.
        n_outputs: Width of the head's output.
        config: JSON-ready architecture description accepted by :func:`build_model`.
        inputs: The running input standardiser applied before the trunk (``config``'s
            ``standardize``), or None.
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
        self.inputs = _standardizer(config)
        self.shared = shared
        self.head = head
        self.embedding_dim = embedding_dim
        self.n_outputs = n_outputs
        self.config = copy.deepcopy(config)

    def forward(self, x: Tensor) -> Tensor:
        """Return ``head(shared(inputs(x)))`` (``inputs`` when the model standardises)."""
        if self.inputs is not None:
            x = self.inputs(x)
        out: Tensor = self.head(self.shared(x))
        return out

    def new_head(self, generator: torch.Generator) -> nn.Module:
        """Build a freshly initialised head shaped like ``self.head``, on its device and dtype.

        Raises:
            ModelConfigError: The config (e.g. a user factory) gave a differently shaped head.
        """
        head = build_head(self.config, generator)
        fresh = {name: tuple(v.shape) for name, v in head.state_dict().items()}
        current = {name: tuple(v.shape) for name, v in self.head.state_dict().items()}
        if fresh != current:
            raise ModelConfigError(f"new head {fresh} differs from the current head {current}")
        reference = next(self.head.parameters(), None)
        return head if reference is None else head.to(reference.device, reference.dtype)


class WideTrunk(nn.Sequential):
    """A trunk whose embedding is its layers' output followed by its own input.

    The head's first Linear then holds a linear map of the (standardised) inputs beside the deep
    features ("wide & deep"): a linear rule is learnt directly, not through the layers, which
    learn the rest. The layers stay a flat ``nn.Sequential``: pruning and int8 export see the same
    leaves.
    """

    def forward(self, input: Tensor) -> Tensor:
        """Return ``cat([layers(input), input])`` along the feature dimension."""
        deep = input
        for layer in self:
            deep = layer(deep)
        return torch.cat([deep, input.flatten(1)], dim=1)


class _OnlineBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm that survives a training batch with one value per channel.

    Such a batch (torch would raise) is normalised with the running statistics, which it leaves
    unchanged; gradients still reach the affine parameters.
    """

    def forward(self, input: Tensor) -> Tensor:
        """Normalise ``input`` (see the class docstring)."""
        if self.training and input.numel() <= input.shape[1]:
            mean, var, eps = self.running_mean, self.running_var, self.eps
            return nn.functional.batch_norm(input, mean, var, self.weight, self.bias, eps=eps)
        return super().forward(input)


class OnlineBatchNorm1d(_OnlineBatchNorm, nn.BatchNorm1d):
    """``BatchNorm1d`` that accepts a training batch of one sample."""


class OnlineBatchNorm2d(_OnlineBatchNorm, nn.BatchNorm2d):
    """``BatchNorm2d`` that accepts a training batch of one 1x1 sample."""


def _standardizer(config: dict[str, Any]) -> RunningStandardizer | None:
    if not config.get("standardize", False):
        return None
    horizon = int(config.get("standardize_horizon", 10_000))
    return RunningStandardizer(int(config["n_features"]), horizon=horizon)


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
    n_outputs = config["n_outputs"]
    return SplitModel(shared, head, embedding_dim=embedding_dim, n_outputs=n_outputs, config=config)


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
    """Whether ``model`` has batch norm (train mode uses, and updates, batch statistics)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def is_stochastic(model: nn.Module) -> bool:
    """Whether ``model`` has active dropout (train-mode outputs are random)."""
    return any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules())


def train_matches_eval(model: nn.Module) -> bool:
    """Whether a train-mode forward equals an eval-mode one (judged from torch's layers)."""
    return not (has_batch_norm(model) or is_stochastic(model))


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters (a shared tensor counted once)."""
    return sum(p.numel() for p in model.parameters())


def sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero entries in weight matrices and kernels (2-D or more).

    Biases and norm scales are left out. A weight pruned by ``torch.nn.utils.prune`` counts as
    ``weight_orig * weight_mask``, correct even before the next forward recomputes ``weight``.
    """
    zeros = total = 0
    for module in model.modules():
        params = dict(module.named_parameters(recurse=False))
        buffers = dict(module.named_buffers(recurse=False))
        weight: Tensor | None = params.get("weight")
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
    if config.get("task") not in TASKS:
        raise ModelConfigError(f"model config: task must be one of {TASKS}")
    n_outputs = _int(config, "n_outputs")
    with torch.device("meta"):
        shared, embedding_dim = _mlp_trunk(config) if kind == "mlp" else _cnn_trunk(config)
        if _wide(config) and isinstance(shared, nn.Sequential):  # no layers: already linear
            shared = WideTrunk(*shared.children())
            embedding_dim += _int(config, "n_features")
        head, width = _dense_stack(config, "head_hidden", embedding_dim)
        head.append(nn.Linear(width, n_outputs))
    return shared, embedding_dim, head


def _wide(config: dict[str, Any]) -> bool:
    """Whether the config asks for a wide trunk (a snapshot from before the key: no)."""
    wide = config.get("wide", False)
    if not isinstance(wide, bool):
        raise ModelConfigError(f"model config: wide must be true or false, got {wide!r}")
    return wide


def _int(config: dict[str, Any], key: str) -> int:
    value = config.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ModelConfigError(f"model config: {key} must be a positive integer, got {value!r}")
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
        raise ModelConfigError(f"model config: norm must be one of {NORMS}, got {norm!r}")
    return ACTIVATIONS[str(activation)], float(dropout), str(norm)


def _dense_stack(config: dict[str, Any], key: str, width: int) -> tuple[nn.Sequential, int]:
    """Linear -> norm -> activation -> dropout, for each width in ``config[key]``."""
    activation, dropout, norm = _layer_options(config)
    layers = nn.Sequential()
    for hidden in _ints(config, key):
        layers.append(nn.Linear(width, hidden))
        if norm != "none":
            layers.append(nn.LayerNorm(hidden) if norm == "layer" else OnlineBatchNorm1d(hidden))
        layers.append(activation())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = hidden
    return layers, width


def _mlp_trunk(config: dict[str, Any]) -> tuple[nn.Module, int]:
    layers, width = _dense_stack(config, "hidden", _int(config, "n_features"))
    return (layers if len(layers) else nn.Identity()), width


def _cnn_trunk(config: dict[str, Any]) -> tuple[nn.Module, int]:
    shape, channels = _ints(config, "input_shape"), _ints(config, "channels")
    if len(shape) != 3 or math.prod(shape) != _int(config, "n_features"):
        raise ModelConfigError(f"model config: input_shape {shape} must be [C, H, W] of n_features")
    if not channels:
        raise ModelConfigError("model config: channels must name at least one conv width")
    activation, dropout, norm = _layer_options(config)
    width, height, breadth = shape
    layers = nn.Sequential(nn.Unflatten(1, (width, height, breadth)))
    for out in channels:
        layers.append(nn.Conv2d(width, out, kernel_size=3, padding=1))
        if norm != "none":
            layers.append(nn.GroupNorm(1, out) if norm == "layer" else OnlineBatchNorm2d(out))
        layers.append(activation())
        if height >= 2 and breadth >= 2:  # halve while there is room to
            layers.append(nn.MaxPool2d(2))
            height, breadth = height // 2, breadth // 2
        width = out
    grid = (min(height, 2), min(breadth, 2))  # a coarse grid keeps some layout at bounded width
    layers.extend([nn.AdaptiveAvgPool2d(grid), nn.Flatten()])
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return layers, width * grid[0] * grid[1]


def _materialise(module: nn.Module, generator: torch.Generator) -> None:
    """Allocate a meta-device module on the CPU and initialise it as torch does, from generator."""
    module.to_empty(device="cpu")
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, nn.Linear | nn.Conv2d):
                nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
                if layer.bias is not None:
                    bound = 1 / math.sqrt(layer.weight[0].numel())
                    nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
            elif isinstance(layer, nn.LayerNorm | nn.GroupNorm | nn.modules.batchnorm._NormBase):
                layer.reset_parameters()  # deterministic: ones, zeros, fresh running stats


def _accepts_generator(factory: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # some callables have no signature
        return False
    return any(p.name == "generator" or p.kind is p.VAR_KEYWORD for p in parameters)


def _call_factory(
    config: dict[str, Any], generator: torch.Generator
) -> tuple[nn.Module, nn.Module]:
    """Call the user factory; return its ``shared`` and ``head`` after checking their types."""
    path = config.get("factory")
    if not isinstance(path, str):
        raise ModelConfigError(f"model config: factory must be an import path, got {path!r}")
    factory = load_factory(path)
    kwargs: dict[str, Any] = {"n_features": _int(config, "n_features")}
    kwargs |= {"n_outputs": _int(config, "n_outputs"), "task": config.get("task")}
    if _accepts_generator(factory):
        kwargs["generator"] = generator
    try:
        result = factory(**kwargs)
    except Exception as error:
        raise ModelConfigError(f"model factory {path!r} raised {error!r}") from error
    shared, head = getattr(result, "shared", None), getattr(result, "head", None)
    if not all(isinstance(part, nn.Module) for part in (result, shared, head)):
        raise ModelConfigError(
            f"model factory {path!r} returned {type(result).__name__}: expected a SplitModel or "
            "an nn.Module with nn.Module attributes `shared` and `head`"
        )
    return shared, head  # type: ignore[return-value]


def _build_from_factory(config: dict[str, Any], generator: torch.Generator) -> SplitModel:
    """Build a user model and check its shapes on a probe batch of zeros, in eval mode."""
    shared, head = _call_factory(config, generator)
    n_features, n_outputs, path = config["n_features"], config["n_outputs"], config["factory"]
    modes = (shared.training, head.training)
    shared.eval()
    head.eval()
    try:
        reference = next(shared.parameters(), None)
        with torch.no_grad():
            x = torch.zeros(2, n_features, device=None if reference is None else reference.device)
            embedding = shared(x)
            output = head(embedding)
    except Exception as error:
        raise ModelConfigError(
            f"model factory {path!r}: probe forward failed: {error!r}"
        ) from error
    finally:
        shared.train(modes[0])
        head.train(modes[1])
    if not isinstance(embedding, Tensor) or embedding.dim() != 2 or embedding.shape[0] != 2:
        raise ModelConfigError(f"model factory {path!r}: shared must return (N, embedding_dim)")
    if not isinstance(output, Tensor) or tuple(output.shape) != (2, n_outputs):
        raise ModelConfigError(f"model factory {path!r}: head must return (N, {n_outputs})")
    dim = int(embedding.shape[1])
    return SplitModel(shared, head, embedding_dim=dim, n_outputs=n_outputs, config=config)
