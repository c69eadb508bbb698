"""The `driftd` command line: config printing, fail-fast validation, secrets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from driftd.cli import main


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("DRIFTD_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_config_prints_the_effective_settings_without_secrets(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DRIFTD_KAFKA__TOPICS", "a,b")
    monkeypatch.setenv("DRIFTD_KAFKA__SASL_PLAIN_PASSWORD", "hunter2")
    monkeypatch.setenv("DRIFTD_MODEL__N_CLASSES", "4")
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out
    printed = json.loads(out)
    assert printed["kafka"]["topics"] == ["a", "b"]
    assert printed["kafka"]["sasl_plain_password"] == "**********"
    assert printed["model"]["n_classes"] == 4


def test_config_reads_a_toml_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "driftd.toml"
    config.write_text('[learner]\nbatch_size = 17\n[kafka]\ntopics = ["t"]\n')
    assert main(["config", "--config", str(config)]) == 0
    assert json.loads(capsys.readouterr().out)["learner"]["batch_size"] == 17


@pytest.mark.parametrize("command", ["config", "run"])
def test_invalid_settings_exit_2_naming_the_field(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DRIFTD_SNAPSHOTS__KEEP", "0")
    assert main([command]) == 2
    err = capsys.readouterr().err
    assert "snapshots.keep" in err
    assert "greater than or equal to 1" in err


def test_missing_config_file_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--config", "nowhere.toml"]) == 2
    assert "nowhere.toml" in capsys.readouterr().err


def test_config_masks_object_store_credentials(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(
        "DRIFTD_SNAPSHOTS__STORAGE_OPTIONS",
        '{"key": "AKIA123", "secret": "s3cr3t", "client_kwargs": {"endpoint_url": "http://x"}}',
    )
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "AKIA123" not in out
    assert "s3cr3t" not in out
    options = json.loads(out)["snapshots"]["storage_options"]
    assert options["client_kwargs"] == {"endpoint_url": "http://x"}
