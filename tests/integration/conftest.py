"""Fixtures for tests that run `driftd` as a subprocess."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from driftd.adapters.embedded_broker import EmbeddedBroker
from tests.integration.driftd_process import DriftdProcess, driftd_env


@pytest.fixture
def start_driftd(broker: EmbeddedBroker, tmp_path: Path) -> Iterator[Callable[..., DriftdProcess]]:
    """Factory: ``start_driftd("run", {"DRIFTD_...": ...})``; every process is closed after."""
    started: list[DriftdProcess] = []

    def start(command: str, env: dict[str, str]) -> DriftdProcess:
        started.append(
            DriftdProcess(command, driftd_env(broker.bootstrap_servers, **env), tmp_path)
        )
        return started[-1]

    yield start
    for process in started:
        process.close()
