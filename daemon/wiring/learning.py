"""Settings in, learning objects out: the model, the learner, its LR policy, the decoder."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from driftd.decode import JsonDecoder
from driftd.learning.granularity import StepSizeController
from driftd.learning.learner import OnlineLearner, make_optimizer
from driftd.learning.lr import (
    AdaptiveLR,
    ConstantLR,
    CosineRestartsLR,
    ExponentialLR,
    LRPolicy,
    StepDecayLR,
    clamp,
)
from driftd.learning.models import build_model
from driftd.settings.root import LearnerSettings, LRSettings, ModelSettings, Settings

log = logging.getLogger("driftd.app")


def resolve_device(wanted: str) -> torch.device:
    """The configured device, falling back to CPU (with a warning) when CUDA is absent."""
    device = torch.device(wanted)
    if device.type == "cuda" and not torch.cuda.is_available():
        log.warning("model.device=%s but CUDA is not available: using the CPU", wanted)
        return torch.device("cpu")
    return device


def learner_builder(settings: Settings) -> Callable[[dict[str, Any]], OnlineLearner]:
    """A function building a fresh, seeded learner for a model config."""
    device = resolve_device(settings.model.device)

    def build(config: dict[str, Any]) -> OnlineLearner:
        generator = torch.Generator().manual_seed(settings.model.seed)
        model = build_model(config, generator).to(device)
        learner_settings = settings.learner
        optimizer = make_optimizer(
            learner_settings.optimizer,
            model,
            lr=learner_settings.lr,
            momentum=learner_settings.momentum,
            weight_decay=learner_settings.weight_decay,
        )
        return OnlineLearner(
            model=model,
            optimizer=optimizer,
            lr_policy=make_lr_policy(settings.lr, learner_settings.lr),
            task=settings.model.task,
            loss=loss_name(settings),
            metrics_window=learner_settings.metrics_window,
            huber_delta=learner_settings.huber_delta,
            grad_clip_norm=learner_settings.grad_clip_norm,
            device=device,
            micro_batch=fixed_micro_batch(learner_settings),
        )

    return build


def loss_name(settings: Settings) -> Any:
    """The configured loss; ``auto`` is cross-entropy for classification, MSE otherwise."""
    if settings.model.loss != "auto":
        return settings.model.loss
    return "cross_entropy" if settings.model.task == "classification" else "mse"


def configured_n_features(settings: Settings) -> int | None:
    """The feature count the settings fix, if any (explicit, feature names, or CNN shape)."""
    if settings.model.n_features is not None:
        return settings.model.n_features
    if settings.event.feature_names:
        return len(settings.event.feature_names)
    if settings.model.input_shape:
        product = 1
        for size in settings.model.input_shape:
            product *= size
        return product
    return None


def make_decoder(settings: Settings, n_features: int | None) -> JsonDecoder:
    """The JSON decoder the settings describe."""
    event = settings.event
    return JsonDecoder(
        task=settings.model.task,
        n_features=n_features,
        n_classes=settings.model.n_classes,
        n_outputs=settings.model.n_outputs,
        max_record_bytes=settings.kafka.max_record_bytes,
        x_field=event.x_field,
        y_field=event.y_field,
        domain_field=event.domain_field,
        id_field=event.id_field,
        ts_field=event.ts_field,
        feature_names=event.feature_names,
        labels=event.labels,
        label_limit=_label_limit(settings),
    )


def _label_limit(settings: Settings) -> int | None:
    adaptation = settings.adaptation
    growing = adaptation.enabled and adaptation.grow_classes
    return adaptation.max_classes if growing and settings.model.task == "classification" else None


def fixed_micro_batch(settings: LearnerSettings) -> int | None:
    """The micro-batch size ``settings`` fixes, or with ``auto`` an unsteered learner's.

    A learner that no step-size controller steers (built outside a loop) takes 32.
    """
    if settings.micro_batch == "auto":
        return min(32, settings.max_micro_batch)
    return settings.micro_batch


def step_size_controller(settings: LearnerSettings) -> StepSizeController | None:
    """The controller that chooses the micro-batch size, when ``learner.micro_batch=auto``.

    It starts at the finest size: a new model gains most from fine steps, and a backlog
    coarsens the steps within a few polls.
    """
    if settings.micro_batch != "auto":
        return None
    coarsest = min(settings.max_micro_batch, settings.batch_size)  # a step never spans polls
    return StepSizeController(
        min_size=min(settings.min_micro_batch, coarsest),
        max_size=coarsest,
        start=settings.min_micro_batch,
    )


def model_config_from_settings(settings: ModelSettings, n_features: int) -> dict[str, Any]:
    """Describe the architecture ``settings`` asks for, given ``n_features`` inputs."""
    n_outputs = settings.n_classes if settings.task == "classification" else settings.n_outputs
    kind = settings.kind if settings.kind in ("mlp", "cnn") else "factory"
    config: dict[str, Any] = {"kind": kind, "task": settings.task}
    config |= {"n_features": n_features, "n_outputs": n_outputs}
    if settings.standardize:
        config |= {"standardize": True, "standardize_horizon": settings.standardize_horizon}
    if kind == "factory":
        return config | {"factory": settings.kind}
    config |= {
        "activation": settings.activation,
        "dropout": settings.dropout,
        "norm": settings.norm,
        "head_hidden": list(settings.head_hidden),
        "wide": settings.wide,
    }
    if kind == "mlp":
        return config | {"hidden": list(settings.hidden)}
    return config | {"input_shape": list(settings.input_shape), "channels": list(settings.channels)}


def make_lr_policy(settings: LRSettings, base_lr: float) -> LRPolicy:
    """Build the policy ``settings.policy`` names, starting at ``base_lr`` (``learner.lr``)."""
    bounds = {"base_lr": base_lr, "min_lr": settings.min_lr, "max_lr": settings.max_lr}
    if settings.policy == "constant":
        return ConstantLR(**bounds)
    if settings.policy in ("step", "exponential"):
        kind = StepDecayLR if settings.policy == "step" else ExponentialLR
        return kind(step_size=settings.step_size, gamma=settings.gamma, **bounds)
    if settings.policy == "cosine_restarts":
        return CosineRestartsLR(
            cycle_steps=settings.cycle_steps, cycle_mult=settings.cycle_mult, **bounds
        )
    # The loss-aware policy moves only within [min_scale, max_scale] x the base rate: a noisy
    # plateau can slow learning, never starve it (and lr.min_lr/max_lr still apply).
    bounds["min_lr"] = clamp(base_lr * settings.min_scale, settings.min_lr, settings.max_lr)
    bounds["max_lr"] = clamp(base_lr * settings.max_scale, bounds["min_lr"], settings.max_lr)
    return AdaptiveLR(
        smoothing=settings.smoothing,
        patience=settings.patience,
        decrease_factor=settings.decrease_factor,
        increase_factor=settings.increase_factor,
        improve_streak=settings.improve_streak,
        threshold=settings.threshold,
        **bounds,
    )
