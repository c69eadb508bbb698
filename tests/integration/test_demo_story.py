"""What ``driftd demo`` tells: concept drifts apart from input alarms, one log and report per run,
plain progress lines when its output is not a terminal."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from html import unescape
from pathlib import Path

import pytest

from tests.conftest import require_tansu

pytestmark = pytest.mark.integration


def count(out: str, label: str) -> int:
    """The number after ``label`` at the start of a summary line."""
    found = re.search(rf"^  {label}(\d+) ", out, re.MULTILINE)
    assert found is not None, out[-2000:]
    return int(found[1])


def test_a_demo_run_has_its_own_log_report_and_a_story_that_adds_up(tmp_path: Path) -> None:
    require_tansu()
    root = tmp_path / "demo"
    root.mkdir()
    # A previous run's leftovers: its log must not leak into this run's report.
    (root / "driftd.jsonl").write_text(json.dumps({"event": "start"}) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTD_")}
    demo = subprocess.run(
        [sys.executable, "-m", "driftd.cli", "demo", "--dir", str(root),
         "--events", "3000", "--seconds", "240"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=360, check=False,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    out = demo.stdout

    # Not a terminal: whole lines, never a carriage return, each under 200 columns.
    assert "\r" not in out
    progress = [line for line in out.splitlines() if line.startswith("  events ")]
    assert progress, out[-2000:]
    assert all(" | acc " in line and " | concept drifts " in line for line in progress)

    concept, inputs = count(out, "concept drifts: "), count(out, "input alarms  : ")

    entries = [json.loads(line) for line in (root / "driftd.jsonl").read_text().splitlines()]
    events = [entry.get("event") for entry in entries]
    assert events.count("start") == 1  # a fresh log: the stale start line is gone
    assert events.count("stopped") == 1
    assert events.count("progress") >= 3000 // 256 - 2  # one per 256 events learned
    drifts = [e for e in entries if e.get("event") == "drift_detected" and e["kind"] == "drift"]
    logged_inputs = sum(e["signal"].startswith("input_") for e in drifts)
    assert (concept, inputs) == (len(drifts) - logged_inputs, logged_inputs)

    html = (root / "report.html").read_text()
    rows = {
        unescape(k): unescape(v)
        for k, v in re.findall(r"<tr><th>(.*?)</th><td>(.*?)</td></tr>", html)
    }
    assert rows["runs (start lines)"] == "1"
    assert rows["events consumed"] == "3,003"  # and 3 malformed records
    assert rows["events learned"] == "3,000"
    assert rows["concept drifts"].startswith(f"{concept} ")
    assert rows["input alarms"].startswith(f"{inputs} ")
    assert f"report  : {(root / 'report.html').resolve()}" in out
