"""`driftd run` on the real broker over raw-scale features (salary- and age-like columns).

Without input standardisation such a stream kept the loss in the hundreds and the publish gate
refused every snapshot (``below_baseline``): inference never got a model. With the default
standardiser (part of the model) a snapshot is published, and ``HotModel`` serves exactly the
trainer's predictions on raw inputs: the standardiser's statistics travel in the snapshot.
"""

from __future__ import annotations

import json
import shutil
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pytest
import torch

from driftd.adapters.embedded_broker import EmbeddedBroker
from driftd.adapters.file_snapshot_store import FileSnapshotStore
from driftd.adapters.hot_model import HotModel
from driftd.settings.root import load_settings
from driftd.wiring.restore import restore_state
from tests.integration.driftd_process import DriftdProcess, produce

pytestmark = pytest.mark.integration

EVENTS = 4_000
HELD = 0.85  # accuracy of the served model on fresh events (in-process runs: 0.93-0.97)


def raw_scale_events(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Salary (~50,000 +- 15,000), age (~40 +- 12) and a [0, 1) score; the label mixes all three."""
    rng = np.random.default_rng(seed)
    salary = rng.normal(50_000.0, 15_000.0, n)
    age = rng.normal(40.0, 12.0, n)
    score = rng.random(n)
    x = np.stack([salary, age, score], axis=1).astype(np.float32)
    y = (salary - 50_000.0) / 15_000.0 + (age - 40.0) / 12.0 + 2.0 * (score - 0.5) > 0.0
    return x, y.astype(np.int64)


def _published(snapshots: Path, timeout: float = 90.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        latest = snapshots / "LATEST"
        if latest.exists():
            version = latest.read_text().strip()
            try:
                return dict(json.loads((snapshots / version / "manifest.json").read_text()))
            except (OSError, ValueError):  # being replaced meanwhile
                pass
        time.sleep(0.1)
    raise AssertionError(f"no snapshot published in {timeout:.0f} s")


def test_a_raw_scale_stream_gets_a_published_model_served_like_the_trainer(
    broker: EmbeddedBroker,
    unique_topic: Callable[..., str],
    start_driftd: Callable[..., DriftdProcess],
    tmp_path: Path,
) -> None:
    topic, snapshots = unique_topic(partitions=1), tmp_path / "snapshots"
    x, y = raw_scale_events(EVENTS, seed=11)
    payloads = [
        orjson.dumps({"x": row.tolist(), "y": int(label)}) for row, label in zip(x, y, strict=True)
    ]
    env = {
        "DRIFTD_KAFKA__TOPICS": topic,
        "DRIFTD_KAFKA__GROUP_ID": f"driftd-{uuid.uuid4().hex[:8]}",
        "DRIFTD_MODEL__N_CLASSES": "2",
        "DRIFTD_MODEL__SEED": "11",
        "DRIFTD_SNAPSHOTS__DIR": str(snapshots),
        "DRIFTD_SNAPSHOTS__EVERY_STEPS": "20",
        "DRIFTD_SNAPSHOTS__EVERY_SECONDS": "0.5",
    }
    daemon = start_driftd("run", env)
    produce(broker.bootstrap_servers, topic, payloads)
    manifest = _published(snapshots)
    assert manifest["published"] is True
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.process.wait(timeout=30) == 0

    fresh_x, fresh_y = raw_scale_events(1_000, seed=12)
    with HotModel(snapshots, start=False) as served:
        served_classes = served.predict(fresh_x).classes
    assert served_classes is not None
    assert (served_classes == fresh_y).mean() >= HELD

    # The trainer's own model, restored from a store holding just the served version (the
    # newest one may be the unpublished shutdown snapshot), predicts the same on raw inputs.
    version = (snapshots / "LATEST").read_text().strip()
    alone = tmp_path / "published-only"
    shutil.copytree(snapshots / version, alone / version)
    (alone / "LATEST").write_text(version)
    settings = load_settings(model={"n_classes": 2, "seed": 11}, snapshots={"dir": str(alone)})
    state = restore_state(settings, FileSnapshotStore(alone, keep=settings.snapshots.keep))
    assert state.learner is not None
    model = state.learner.model.eval()
    with torch.no_grad():
        trainer_classes = model(torch.from_numpy(fresh_x)).argmax(dim=1).numpy()
    assert np.array_equal(trainer_classes, served_classes)
    mean = state.learner.model.state_dict()["inputs.mean"]
    assert 40_000.0 < float(mean[0]) < 60_000.0, "the standardiser's statistics travelled"
