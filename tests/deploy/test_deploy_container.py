"""The container image's install and start commands, run here without Docker.

deploy/Dockerfile does nothing but RUN deploy/install.sh and start deploy/entrypoint.sh, so
running those two scripts tests what the image does: install.sh in --dry-run mode (the real
install downloads torch: opt in with DRIFTD_TEST_INSTALL=1), entrypoint.sh for real against
this checkout's `driftd` and a live health endpoint. The Dockerfile itself is checked for
the wiring: non-root user, the snapshot volume, the metrics port, the health check.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from driftd.adapters.http_endpoint import MetricsServer
from driftd.settings.root import Settings
from tests.deploy.deploy_files import DEPLOY, settings_env_problems

ROOT = DEPLOY.parent
DOCKERFILE = (DEPLOY / "Dockerfile").read_text()
INSTALL = DEPLOY / "install.sh"
ENTRYPOINT = DEPLOY / "entrypoint.sh"
VENV_BIN = str(Path(sys.executable).parent)


def instructions(name: str) -> list[str]:
    """The arguments of every Dockerfile instruction ``name`` (continuation lines joined)."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    return [
        line.split(None, 1)[1].strip()
        for line in joined.splitlines()
        if line.strip() and line.split(None, 1)[0].upper() == name
    ]


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in instructions("ENV"):
        for pair in shlex.split(args):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


def clean_env(**overrides: str) -> dict[str, str]:
    """This environment without DRIFTD_* (and with this checkout's driftd on PATH)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTD_")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["DRIFTD_PYTHON"] = sys.executable
    env.update(overrides)
    return env


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


# --- Dockerfile wiring ---------------------------------------------------------------------


def test_the_image_installs_with_install_sh_and_starts_with_entrypoint_sh() -> None:
    assert any("deploy/install.sh /opt/driftd" in run for run in instructions("RUN"))
    assert "COPY deploy/entrypoint.sh /usr/local/bin/driftd-entrypoint" in DOCKERFILE
    assert instructions("ENTRYPOINT") == ['["driftd-entrypoint"]']
    assert instructions("CMD") == ['["run"]']
    (healthcheck,) = instructions("HEALTHCHECK")
    assert healthcheck.endswith('CMD ["driftd-entrypoint", "healthcheck", "/healthz"]')


def test_every_copied_path_exists_and_is_in_the_build_context() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") - 1].startswith("#"), "everything is excluded first"
    sent = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = set()
    for args in instructions("COPY"):
        if args.startswith("--from="):
            continue
        *sources, _ = args.split()
        for source in sources:
            assert (ROOT / source).exists(), source
            copied.add(source.rstrip("/"))
    assert copied == sent, "the context sends exactly what the image copies"


def test_cpu_torch_by_default_and_a_build_arg_for_cuda() -> None:
    args = dict(a.partition("=")[::2] for a in instructions("ARG"))
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    assert "DRIFTD_EXTRAS" in args
    assert "whl/cu" in DOCKERFILE, "the CUDA build is documented"


def test_non_root_user_volume_port_and_metrics_on_all_interfaces() -> None:
    (user,) = instructions("USER")
    assert user.split(":")[0] not in ("0", "root")
    env = dockerfile_env()
    assert env["DRIFTD_METRICS__HOST"] == "0.0.0.0"
    assert Settings().metrics.host == "127.0.0.1", "outside a container: loopback"
    assert instructions("VOLUME") == [f'["{env["DRIFTD_SNAPSHOTS__DIR"]}"]']
    assert instructions("EXPOSE") == [env["DRIFTD_METRICS__PORT"]]
    assert int(env["DRIFTD_METRICS__PORT"]) == Settings().metrics.port
    assert settings_env_problems([k for k in env if k.startswith("DRIFTD_")]) == []


# --- install.sh ------------------------------------------------------------------------------


def dry_run(prefix: Path, **env: str) -> list[list[str]]:
    result = run(
        ["bash", str(INSTALL), "--dry-run", str(prefix)],
        clean_env(PYTHON=sys.executable, **env),
        ROOT,
    )
    assert result.returncode == 0, result.stderr
    return [shlex.split(line[2:]) for line in result.stdout.splitlines() if line.startswith("+ ")]


def test_install_puts_cpu_torch_first_at_the_pinned_version(tmp_path: Path) -> None:
    constraints = (ROOT / "constraints.txt").read_text().splitlines()
    (pin,) = [line for line in constraints if line.startswith("torch==")]
    prefix = tmp_path / "venv"
    steps = dry_run(prefix)
    pip = str(prefix / "bin" / "pip")
    assert steps == [
        [sys.executable, "-m", "venv", str(prefix)],
        [pip, "install", "--no-cache-dir", "--upgrade", "pip"],
        [pip, "install", "--no-cache-dir", "--index-url",
         "https://download.pytorch.org/whl/cpu", pin],
        [pip, "install", "--no-cache-dir", "-c", str(ROOT / "constraints.txt"), str(ROOT)],
        [str(prefix / "bin" / "driftd"), "--version"],
        ["env", "-u", "DRIFTD_CONFIG", str(prefix / "bin" / "driftd"), "config"],
    ]  # fmt: skip
    assert not prefix.exists(), "a dry run changes nothing"


def test_install_takes_the_cuda_index_and_extras(tmp_path: Path) -> None:
    cuda = "https://download.pytorch.org/whl/cu128"
    steps = dry_run(tmp_path / "venv", TORCH_INDEX_URL=cuda, DRIFTD_EXTRAS="s3")
    assert steps[2][4] == cuda
    assert steps[3][-3:] == ["-c", str(ROOT / "constraints.txt"), f"{ROOT}[s3]"]


def test_install_refuses_a_tree_without_pyproject(tmp_path: Path) -> None:
    result = run(["bash", str(INSTALL), "--dry-run", str(tmp_path / "v"), str(tmp_path)],
                 clean_env(PYTHON=sys.executable), ROOT)  # fmt: skip
    assert result.returncode == 2
    assert "no pyproject.toml" in result.stderr


def test_constraints_pin_every_dependency_within_the_declared_ranges() -> None:
    # The package declares ranges (it lives in other people's environments); constraints.txt
    # pins one tested version of each, inside those ranges.
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [Requirement(text) for text in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        declared += [Requirement(text) for text in extra]
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    for requirement in declared:
        version = pins[canonicalize_name(requirement.name)]
        assert requirement.specifier.contains(version, prereleases=True), (requirement, version)
    (torch,) = [r for r in declared if r.name == "torch"]
    assert str(torch.specifier) != f"=={pins['torch']}", "a range, not the tested pin"
    assert "crc32c" in pins, "extras' own requirements are pinned too"


@pytest.mark.skipif(
    os.environ.get("DRIFTD_TEST_INSTALL") != "1",
    reason="downloads and installs torch (~1 GB, a minute or more): DRIFTD_TEST_INSTALL=1",
)
def test_install_for_real_gives_a_working_driftd(tmp_path: Path) -> None:
    # TORCH_INDEX_URL may point at any index (or pip's configured find-links) that has torch.
    result = run(["bash", str(INSTALL), str(tmp_path / "venv")],
                 clean_env(PYTHON=sys.executable), ROOT)  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "driftd 0." in result.stdout
    config = json.loads(result.stdout[result.stdout.index("{") :])
    assert config["metrics"]["host"] == "127.0.0.1"


# --- entrypoint.sh ---------------------------------------------------------------------------


def test_entrypoint_config_prints_the_effective_configuration(tmp_path: Path) -> None:
    result = run(
        ["sh", str(ENTRYPOINT), "config"], clean_env(DRIFTD_MODEL__N_CLASSES="5"), tmp_path
    )
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    assert config["model"]["n_classes"] == 5
    assert config["metrics"]["host"] == "127.0.0.1", "outside a container: loopback"
    image_env = {k: v for k, v in dockerfile_env().items() if k.startswith("DRIFTD_")}
    inside = run(["sh", str(ENTRYPOINT), "config"], clean_env(**image_env), tmp_path)
    assert inside.returncode == 0, inside.stderr
    image_config = json.loads(inside.stdout)
    assert image_config["metrics"]["host"] == "0.0.0.0"
    assert image_config["snapshots"]["dir"] == "/var/lib/driftd/snapshots"
    assert image_config["log"]["json_lines"] is True


def test_entrypoint_passes_a_bad_configuration_through_as_exit_2(tmp_path: Path) -> None:
    result = run(
        ["sh", str(ENTRYPOINT), "config"], clean_env(DRIFTD_LEARNER__BATCH_SIZE="abc"), tmp_path
    )
    assert result.returncode == 2
    assert "learner.batch_size" in result.stderr


class Probes:
    healthy = (True, "ok")
    ready = (False, "no partitions assigned")

    def health(self) -> tuple[bool, str]:
        return self.healthy

    def readiness(self) -> tuple[bool, str]:
        return self.ready


@pytest.fixture
def endpoint() -> Iterator[tuple[int, Probes]]:
    probes = Probes()
    server = MetricsServer(
        CollectorRegistry(), "127.0.0.1", 0, health=probes.health, readiness=probes.readiness
    )
    port = server.start()
    yield port, probes
    server.stop()


def healthcheck(port: int, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = clean_env(DRIFTD_METRICS__PORT=str(port))
    return run(["sh", str(ENTRYPOINT), "healthcheck", *args], env, cwd)


@pytest.mark.integration
def test_entrypoint_healthcheck_follows_the_endpoint(endpoint, tmp_path: Path) -> None:
    port, probes = endpoint
    healthy = healthcheck(port, cwd=tmp_path)
    assert (healthy.returncode, healthy.stdout.strip()) == (0, "ok")
    not_ready = healthcheck(port, "/readyz", cwd=tmp_path)
    assert not_ready.returncode == 1
    assert "503" in not_ready.stdout
    probes.healthy = (False, "loop has not turned for 90 s")
    assert healthcheck(port, cwd=tmp_path).returncode == 1


@pytest.mark.integration
def test_entrypoint_healthcheck_fails_when_nothing_listens(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago, now closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = healthcheck(port, cwd=tmp_path)
    assert result.returncode == 1
    assert "/healthz failed" in result.stdout
