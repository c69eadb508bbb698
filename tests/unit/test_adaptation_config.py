"""The adaptation's frozen config mirrors the settings it is derived from."""

from __future__ import annotations

import dataclasses
from typing import get_type_hints

import pytest
import torch

from driftd.adaptation.config import AdaptationConfig
from driftd.learning.learner import OnlineLearner, make_optimizer
from driftd.learning.lr import ConstantLR
from driftd.learning.models import build_model
from driftd.settings.root import AdaptationSettings, load_settings
from driftd.wiring.adaptation import make_adaptation


def test_every_field_is_a_setting_of_the_same_name_and_type_without_a_default() -> None:
    settings = AdaptationSettings.model_fields
    hints = get_type_hints(AdaptationConfig)
    for field in dataclasses.fields(AdaptationConfig):
        assert field.name in settings, field.name
        assert hints[field.name] == settings[field.name].annotation, field.name
        assert field.default is dataclasses.MISSING, field.name
        assert field.default_factory is dataclasses.MISSING, field.name


def test_make_adaptation_passes_the_settings_frozen() -> None:
    settings = load_settings(
        model={"n_classes": 2, "n_features": 3, "seed": 1},
        adaptation={"max_heads": 3, "new_head": "fresh", "on_covariate_drift": "lr_boost"},
    )
    model = build_model(
        {"kind": "mlp", "task": "classification", "n_features": 3, "n_outputs": 2,
         "activation": "relu", "dropout": 0.0, "norm": "none", "head_hidden": [], "hidden": [4]},
        torch.Generator().manual_seed(0),
    )  # fmt: skip
    learner = OnlineLearner(
        model=model,
        optimizer=make_optimizer("sgd", model, lr=0.1, momentum=0.0, weight_decay=0.0),
        lr_policy=ConstantLR(base_lr=0.1, min_lr=1e-6, max_lr=1.0),
        task="classification",
        loss="cross_entropy",
        metrics_window=100,
    )
    adaptation = make_adaptation(settings, learner)
    assert adaptation is not None
    config = adaptation.config
    assert (config.max_heads, config.new_head, config.on_covariate_drift) == (
        3,
        "fresh",
        "lr_boost",
    )
    assert config.score_events == settings.adaptation.score_events
    assert adaptation.switch.config is config
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.max_heads = 4  # type: ignore[misc]
