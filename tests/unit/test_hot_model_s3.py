"""Contract: trainer → S3 (moto) → ``HotModel`` / ``driftd infer``, verified and atomic."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import threading
import uuid
from typing import Any

import numpy as np
import pytest
import torch

from driftd.adapters.fsspec_snapshot_reader import FsspecSnapshotReader
from driftd.adapters.hot_model import HotModel
from driftd.adapters.memory import InMemoryDeadLetterSink
from driftd.adapters.memory_source import InMemoryRecordSource
from driftd.adapters.recording_telemetry import RecordingTelemetry
from driftd.app import Trainer, build_trainer
from driftd.infer import build_inference_worker
from driftd.loop import StopWhen
from driftd.ports import ModelSwapped, SnapshotStoreUnreachableError
from driftd.settings.root import Settings, load_settings
from tests.conftest import S3_BUCKET
from tests.fakes import FakeClock
from tests.unit.test_loop import _records


def _settings(url: str, s3_options: dict[str, Any], **sections: Any) -> Settings:
    return load_settings(
        model={"n_classes": 3, "seed": 5},
        learner={"batch_size": 32, "optimizer": "adam"},
        snapshots={
            "dir": url,
            "storage_options": json.dumps(s3_options),
            "every_steps": 1000,
            "every_seconds": 3600,
        },
        metrics={"enabled": False},
        **sections,
    )


@pytest.fixture
def url() -> str:
    return f"s3://{S3_BUCKET}/{uuid.uuid4().hex}/snapshots"


@pytest.fixture
def trainer(url: str, s3_options: dict[str, Any]) -> Trainer:
    """The real loop and the S3 store the settings select, over 600 in-memory events."""
    return build_trainer(
        _settings(url, s3_options),
        source=InMemoryRecordSource(_records(600)),
        clock=FakeClock(),
        telemetry=RecordingTelemetry(),
        dead_letters=InMemoryDeadLetterSink(),
        serve_metrics=False,
    )


def _trainer_probabilities(trainer: Trainer, x: torch.Tensor) -> np.ndarray:
    learner = trainer.loop.state.learner
    assert learner is not None
    model = copy.deepcopy(learner.model).eval()  # the trainer's own model stays in train mode
    with torch.no_grad():
        return torch.softmax(model(x).float(), dim=1).numpy()


def test_hot_model_serves_the_trainers_s3_snapshots_identically_and_reloads(
    trainer: Trainer, url: str, s3_options: dict[str, Any]
) -> None:
    trainer.loop.run(StopWhen(max_events=300))
    config = trainer.loop.state.model_config
    assert config is not None
    x = torch.randn(64, config["n_features"], generator=torch.Generator().manual_seed(3))
    assert trainer.loop.progress.snapshot_version == 1
    first = _trainer_probabilities(trainer, x)

    with HotModel(url, storage_options=s3_options, start=False) as hot:
        assert hot.version == 1
        served = hot.predict(x)
        assert served.probabilities is not None
        np.testing.assert_array_equal(served.probabilities, first)  # bit for bit
        assert hot.manifest["offsets"] == [
            {"topic": "events", "partition": p, "next_offset": 150} for p in (0, 1)
        ]

        trainer.loop.run(StopWhen(max_events=600))  # a newer version, published in S3
        assert trainer.loop.progress.snapshot_version == 2
        second = _trainer_probabilities(trainer, x)
        assert not np.array_equal(first, second)
        assert hot.refresh()
        assert (hot.version, hot.reloads) == (2, 1)
        reloaded = hot.predict(x).probabilities
        assert reloaded is not None
        np.testing.assert_array_equal(reloaded, second)


def test_the_background_thread_follows_latest_in_s3(
    trainer: Trainer, url: str, s3_options: dict[str, Any]
) -> None:
    trainer.loop.run(StopWhen(max_events=300))
    swapped: list[int] = []
    second = threading.Event()

    def on_swapped(event: ModelSwapped) -> None:
        swapped.append(event.version)
        if event.version == 2:
            second.set()

    with HotModel(
        url, storage_options=s3_options, poll_interval_s=0.05, on_swapped=on_swapped
    ) as hot:
        trainer.loop.run(StopWhen(max_events=600))
        assert second.wait(60)  # a bound, not a measurement: it polls every 50 ms
        assert hot.version == 2
    assert swapped == [1, 2]


def test_a_corrupt_or_unpublished_version_in_s3_is_never_served(
    trainer: Trainer, url: str, s3_options: dict[str, Any]
) -> None:
    trainer.loop.run(StopWhen(max_events=300))
    with HotModel(url, storage_options=s3_options, start=False) as hot:
        trainer.loop.run(StopWhen(max_events=600))
        reader = FsspecSnapshotReader(url, storage_options=s3_options)
        weights = f"{reader.root}/0000000002/model.safetensors"
        data = reader.fs.cat_file(weights)
        reader.fs.pipe_file(weights, data[:-1] + bytes([data[-1] ^ 0xFF]))
        assert not hot.refresh()
        assert hot.version == 1
        assert hot.refused_by_reason == {"corrupt": 1}

        # A version whose manifest says unpublished, named by nobody's LATEST: not served.
        manifest_key = f"{reader.root}/0000000001/manifest.json"
        manifest = json.loads(reader.fs.cat_file(manifest_key))
        reader.fs.pipe_file(manifest_key, json.dumps({**manifest, "published": False}).encode())
    with HotModel(url, storage_options=s3_options, start=False) as fresh:
        assert not fresh.ready
        assert fresh.refused_by_reason == {"corrupt": 1}


def test_driftd_infer_serves_from_s3(
    trainer: Trainer, url: str, s3_options: dict[str, Any]
) -> None:
    trainer.loop.run(StopWhen(max_events=300))
    worker = build_inference_worker(_settings(url, s3_options), serve_metrics=False)
    try:
        assert worker.model.wait_ready(30)
        assert worker.model.version == 1
        assert worker.readiness() == (False, "source not connected or no partitions assigned")
    finally:
        worker.close()


def test_an_unreachable_store_fails_at_once(s3_options: dict[str, Any]) -> None:
    closed = {
        **s3_options,
        "client_kwargs": {"endpoint_url": "http://127.0.0.1:9", "region_name": "us-east-1"},
        "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2},
    }
    with pytest.raises(SnapshotStoreUnreachableError, match="cannot be reached"):
        HotModel(f"s3://{S3_BUCKET}/x", storage_options=closed)


def test_a_missing_bucket_fails_at_once(s3_options: dict[str, Any]) -> None:
    with pytest.raises(SnapshotStoreUnreachableError, match="bucket does not exist"):
        HotModel("s3://no-such-bucket-here/x", storage_options=s3_options)


@pytest.mark.parametrize("command", ["infer", "run"])
def test_without_s3fs_driftd_says_which_extra_is_missing(command: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTD_")}
    env |= {
        "DRIFTD_SNAPSHOTS__DIR": "s3://bucket/prefix",
        "DRIFTD_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:9",
        "DRIFTD_METRICS__ENABLED": "false",
    }
    script = (
        "import sys; sys.modules['s3fs'] = None\n"  # as if the driftd[s3] extra were missing
        "from driftd.cli import main\n"
        f"raise SystemExit(main([{command!r}]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert "driftd: snapshots.dir: snapshots.dir=s3://bucket/prefix needs" in done.stderr
    assert "pip install 'driftd[s3]'" in done.stderr
    assert "Traceback" not in done.stderr
