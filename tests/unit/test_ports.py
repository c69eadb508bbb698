"""driftd.ports: one import path for every port, light enough for the CLI and the consumer child."""

from __future__ import annotations

import subprocess
import sys

import driftd.ports

# The names ``driftd.ports`` exported when it was one module: user code imports them from here.
TRAINING_PORTS = {
    "Clock", "SystemClock", "RecordSource", "DeadLetterSink", "Snapshot", "SnapshotStore",
    "UnreadableSnapshotsError", "SnapshotStoreUnreachableError", "SnapshotPublished",
    "SnapshotNotifier", "NullSnapshotNotifier", "Telemetry", "TrainerGroup",
}  # fmt: skip
SERVING_PORTS = {
    "Predictor", "PredictionSink", "InferenceTelemetry", "Predictions", "ModelSwapped",
    "ReloadRefused", "ModelNotReadyError",
}  # fmt: skip
SERVING_DEFAULTS = {"RELOAD_INTERVAL_S": 0.2}  # the one default behind settings and HotModel


def test_every_port_is_exported_from_driftd_ports() -> None:
    exported = set(driftd.ports.__all__)
    assert exported == TRAINING_PORTS | SERVING_PORTS | {"Decoder"} | set(SERVING_DEFAULTS)
    for name in exported - set(SERVING_DEFAULTS):
        assert getattr(driftd.ports, name).__name__ == name
    for name, value in SERVING_DEFAULTS.items():
        assert getattr(driftd.ports, name) == value


def test_importing_the_ports_loads_neither_torch_nor_numpy() -> None:
    code = (
        "import sys, driftd.ports\n"
        "heavy = [m for m in ('torch', 'numpy') if m in sys.modules]\n"
        "assert heavy == [], heavy\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
