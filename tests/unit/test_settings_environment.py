"""Misspelt ``DRIFTD_*`` variables get the nearest setting; bad TOML names its file."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from driftd.settings.environment import setting_variables, stray_variables
from driftd.settings.root import ConfigurationError, Settings, load_settings


def test_single_underscore_typos_get_the_nearest_setting() -> None:
    environ = {
        "DRIFTD_SNAPSHOTS_DIR": "./snap",
        "DRIFTD_KAFKA_TOPICS": "events",
        "driftd_model_n_classes": "3",
        "DRIFTD_WHATEVER": "1",
    }
    assert stray_variables(environ, Settings) == [
        ("DRIFTD_KAFKA_TOPICS", "DRIFTD_KAFKA__TOPICS"),
        ("DRIFTD_SNAPSHOTS_DIR", "DRIFTD_SNAPSHOTS__DIR"),
        ("DRIFTD_WHATEVER", None),
        ("driftd_model_n_classes", "DRIFTD_MODEL__N_CLASSES"),
    ]


def test_real_settings_sections_and_tool_variables_are_not_strays() -> None:
    environ = {
        "DRIFTD_SNAPSHOTS__DIR": "./snap",  # a setting (nested names are checked elsewhere)
        "DRIFTD_LOG": '{"level": "DEBUG"}',  # a whole section, as JSON
        "DRIFTD_CONFIG": "driftd.toml",
        "DRIFTD_VENV": "/tmp/venv",
        "PATH": "/usr/bin",
    }
    assert stray_variables(environ, Settings) == []
    assert "DRIFTD_KAFKA__BOOTSTRAP_SERVERS" in setting_variables(Settings)


def test_load_settings_warns_and_keeps_the_default(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("DRIFTD_SNAPSHOTS_DIR", "/elsewhere")
    with caplog.at_level(logging.WARNING, logger="driftd.settings"):
        settings = load_settings()
    assert str(settings.snapshots.dir) != "/elsewhere"  # ignored, as the warning says
    (record,) = [r for r in caplog.records if r.name == "driftd.settings"]
    assert record.getMessage().startswith(
        "DRIFTD_SNAPSHOTS_DIR is not a driftd setting and is ignored; "
        "did you mean DRIFTD_SNAPSHOTS__DIR?"
    )


def test_a_toml_syntax_error_names_the_file_and_the_line(tmp_path: Path) -> None:
    config = tmp_path / "driftd.toml"
    config.write_text("[kafka]\ntopics = [events]\n")
    with pytest.raises(ConfigurationError) as raised:
        load_settings(config)
    message = str(raised.value)
    assert message.startswith(f"invalid configuration: {config}: not valid TOML: ")
    assert "line 2" in message
