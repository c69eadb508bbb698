"""``driftd demo`` as a new user runs it, on a quiet or a busy machine."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_tansu

pytestmark = pytest.mark.integration

BURN_S = 600  # a burner never outlives a hung test by much


@pytest.fixture
def busy_cpus() -> Iterator[int]:
    """One spinning process per core (load ≈ 2 more), each bounded in time, killed at teardown."""
    cores = os.cpu_count() or 2
    burn = f"import time\nend = time.monotonic() + {BURN_S}\nwhile time.monotonic() < end: pass"
    burners = [subprocess.Popen([sys.executable, "-c", burn]) for _ in range(cores)]
    try:
        yield cores
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


def _demo(tmp_path: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTD_")}
    return subprocess.run(
        [sys.executable, "-m", "driftd.cli", "demo", "--dir", str(tmp_path / "demo"), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_demo_learns_every_event_with_both_cores_busy(busy_cpus: int, tmp_path: Path) -> None:
    require_tansu()
    demo = _demo(tmp_path, "--events", "3000", "--seconds", "300", timeout=420)
    assert demo.returncode == 0, demo.stderr[-2000:]
    done = re.search(r"^done: ([\d,]+) events learned", demo.stdout, re.MULTILINE)
    assert done is not None, demo.stdout[-2000:]
    assert int(done[1].replace(",", "")) == 3000  # all of them: the run ends at the last record
    assert "invalid records: 3 " in demo.stdout  # one bad record per 1000 events, dead-lettered
    # The report command it prints runs as printed (no `driftd` on PATH needed).
    printed = re.search(r"^  \w+\s*: (.+ report --log .+)$", demo.stdout, re.MULTILINE)
    assert printed is not None, demo.stdout[-2000:]
    assert printed[1].startswith(f"{shlex.quote(sys.executable)} -m driftd.cli report ")
    (tmp_path / "demo" / "report.html").unlink(missing_ok=True)
    report = subprocess.run(
        shlex.split(printed[1]), cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert report.returncode == 0, report.stderr[-2000:]
    assert (tmp_path / "demo" / "report.html").stat().st_size > 0


def test_a_demo_that_learned_nothing_fails_and_says_why(tmp_path: Path) -> None:
    require_tansu()
    # A bound far shorter than any group join: nothing can arrive in time.
    demo = _demo(tmp_path, "--events", "1000", "--seconds", "0.01", timeout=180)
    assert demo.returncode == 1
    assert "learned nothing: no record arrived within 0.01 s (--seconds)" in demo.stderr
    assert "done:" not in demo.stdout
