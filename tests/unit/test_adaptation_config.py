"""The adaptation's frozen config mirrors the settings it is derived from."""

from __future__ import annotations

import dataclasses
from typing import get_type_hints

import pytest

from driftd.adaptation.config import AdaptationConfig
from driftd.settings.root import AdaptationSettings, load_settings
from driftd.wiring.adaptation import make_adaptation
from tests.fakes import tiny_learner


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
    adaptation = make_adaptation(settings, tiny_learner())
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
