"""Fixtures for tests that run `driftd` as a subprocess."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from driftd.adapters.embedded_broker import EmbeddedBroker
from tests.integration.driftd_process import DriftdProcess, driftd_env


@contextmanager
def driftd_processes(cwd: Path) -> Iterator[Callable[[str, str, dict[str, str]], DriftdProcess]]:
    """``start(bootstrap, command, env)`` for `driftd` subprocesses, all closed on exit."""
    started: list[DriftdProcess] = []

    def start(bootstrap: str, command: str, env: dict[str, str]) -> DriftdProcess:
        started.append(DriftdProcess(command, driftd_env(bootstrap, **env), cwd))
        return started[-1]

    try:
        yield start
    finally:
        for process in started:
            process.close()


@pytest.fixture
def start_driftd(broker: EmbeddedBroker, tmp_path: Path) -> Iterator[Callable[..., DriftdProcess]]:
    """Factory: ``start_driftd("run", {"DRIFTD_...": ...})``; every process is closed after."""
    with driftd_processes(tmp_path) as start:
        yield lambda command, env: start(broker.bootstrap_servers, command, env)
