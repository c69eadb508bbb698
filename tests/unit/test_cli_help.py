"""`driftd <command> --help`: what each command does, its defaults, where settings come from."""

from __future__ import annotations

import re

import pytest

from driftd.cli import main


def help_text(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize(
    ("command", "says"),
    [
        ("demo", "Kafka-compatible broker"),
        ("report", "self-contained HTML page"),
        ("bench", "events/s from a real broker"),
    ],
)
def test_every_command_has_a_description(
    capsys: pytest.CaptureFixture[str], command: str, says: str
) -> None:
    text = help_text(capsys, command)
    usage, description = text.split("\n\n")[:2]
    assert usage.startswith(f"usage: driftd {command}")
    assert says in " ".join(description.split())


def test_defaults_are_shown(capsys: pytest.CaptureFixture[str]) -> None:
    demo = " ".join(help_text(capsys, "demo").split())
    assert "(default: 30000)" in demo
    assert "(default: ./driftd-demo)" in demo
    assert re.search(r"--seconds SECONDS [^-]+\(default: [\d.]+\)", demo)
    bench = " ".join(help_text(capsys, "bench").split())
    assert "(default: 256)" in bench
    assert "(default: None)" not in bench  # no default, nothing said
    assert "(default: False)" not in bench


@pytest.mark.parametrize("command", ["run", "infer", "config"])
def test_settings_commands_point_at_the_environment_and_driftd_config(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    text = help_text(capsys, command)
    assert "DRIFTD_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:9092" in text
    assert "double underscore" in text
    assert "`driftd config`" in text
    assert "--config CONFIG" in text
