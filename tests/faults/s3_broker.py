"""Fault-test helpers: a Tansu broker whose data lives in a local S3 server (so it survives a
kill and restart), `driftd` subprocesses against it, and /proc readings of a process tree.

Fixtures here are imported by the fault test modules that use them (not by conftest.py).
"""

from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from driftd.adapters.embedded_broker import EmbeddedBroker
from tests.conftest import require_tansu
from tests.integration.conftest import driftd_processes
from tests.integration.driftd_process import DriftdProcess

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Heavier variants (longer outage, more examples, an hours-long soak): DRIFTD_FAULTS_HEAVY=1.
HEAVY = os.environ.get("DRIFTD_FAULTS_HEAVY", "") not in ("", "0", "false")


@pytest.fixture
def s3_broker(s3_options: dict[str, Any]) -> Iterator[EmbeddedBroker]:
    """A private Tansu broker storing in a fresh bucket of the session's moto S3 server."""
    require_tansu()
    import boto3

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto logs every S3 request

    endpoint = s3_options["client_kwargs"]["endpoint_url"]
    bucket = f"tansu-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    ).create_bucket(Bucket=bucket)
    broker = EmbeddedBroker(
        storage_engine=f"s3://{bucket}/",
        env={
            "AWS_ENDPOINT": endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
        },
    )
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def driftd_on(tmp_path: Path) -> Iterator[Callable[..., DriftdProcess]]:
    """Factory: ``driftd_on(broker, "run", {"DRIFTD_...": ...})``; all closed at teardown."""
    with driftd_processes(tmp_path) as start:
        yield lambda broker, command, env: start(broker.bootstrap_servers, command, env)


def readyz(port: int) -> int:
    """The HTTP status of ``/readyz`` (200 ready, 503 not)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def newest_manifest(snapshots: Path) -> dict[str, Any] | None:
    """The manifest of the newest complete snapshot (published or not), or None."""
    try:
        names = [p.name for p in snapshots.iterdir() if p.name.isdigit()]
        if not names:
            return None
        newest = max(names, key=int)
        manifest = json.loads((snapshots / newest / "manifest.json").read_text())
    except (FileNotFoundError, ValueError):
        return None  # being written or pruned right now
    assert isinstance(manifest, dict)
    return manifest


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> float:
    """Poll ``condition`` until true; the seconds it took. Fails after ``timeout``."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"timed out after {timeout} s: {what}"
        time.sleep(0.1)
    return time.monotonic() - started


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as stat:
        text = stat.read()
    return text[text.rindex(")") + 2 :].split()  # the command name may hold spaces


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants alive now."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(_stat_fields(int(entry))[1])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += children.get(current, [])
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds consumed so far by these processes (all their threads)."""
    total = 0
    for pid in pids:
        try:
            fields = _stat_fields(pid)
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    return total / CLOCK_TICKS


def rss_kib(pid: int) -> int:
    """Resident set size (VmRSS) in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def open_fds(pid: int) -> int:
    """Open file descriptors of ``pid``."""
    return len(os.listdir(f"/proc/{pid}/fd"))
