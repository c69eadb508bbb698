"""`driftd run` on the real broker over a drifting stream, its JSON log kept in a file, then
`driftd report` on that log and the snapshot directory, both as subprocesses.

The page must show exactly the drifts (concept drifts apart from input alarms), adaptations,
pruning events and snapshots the log recorded, the accuracy points of every snapshot and every
``progress`` line, and the run's counters in its summary table.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from html import unescape
from pathlib import Path
from typing import Any

import orjson
import pytest

from driftd.adapters.embedded_broker import EmbeddedBroker
from driftd.tools.streams import DriftingStream
from tests.integration.driftd_process import driftd_env, produce
from tests.unit.test_report import parse

pytestmark = pytest.mark.integration

PHASE = 3_000  # events per concept: the switch between them is detected (adaptation e2e)


def _learned(snapshots: Path) -> int:
    """Events learned according to the newest readable manifest (0 before the first)."""
    learned = 0
    for path in snapshots.glob("*/manifest.json"):
        try:
            learned = max(learned, int(json.loads(path.read_text())["events_learned"]))
        except (OSError, ValueError, KeyError):  # being written or pruned meanwhile
            continue
    return learned


def _run_until_learned(
    broker: EmbeddedBroker, topic: str, env: dict[str, str], log: Path, snapshots: Path
) -> None:
    """Run the daemon with stderr into ``log`` until the stream is learned, then SIGTERM."""
    stream = DriftingStream(n_events=2 * PHASE, change_every=PHASE, n_concepts=2, seed=3)
    payloads = [orjson.dumps({**event, "ts": time.time()}) for event in stream.events()]
    with log.open("wb") as stderr:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "driftd.cli", "run"],
            cwd=log.parent,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            produce(broker.bootstrap_servers, topic, payloads)
            deadline = time.monotonic() + 120
            while _learned(snapshots) < len(payloads):
                assert daemon.poll() is None, log.read_text()[-2000:]
                assert time.monotonic() < deadline, f"learned only {_learned(snapshots)}"
                time.sleep(0.2)
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=30) == 0
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()


def test_report_of_a_real_run_shows_every_logged_drift_and_snapshot(
    broker: EmbeddedBroker, unique_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic, snapshots, log = (
        unique_topic(partitions=1),
        tmp_path / "snapshots",
        tmp_path / "run.jsonl",
    )
    env = driftd_env(
        broker.bootstrap_servers,
        DRIFTD_KAFKA__TOPICS=topic,
        DRIFTD_KAFKA__GROUP_ID=f"driftd-{uuid.uuid4().hex[:8]}",
        DRIFTD_MODEL__N_CLASSES="3",
        DRIFTD_MODEL__SEED="3",
        DRIFTD_LEARNER__BATCH_SIZE="32",
        DRIFTD_LEARNER__METRICS_WINDOW="500",
        DRIFTD_SNAPSHOTS__DIR=str(snapshots),
        DRIFTD_SNAPSHOTS__EVERY_STEPS="16",
        DRIFTD_SNAPSHOTS__EVERY_SECONDS="1",
        DRIFTD_SNAPSHOTS__KEEP="1000",
        DRIFTD_LOG__PROGRESS_EVERY_EVENTS="320",  # a point every 10 steps, between snapshots
        DRIFTD_LOG__PROGRESS_EVERY_SECONDS="0",
        DRIFTD_PRUNING__ENABLED="true",  # a few pruning events, to draw their markers
        DRIFTD_PRUNING__EVERY_STEPS="40",
        DRIFTD_PRUNING__N_EVENTS="4",
        DRIFTD_PRUNING__BASELINE_EVENTS="256",
        DRIFTD_PRUNING__VERIFY_EVENTS="256",
    )
    _run_until_learned(broker, topic, env, log, snapshots)
    entries = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]

    def logged(event: str) -> list[dict[str, Any]]:
        return [entry for entry in entries if entry.get("event") == event]

    out = tmp_path / "report.html"
    report = subprocess.run(
        [sys.executable, "-m", "driftd.cli", "report", "--log", str(log),
         "--snapshots", str(snapshots), "--out", str(out)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr
    html = out.read_text()
    page = parse(html)

    def markers(event: str) -> list[dict[str, str]]:
        return page.find("g", **{"class": "marker", "data-event": event})

    drifts = logged("drift_detected")
    assert drifts, "the concept switch was not detected: nothing to draw"
    assert len(markers("drift_detected")) == len(drifts)
    assert sorted(int(m["data-step"]) for m in markers("drift_detected")) == sorted(
        entry["step"] for entry in drifts
    )
    assert len(markers("adapted")) == len(logged("adapted"))
    assert logged("pruned"), "no pruning event: nothing to draw"
    assert len(markers("pruned")) == len(logged("pruned"))
    assert len(markers("prune_verdict")) == len(logged("prune_verdict"))
    versions = {entry["version"] for entry in logged("snapshot_written")}
    manifests = [json.loads(path.read_text()) for path in snapshots.glob("*/manifest.json")]
    assert {m["version"] for m in manifests} == versions  # keep=1000: none deleted
    assert len(markers("snapshot")) == len(versions)

    # One accuracy point per snapshot step and per progress line (log lines and manifests agree
    # on the step); the progress lines fall between the snapshots.
    (accuracy,) = page.find("polyline", data_series="accuracy")
    steps = {m["step"] for m in manifests if m["metrics"]["prequential_accuracy"] is not None}
    progress = {entry["step"] for entry in logged("progress") if entry["accuracy"] is not None}
    assert len(progress) >= 2 * PHASE // 320 - 1
    assert len(progress - steps) > len(steps) // 2
    assert len(accuracy["points"].split()) == len(steps | progress)

    rows = dict(re.findall(r"<tr><th>(.*?)</th><td>(.*?)</td></tr>", html))
    assert unescape(rows["events learned"]) == f"{2 * PHASE:,}"
    assert unescape(rows["events consumed"]) == f"{2 * PHASE:,}"
    kinds = [entry for entry in drifts if entry["kind"] == "drift"]
    inputs = [entry for entry in kinds if entry["signal"].startswith("input_")]
    concept = len(kinds) - len(inputs)
    assert rows["concept drifts"].startswith(f"{concept:,} ")
    assert rows["input alarms"].startswith(f"{len(inputs):,} ")
    newest = max(manifests, key=lambda manifest: manifest["step"])
    final = newest["metrics"]["prequential_accuracy"]
    assert rows["final prequential accuracy"] == f"{final:.4f} (step {newest['step']:,})"
    assert f" {concept} concept drifts, {len(inputs)} input alarms," in report.stdout
