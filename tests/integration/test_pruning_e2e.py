"""`driftd run` with structured pruning on, as a subprocess on the real broker.

8,000 events of a stationary stream are produced with confluent-kafka. Checked through
``/metrics``, the JSON log and the snapshot manifests: pruning events are logged and counted by
outcome, the parameter count falls and the FLOPs with it, the snapshot describes the shrunk
architecture (an inference worker builds exactly it), the prequential accuracy holds, and a
restart resumes with the pruned model.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import torch

from driftd.adapters.embedded_broker import EmbeddedBroker
from driftd.adapters.hot_model import HotModel
from driftd.tools.streams import DriftingStream
from tests.integration.driftd_process import DriftdProcess, produce, scrape

pytestmark = pytest.mark.integration

EVENTS = 8_000
HELD = 0.95  # accuracy at the end (measured in-process: 0.99+)
DENSE_PARAMETERS = 10 * 64 + 64 + 64 * 64 + 64 + 64 * 3 + 3  # the default MLP on this stream


def _newest_manifest(snapshots: Path) -> dict[str, Any] | None:
    manifests = []
    for path in snapshots.glob("*/manifest.json"):
        try:
            manifests.append(json.loads(path.read_text()))
        except (OSError, ValueError):  # retention removed it meanwhile
            continue
    return max(manifests, key=lambda m: int(m["events_learned"]), default=None)


def _wait_for_learned(snapshots: Path, learned: int, timeout: float = 90.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    latest = None
    while time.monotonic() < deadline:
        latest = _newest_manifest(snapshots)
        if latest is not None and latest["events_learned"] >= learned:
            return latest
        time.sleep(0.2)
    raise AssertionError(f"snapshots never reached {learned} events learned: {latest}")


def test_structured_pruning_shrinks_the_served_model_and_accuracy_holds(
    broker: EmbeddedBroker,
    unique_topic: Callable[..., str],
    start_driftd: Callable[..., DriftdProcess],
    tmp_path: Path,
) -> None:
    topic, snapshots = unique_topic(partitions=2), tmp_path / "snapshots"
    stream = DriftingStream(n_events=EVENTS, change_every=EVENTS, seed=4)
    payloads = [orjson.dumps({**event, "ts": time.time()}) for event in stream.events()]
    env = {
        "DRIFTD_KAFKA__TOPICS": topic,
        "DRIFTD_KAFKA__GROUP_ID": f"driftd-{uuid.uuid4().hex[:8]}",
        "DRIFTD_MODEL__N_CLASSES": "3",
        "DRIFTD_LEARNER__BATCH_SIZE": "64",
        "DRIFTD_SNAPSHOTS__DIR": str(snapshots),
        "DRIFTD_SNAPSHOTS__EVERY_STEPS": "10",
        "DRIFTD_SNAPSHOTS__GATE_ENABLED": "false",
        "DRIFTD_PRUNING__ENABLED": "true",
        "DRIFTD_PRUNING__STRUCTURED": "true",
        "DRIFTD_PRUNING__EVERY_STEPS": "10",
        "DRIFTD_PRUNING__N_EVENTS": "3",
        "DRIFTD_PRUNING__BASELINE_EVENTS": "256",
        "DRIFTD_PRUNING__VERIFY_EVENTS": "256",
        "DRIFTD_PRUNING__INT8_EXPORT": "true",
    }
    daemon = start_driftd("run", env)
    port = daemon.port
    start = scrape(port)
    assert start["driftd_prune_total{outcome=kept}"] == 0

    produce(broker.bootstrap_servers, topic, payloads)
    final = _wait_for_learned(snapshots, EVENTS)
    after = scrape(port)

    outcomes = {
        outcome: after[f"driftd_prune_total{{outcome={outcome}}}"]
        for outcome in ("kept", "recovered", "rolled_back", "interrupted")
    }
    assert outcomes["kept"] + outcomes["recovered"] == 3, outcomes  # the whole schedule
    verdicts = [entry for entry in daemon.logs if entry.get("event") == "prune_verdict"]
    ended = [v["outcome"] for v in verdicts if v["outcome"] is not None]
    assert len(ended) == 3, verdicts
    assert set(ended) <= {"kept", "recovered"}, verdicts
    pruned = [entry for entry in daemon.logs if entry.get("event") == "pruned"]
    assert len(pruned) == 3, pruned
    assert final["model"]["hidden"] == [32, 32]
    assert final["parameters"] < DENSE_PARAMETERS * 0.5
    assert after["driftd_model_parameters"] == final["parameters"]
    assert 0 < after["driftd_model_flops_per_event"] < 2 * DENSE_PARAMETERS
    assert final["metrics"]["prequential_accuracy"] >= HELD
    assert abs(final["int8"]["accuracy_delta"]) <= 0.02

    # What an inference worker loads is exactly the shrunk model.
    x = torch.tensor([orjson.loads(p)["x"] for p in payloads[-256:]], dtype=torch.float32)
    y = [orjson.loads(p)["y"] for p in payloads[-256:]]
    with HotModel(snapshots, start=False) as served:
        classes = served.predict(x.numpy()).classes
    assert classes is not None
    assert (classes == y).mean() >= HELD

    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.process.wait(timeout=30) == 0
    restarted = start_driftd("run", env)
    resumed = restarted.wait_for_log("resumed")
    assert resumed["version"] >= final["version"]
    assert scrape(restarted.port)["driftd_model_parameters"] == final["parameters"]
    restarted.process.send_signal(signal.SIGTERM)
    assert restarted.process.wait(timeout=30) == 0
