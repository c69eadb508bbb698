"""Settings in, drift monitor and adaptation policy out (``drift`` and ``adaptation``)."""

from __future__ import annotations

from dataclasses import fields

import torch

from driftd.adaptation.config import AdaptationConfig
from driftd.adaptation.detectors import Params
from driftd.adaptation.drift import DriftMonitor, Signal, SignalMonitor
from driftd.adaptation.policy import Adaptation
from driftd.learning.learner import OnlineLearner
from driftd.settings.adaptation import DriftSettings
from driftd.settings.root import Settings


def make_monitor(settings: DriftSettings, *, task: str) -> DriftMonitor | None:
    """The monitor ``settings`` describe (None when drift detection is disabled).

    Regression has no 0/1 error: where the default detector watches it (one the user did not
    choose), ADWIN watches the per-event loss instead.

    Raises:
        ValueError: The error signal was asked for on a regression task.
    """
    if not settings.enabled:
        return None
    detector, signal = settings.detector, settings.concept_signal
    if signal == "error" and task != "classification":
        if {"detector", "signal"} & settings.model_fields_set:
            raise ValueError(f"drift.detector={detector} / signal=error needs classification")
        detector, signal = "adwin", "loss"
    params = dict(settings.params)
    if detector == "kswin":
        params.setdefault("seed", 0)  # its window sampling must replay identically
    concept = SignalMonitor(
        detector=detector, params=params, signal=signal,
        every=settings.every, batch_mean=settings.batch_mean,
    )  # fmt: skip
    names: tuple[Signal, ...] = ("input_mean", "input_rms") if settings.covariate else ()
    per_batch = settings.covariate_batch_mean
    adwin: Params = {"delta": settings.covariate_delta, "clock": 1 if per_batch else 32}
    covariate = [
        SignalMonitor(detector="adwin", params=adwin, signal=name, batch_mean=per_batch)
        for name in names
    ]
    return DriftMonitor(
        concept=concept, concept_signal=signal, covariate=covariate,
        confirm_inputs=settings.covariate_confirm,
    )  # fmt: skip


def make_adaptation(settings: Settings, learner: OnlineLearner) -> Adaptation | None:
    """The monitor and policy ``settings`` describe for ``learner`` (None: both disabled).

    Its generator is seeded from ``model.seed`` (offset by one, apart from the model's own).

    Raises:
        ValueError: The drift settings do not fit the task.
    """
    monitor = make_monitor(settings.drift, task=settings.model.task)
    if monitor is None and not settings.adaptation.enabled:
        return None
    generator = torch.Generator().manual_seed(settings.model.seed + 1)
    config = AdaptationConfig(
        **{
            field.name: getattr(settings.adaptation, field.name)
            for field in fields(AdaptationConfig)
        }
    )
    return Adaptation(
        learner=learner, config=config, monitor=monitor, generator=generator,
        base_lr=settings.learner.lr,
    )  # fmt: skip
