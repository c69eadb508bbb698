"""Settings in, core objects out: the learner, the decoder, the pruning stage.

The half of the composition root that needs no adapter (``driftd.app`` adds the edges).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from driftd.adaptation.policy import Adaptation
from driftd.decode import JsonDecoder
from driftd.learning.granularity import StepSizeController
from driftd.learning.learner import OnlineLearner, make_optimizer
from driftd.learning.lr import make_lr_policy
from driftd.learning.models import build_model
from driftd.ports import Clock
from driftd.pruning.stage import PruningStage, make_pruning_stage
from driftd.pruning.stored_heads import StoredHeadsFollower
from driftd.settings.root import LearnerSettings, Settings

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


def pruning_builder(
    settings: Settings, clock: Clock
) -> Callable[[OnlineLearner, Adaptation | None], PruningStage | None]:
    """A function building the pruning stage of a new learner (stored heads follow its shape)."""

    def build(learner: OnlineLearner, adaptation: Adaptation | None) -> PruningStage | None:
        stored = adaptation.domain_store if adaptation is not None else None
        follower = StoredHeadsFollower(stored) if stored is not None else None
        return make_pruning_stage(
            settings.pruning, learner, task=settings.model.task, seed=settings.model.seed,
            clock=clock, on_reshape=follower, on_settle=follower.settle if follower else None,
        )  # fmt: skip

    return build


def fixed_micro_batch(settings: LearnerSettings) -> int | None:
    """The micro-batch size ``settings`` fixes, or the start size when it is ``auto``."""
    if settings.micro_batch == "auto":
        return min(32, settings.max_micro_batch)
    return settings.micro_batch


def step_size_controller(settings: LearnerSettings) -> StepSizeController | None:
    """The controller that chooses the micro-batch size, when ``learner.micro_batch=auto``."""
    if settings.micro_batch != "auto":
        return None
    coarsest = min(settings.max_micro_batch, settings.batch_size)  # a step never spans polls
    return StepSizeController(
        min_size=min(settings.min_micro_batch, coarsest),
        max_size=coarsest,
        start=fixed_micro_batch(settings) or 1,
    )
