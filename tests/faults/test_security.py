"""Security basics: no unpickling, loopback by default, secrets passed on but never shown.

* A snapshot whose files are pickles (a ``.pt``/``torch.save`` file, or a pickle in place of
  ``model.safetensors`` with a matching sha256: an attacker who can write the directory can
  also fix the manifest) is refused, and the pickle's payload never runs.
* The full load path (trainer restore, inference ``HotModel``) works with ``torch.load`` and
  every ``pickle`` entry point made to fail: nothing is unpickled, ever.
* The metrics/health server listens on 127.0.0.1 unless told otherwise (checked in the
  kernel's socket table, not in driftd's own state).
* Kafka SASL/TLS settings reach every client driftd builds; secrets appear neither in
  ``driftd config`` output nor in the daemon's DEBUG logs.
* A config file with unknown keys is refused with exit status 2, naming each key.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from driftd.adapters.embedded_broker import EmbeddedBroker
from driftd.adapters.file_snapshot_reader import FileSnapshotReader, SnapshotError
from driftd.adapters.hot_model import HotModel
from driftd.adapters.memory_source import InMemoryRecordSource
from driftd.app import build_trainer
from driftd.loop import StopWhen
from driftd.settings.root import KafkaSettings, Settings, load_settings
from tests.faults.conftest import as_records, good_payloads, wait_until
from tests.integration.driftd_process import DriftdProcess

SECRETS = {
    "DRIFTD_KAFKA__SASL_PLAIN_PASSWORD": "sasl-hunter2-7f3a",
    "DRIFTD_KAFKA__SSL_PASSWORD": "ssl-key-pass-9c1e",
    "DRIFTD_SNAPSHOTS__STORAGE_OPTIONS": json.dumps(
        {"secret": "s3-secret-4d2b", "client_kwargs": {"aws_secret_access_key": "s3-nested-8e0f"}}
    ),
}
SECRET_VALUES = ("sasl-hunter2-7f3a", "ssl-key-pass-9c1e", "s3-secret-4d2b", "s3-nested-8e0f")


def _settings(snapshots: Path, **sections: Any) -> Settings:
    return load_settings(
        model={"n_classes": 3},
        learner={"batch_size": 16},
        snapshots={"dir": str(snapshots), "every_steps": 4, "gate_enabled": False},
        **{"metrics": {"enabled": False}, **sections},
    )


def _train(snapshots: Path, events: int = 128) -> Settings:
    settings = _settings(snapshots)
    records = as_records("events", good_payloads(events, seed=2))
    build_trainer(settings, source=InMemoryRecordSource(records)).run(StopWhen(max_events=events))
    return settings


class _Payload:
    """Unpickling this creates ``marker``: proof that a pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Path]]:
        return Path.touch, (self.marker,)


def _pickled(marker: Path, *, torch_format: bool) -> bytes:
    if not torch_format:
        return pickle.dumps({"weight": _Payload(marker)})
    buffer = io.BytesIO()
    torch.save({"0.weight": torch.zeros(3), "payload": _Payload(marker)}, buffer)
    return buffer.getvalue()


def _rewrite_manifest(version_dir: Path, files: dict[str, bytes]) -> None:
    """Plant ``files`` and list them in the manifest with their true size and sha256."""
    manifest = json.loads((version_dir / "manifest.json").read_text())
    for name, data in files.items():
        (version_dir / name).write_bytes(data)
        manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (version_dir / "manifest.json").write_text(json.dumps(manifest))


def test_the_planted_payload_runs_when_unpickled(tmp_path: Path) -> None:
    """The attacks below are real: unpickling their bytes would run code."""
    for torch_format in (False, True):
        marker = tmp_path / f"ran-{torch_format}"
        data = _pickled(marker, torch_format=torch_format)
        if torch_format:
            torch.load(io.BytesIO(data), weights_only=False)
        else:
            pickle.loads(data)
        assert marker.exists()


@pytest.mark.parametrize(
    "attack",
    ["pickle_as_weights", "torch_save_as_weights", "extra_pt_file", "pt_instead_of_weights"],
)
def test_pickled_snapshot_files_are_refused_and_never_run(
    attack: str, tmp_path: Path, no_driftd_env: None
) -> None:
    snapshots, marker = tmp_path / "snapshots", tmp_path / "pwned"
    settings = _train(snapshots)
    version = FileSnapshotReader(snapshots).latest_version()
    assert version is not None
    version_dir = snapshots / f"{version:010d}"
    if attack == "pickle_as_weights":
        _rewrite_manifest(version_dir, {"model.safetensors": _pickled(marker, torch_format=False)})
    elif attack == "torch_save_as_weights":
        _rewrite_manifest(version_dir, {"model.safetensors": _pickled(marker, torch_format=True)})
    elif attack == "extra_pt_file":
        _rewrite_manifest(version_dir, {"model.pt": _pickled(marker, torch_format=True)})
    else:
        (version_dir / "model.safetensors").unlink()
        manifest = json.loads((version_dir / "manifest.json").read_text())
        del manifest["files"]["model.safetensors"]
        (version_dir / "manifest.json").write_text(json.dumps(manifest))
        _rewrite_manifest(version_dir, {"model.pt": _pickled(marker, torch_format=True)})

    with pytest.raises(SnapshotError) as refused:
        FileSnapshotReader(snapshots).load(version)
    assert refused.value.reason in ("corrupt", "missing")
    resumed = build_trainer(settings, source=InMemoryRecordSource([]))  # falls back past it
    assert resumed.loop.state.snapshot_version is not None
    assert resumed.loop.state.snapshot_version >= version  # numbering moves past it
    with HotModel(snapshots, poll_interval_s=0.05) as served:
        if attack != "extra_pt_file":  # inference reads only model.safetensors
            assert served.version != version
    assert not marker.exists(), "a pickle from the snapshot directory was executed"


def test_full_load_path_never_unpickles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_driftd_env: None
) -> None:
    snapshots = tmp_path / "snapshots"
    settings = _train(snapshots)
    version = FileSnapshotReader(snapshots).latest_version()
    calls: list[str] = []

    def forbidden(name: str) -> Callable[..., Any]:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            raise AssertionError(f"{name} called while loading a snapshot")

        return refuse

    class NoUnpickler(pickle.Unpickler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            calls.append("pickle.Unpickler")
            raise AssertionError("pickle.Unpickler used while loading a snapshot")

    for module, name in ((torch, "load"), (torch.serialization, "load"), (pickle, "load"),
                         (pickle, "loads")):  # fmt: skip
        monkeypatch.setattr(module, name, forbidden(f"{module.__name__}.{name}"))
    monkeypatch.setattr(pickle, "Unpickler", NoUnpickler)

    resumed = build_trainer(settings, source=InMemoryRecordSource([]))
    state = resumed.loop.state
    assert state.snapshot_version == version
    assert state.learner is not None
    assert state.learner.events_learned == 128
    stored = FileSnapshotReader(snapshots).load(version or 0).weights
    for key, value in state.learner.model.state_dict().items():
        assert torch.equal(value, stored[key]), key
    with HotModel(snapshots, poll_interval_s=0.05) as served:
        assert served.wait_ready(timeout_s=30)
        assert served.version == version
        predictions = served.predict(np.zeros((4, 10), dtype=np.float32))
        assert len(predictions) == 4
        assert predictions.version == version
    assert calls == []


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a socket in LISTEN state on ``port``, from /proc/net/tcp{,6}."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if fields[3] == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                assert len(address) == width
                found.add(_address_text(address))
    return found


def _address_text(hex_address: str) -> str:
    if len(hex_address) == 8:  # IPv4, little-endian
        return ".".join(str(int(hex_address[i : i + 2], 16)) for i in (6, 4, 2, 0))
    return hex_address  # IPv6: compared as the kernel writes it


@pytest.mark.parametrize(
    ("configured", "expected"), [(None, "127.0.0.1"), ("127.0.0.2", "127.0.0.2")]
)
def test_metrics_server_binds_loopback_unless_configured(
    configured: str | None, expected: str, tmp_path: Path, no_driftd_env: None
) -> None:
    metrics: dict[str, Any] = {"enabled": True, "port": 0}
    if configured is not None:
        metrics["host"] = configured
    settings = _settings(tmp_path / "snapshots", metrics=metrics)
    trainer = build_trainer(settings, source=InMemoryRecordSource([]))
    try:
        assert trainer.server is not None
        assert _listening_addresses(trainer.server.port) == {expected}
    finally:
        trainer.close()
    assert Settings().metrics.host == "127.0.0.1"


SECURE = {
    "security_protocol": "SASL_SSL",
    "sasl_mechanism": "SCRAM-SHA-512",
    "sasl_plain_username": "driftd-svc",
    "sasl_plain_password": "sasl-hunter2-7f3a",
    "ssl_cafile": "/etc/ssl/ca.pem",
    "ssl_certfile": "/etc/ssl/client.pem",
    "ssl_keyfile": "/etc/ssl/client.key",
    "ssl_password": "ssl-key-pass-9c1e",
    "ssl_check_hostname": False,
}


class _Recorder:
    """Stands in for a kafka-python client class; records the options it was built with."""

    built: list[dict[str, Any]] = []  # noqa: RUF012 - reset per test below

    def __init__(self, *topics: Any, **options: Any) -> None:
        type(self).built.append(options)

    def subscribe(self, *args: Any, **kwargs: Any) -> None:
        """Nothing to subscribe to."""

    def partitions_for_topic(self, topic: str) -> None:
        """No metadata yet: a manually assigned source asks again later."""


def test_sasl_and_tls_settings_reach_every_kafka_client(monkeypatch: pytest.MonkeyPatch) -> None:
    import kafka

    from driftd.adapters import kafka_source
    from driftd.adapters.kafka_clients import build_producer
    from driftd.adapters.kafka_source import KafkaRecordSource

    settings = KafkaSettings(bootstrap_servers=["127.0.0.1:9"], **SECURE)
    _Recorder.built = []
    monkeypatch.setattr(kafka_source, "KafkaConsumer", _Recorder)
    monkeypatch.setattr(kafka, "KafkaProducer", _Recorder)
    KafkaRecordSource(settings)
    build_producer(settings)  # the dead-letter, prediction and notifier producers
    assert len(_Recorder.built) == 2
    for options in _Recorder.built:
        assert {key: options[key] for key in SECURE} == SECURE
    # The consumer child process gets the settings through model_dump(); nothing is lost.
    assert KafkaSettings(**settings.model_dump()).client_options() == settings.client_options()


def test_secret_settings_from_the_environment_reach_the_client_options(
    monkeypatch: pytest.MonkeyPatch, no_driftd_env: None
) -> None:
    monkeypatch.setenv("DRIFTD_KAFKA__SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("DRIFTD_KAFKA__SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("DRIFTD_KAFKA__SASL_PLAIN_USERNAME", "driftd-svc")
    monkeypatch.setenv("DRIFTD_KAFKA__SASL_PLAIN_PASSWORD", SECRETS[
        "DRIFTD_KAFKA__SASL_PLAIN_PASSWORD"])  # fmt: skip
    options = load_settings().kafka.client_options()
    assert options["security_protocol"] == "SASL_PLAINTEXT"
    assert options["sasl_plain_password"] == "sasl-hunter2-7f3a"
    assert "sasl-hunter2-7f3a" not in repr(load_settings())


def _driftd(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[bytes]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTD_")}
    return subprocess.run(
        [sys.executable, "-m", "driftd.cli", *args],
        cwd=cwd, env={**clean, **env}, capture_output=True, timeout=60,
    )  # fmt: skip


def test_driftd_config_masks_every_secret(tmp_path: Path) -> None:
    result = _driftd(["config"], tmp_path, **SECRETS)
    assert result.returncode == 0, result.stderr
    output = result.stdout.decode() + result.stderr.decode()
    assert [secret for secret in SECRET_VALUES if secret in output] == []
    shown = json.loads(result.stdout)
    assert shown["kafka"]["sasl_plain_password"] == "**********"
    assert shown["kafka"]["ssl_password"] == "**********"
    assert shown["snapshots"]["storage_options"]["secret"] == "**********"


@pytest.mark.integration
def test_secrets_never_reach_the_daemon_logs(
    broker: EmbeddedBroker,
    unique_topic: Callable[..., str],
    start_driftd: Callable[..., DriftdProcess],
    tmp_path: Path,
) -> None:
    """DEBUG logging, SASL against a broker that does not speak it: errors, but no secret."""
    daemon = start_driftd(
        "run",
        {
            **SECRETS,
            "DRIFTD_LOG__LEVEL": "DEBUG",
            "DRIFTD_KAFKA__TOPICS": unique_topic(),
            "DRIFTD_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "DRIFTD_KAFKA__SASL_MECHANISM": "PLAIN",
            "DRIFTD_KAFKA__SASL_PLAIN_USERNAME": "driftd-svc",
            "DRIFTD_KAFKA__REQUEST_TIMEOUT_MS": "3000",
            "DRIFTD_SNAPSHOTS__DIR": str(tmp_path / "snapshots"),
        },
    )
    daemon.wait_for_log("metrics_listening")
    started = time.monotonic()
    wait_until(lambda: time.monotonic() - started > 3, 10, "connection attempts")
    daemon.close()  # kill: a clean stop is not what this test is about
    text = "\n".join(json.dumps(entry) for entry in daemon.logs)
    assert "SaslHandshake" in text, "the client really tried SASL with the configured settings"
    assert [secret for secret in SECRET_VALUES if secret in text] == []


def test_config_file_with_unknown_keys_is_refused_naming_them(tmp_path: Path) -> None:
    config = tmp_path / "driftd.toml"
    config.write_text(
        '[kafka]\nbootstrap_server = "127.0.0.1:9092"\n\n[snapshots]\nevery_step = 10\n\n'
        "[bogus_section]\nanswer = 42\n"
    )
    for command in ("config", "run"):
        result = _driftd([command, "--config", str(config)], tmp_path)
        assert result.returncode == 2, command
        error = result.stderr.decode()
        for key in ("kafka.bootstrap_server", "snapshots.every_step", "bogus_section"):
            assert key in error, (command, error)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["driftd.toml"], "nothing written"


def test_misspelled_environment_section_is_refused(tmp_path: Path) -> None:
    result = _driftd(["config"], tmp_path, DRIFTD_SNAPSHOT__DIR=str(tmp_path / "snap"))
    assert result.returncode == 2
    assert b"snapshot" in result.stderr


@pytest.mark.parametrize(
    "listed", ["../outside.safetensors", "/tmp/outside.safetensors", "sub/model.safetensors"]
)
def test_manifest_cannot_point_outside_its_version_directory(
    listed: str, tmp_path: Path, no_driftd_env: None
) -> None:
    """A listed file must be a plain ``*.safetensors`` name in the version directory."""
    snapshots = tmp_path / "snapshots"
    _train(snapshots)
    version = FileSnapshotReader(snapshots).latest_version()
    version_dir = snapshots / f"{version:010d}"
    weights = (version_dir / "model.safetensors").read_bytes()
    target = (version_dir / listed) if not listed.startswith("/") else Path(listed)
    target = tmp_path / "elsewhere" / "outside.safetensors" if listed.startswith("/") else target
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(weights)  # a valid file with the right sha256: only its place is wrong
    name = str(target) if listed.startswith("/") else listed
    _rewrite_manifest(version_dir, {})
    manifest = json.loads((version_dir / "manifest.json").read_text())
    manifest["files"][name] = manifest["files"]["model.safetensors"]
    (version_dir / "manifest.json").write_text(json.dumps(manifest))

    with pytest.raises(SnapshotError, match="plain"):
        FileSnapshotReader(snapshots).load(version or 0)


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_snapshot_file_that_is_not_a_regular_file_is_refused_without_reading(
    kind: str, tmp_path: Path, no_driftd_env: None
) -> None:
    """A FIFO would block a reader forever, /dev/zero would fill its memory: refuse both."""
    snapshots = tmp_path / "snapshots"
    _train(snapshots)
    version = FileSnapshotReader(snapshots).latest_version() or 0
    training = snapshots / f"{version:010d}" / "training.safetensors"
    training.unlink()
    if kind == "fifo":
        os.mkfifo(training)
    else:
        training.symlink_to("/dev/zero")
    with pytest.raises(SnapshotError, match="not a regular file"):
        FileSnapshotReader(snapshots).load(version)
    weights_only = FileSnapshotReader(snapshots, weights_only=True).load(version)
    assert weights_only.version == version  # inference never reads the training file


def test_a_manifest_that_is_not_a_regular_file_is_refused_without_reading(
    tmp_path: Path, no_driftd_env: None
) -> None:
    """LATEST may name a version whose manifest is a FIFO: the reader must not block on it."""
    snapshots = tmp_path / "snapshots"
    _train(snapshots)
    reader = FileSnapshotReader(snapshots)
    version = reader.latest_version() or 0
    manifest = snapshots / f"{version:010d}" / "manifest.json"
    manifest.unlink()
    os.mkfifo(manifest)
    with pytest.raises(SnapshotError, match="not a regular file"):
        reader.load(version)
    fallback = reader.load_latest()
    assert fallback is not None
    assert fallback.version < version
