"""README.md's first-hour commands, run as written in a fresh clone of this repository.

The clone gets its own ``.venv`` with driftd installed from the clone (no download: the
dependencies come from the test environment through a path entry), then the README's commands
run in bash from the clone: the demo and the report command it prints, ``driftd config`` after
``source .venv/bin/activate`` (its output compared with the README's console block), and
``driftd broker``. What is committed is what is tested.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import require_tansu

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def _bash(script: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRIFTD_", "VIRTUAL_ENV"))}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"  # no venv on PATH: a new user's shell
    return subprocess.run(
        ["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh clone with driftd installed into its ``.venv`` (README command 1, offline)."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    where = tmp_path_factory.mktemp("readme") / "driftd"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(where)], check=True, timeout=120)
    # Without its own pip and setuptools (3.11 bundles a setuptools too old for this project):
    # the test environment's, through the path entry below.
    venv = [sys.executable, "-m", "venv", "--without-pip", str(where / ".venv")]
    subprocess.run(venv, check=True, timeout=120)
    venv_site = next((where / ".venv" / "lib").glob("python3*/site-packages"))
    # The test environment's packages (torch & co.) without its editable driftd: a plain path
    # entry, so that directory's own .pth files (the editable finder) are not processed.
    (venv_site / "test-environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = _bash(
        ".venv/bin/python -m pip install -q --no-deps --no-build-isolation --no-index .",
        where,
        300,
    )
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]
    return where


def test_the_demo_runs_and_the_report_command_it_prints_works_as_printed(clone: Path) -> None:
    require_tansu()
    demo = _bash(".venv/bin/driftd demo --events 1000 --seconds 300", clone, timeout=420)
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    printed = re.search(r"^  \w+\s*: (.+ report --log .+)$", demo.stdout, re.MULTILINE)
    assert printed is not None, demo.stdout[-2000:]
    assert printed[1].startswith(".venv/bin/driftd report "), "the path it was started by"
    (clone / "driftd-demo" / "report.html").unlink()
    report = _bash(printed[1], clone, timeout=120)
    assert report.returncode == 0, report.stderr[-2000:]
    assert (clone / "driftd-demo" / "report.html").stat().st_size > 0


def test_driftd_config_after_activating_prints_what_the_readme_shows(clone: Path) -> None:
    block = re.search(r"```console\n\$ (.+? driftd config)\n(.+?)```", README.read_text(), re.S)
    assert block is not None
    command, shown = block[1], block[2]
    result = _bash(f"source .venv/bin/activate && {command}", clone, timeout=120)
    assert result.returncode == 2
    assert result.stdout + result.stderr == shown


def test_driftd_broker_after_activating_prints_a_run_command_on_path(clone: Path) -> None:
    require_tansu()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRIFTD_", "VIRTUAL_ENV"))}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    broker = subprocess.Popen(
        ["bash", "-c", "source .venv/bin/activate && exec driftd broker"],
        cwd=clone,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert broker.stdout is not None
        lines = []
        for line in broker.stdout:
            lines.append(line.rstrip("\n"))
            if "Ctrl-C stops it." in line:
                break
        assert "    driftd run" in lines, lines  # `driftd` is on PATH once activated
        assert any(line.startswith("    export DRIFTD_KAFKA__BOOTSTRAP_SERVERS=") for line in lines)
        broker.send_signal(signal.SIGTERM)
        assert broker.wait(timeout=30) == 0
    finally:
        if broker.poll() is None:
            broker.kill()
        broker.wait()
        if broker.stdout is not None:
            broker.stdout.close()
