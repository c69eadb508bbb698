"""The loop's snapshot path with the quality gate and the publish notifier (in-memory adapters)."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from driftd.adapters.file_snapshot_reader import FileSnapshotReader
from driftd.adapters.file_snapshot_store import FileSnapshotStore
from driftd.adapters.memory_snapshot_store import InMemorySnapshotStore
from driftd.adapters.prometheus_telemetry import PrometheusTelemetry
from driftd.adapters.recording_telemetry import RecordingTelemetry
from driftd.app import Trainer
from driftd.loop import StopWhen
from driftd.ports import SnapshotPublished, SnapshotStore
from driftd.serving.publish_gate import PublishedReference
from driftd.settings.root import ConfigurationError
from tests.unit.test_loop import TP0, TP1, _offsets, _records, _settings, _trainer


class RecordingNotifier:
    def __init__(self, fail: bool = False) -> None:
        self.events: list[SnapshotPublished] = []
        self.fail = fail
        self.closed = 0

    def published(self, event: SnapshotPublished) -> None:
        if self.fail:
            raise RuntimeError("broker unreachable")
        self.events.append(event)

    def close(self) -> None:
        self.closed += 1


def _force_reference(trainer: Trainer, loss: float) -> None:
    """Pretend an excellent snapshot (version 0) is published: anything real regresses."""
    gate = trainer.loop.publisher.gate
    assert gate is not None
    gate.reference = PublishedReference(0, loss)


def _run(
    tmp_path: Path,
    store: SnapshotStore,
    *,
    events: int,
    reference_loss: float | None = None,
    notifier: RecordingNotifier | None = None,
    telemetry: RecordingTelemetry | None = None,
    watch_drift: bool = True,
    micro_batch: int | None = None,
    wide: bool = True,
    **snapshots: object,
) -> tuple[Trainer, RecordingTelemetry]:
    telemetry = telemetry or RecordingTelemetry()
    settings = _settings(tmp_path, **snapshots)
    if not wide:
        model = settings.model.model_copy(update={"wide": False})
        settings = settings.model_copy(update={"model": model})
    if micro_batch is not None:
        learner = settings.learner.model_copy(update={"micro_batch": micro_batch})
        settings = settings.model_copy(update={"learner": learner})
    if not watch_drift:  # the stream shifts at event 320: no drift may reset the reference
        drift = settings.drift.model_copy(update={"enabled": False})
        settings = settings.model_copy(update={"drift": drift})
    trainer, _ = _trainer(settings, _records(640), store, telemetry=telemetry)  # type: ignore[arg-type]
    if notifier is not None:
        trainer.loop.publisher.notifier = trainer.notifier = notifier
    if reference_loss is not None:
        _force_reference(trainer, reference_loss)
    trainer.run(StopWhen(max_events=events))
    return trainer, telemetry


def test_a_worse_snapshot_is_durable_and_committed_but_not_published(tmp_path: Path) -> None:
    store = InMemorySnapshotStore(keep=5)
    telemetry = RecordingTelemetry()
    settings = _settings(tmp_path)
    trainer, source = _trainer(settings, _records(640), store, telemetry=telemetry)
    _force_reference(trainer, 1e-6)
    trainer.run(StopWhen(max_events=320))

    assert store.versions() == [1]
    assert store.latest_version() is None
    newest = store.load_newest()
    assert newest is not None
    assert newest.manifest["published"] is False
    gate = newest.manifest["gate"]
    assert gate["reason"] == "regressed"
    assert gate["reference_version"] == 0
    assert gate["loss"] == newest.manifest["metrics"]["prequential_loss"] > 1e-6
    assert source.committed == _offsets(newest) == {TP0: 160, TP1: 160}, "offsets still commit"
    assert telemetry.unpublished == {"regressed": 1}
    assert telemetry.published_version is None
    assert telemetry.snapshot_version == 1


def test_a_good_snapshot_is_published_with_its_baseline_in_the_manifest(tmp_path: Path) -> None:
    store = InMemorySnapshotStore(keep=5)
    notifier = RecordingNotifier()
    trainer, telemetry = _run(
        tmp_path, store, events=640, notifier=notifier, gate_baseline_margin=10.0
    )
    latest = store.load_latest()
    assert latest is not None
    assert latest.version == 1
    manifest = latest.manifest
    assert manifest["published"] is True
    assert manifest["gate"]["reason"] == "passed"
    metrics = manifest["metrics"]
    assert 0.0 < metrics["baseline_loss"] <= 1.0987  # entropy of 3 classes is at most ln 3
    assert 0.33 <= metrics["baseline_accuracy"] < 1.0
    assert telemetry.published_version == 1
    assert trainer.loop.progress.published_version == 1
    [event] = notifier.events
    assert event.version == 1
    assert event.path == "memory://0000000001"
    assert event.created_at == manifest["created_at"]
    assert event.metrics == metrics
    assert event.watermark == manifest["watermark"]
    assert notifier.closed == 1, "the trainer closes its notifier"


def test_the_baseline_gate_refuses_a_model_no_better_than_the_class_prior(
    tmp_path: Path,
) -> None:
    """After two steps a plain MLP's window loss is the untrained one (~ln 3) or worse.

    (Wide & deep, the default, learns this stream's linear rule within those two steps.)
    """
    store = InMemorySnapshotStore(keep=5)
    _, telemetry = _run(tmp_path, store, events=64, micro_batch=32, wide=False)
    newest = store.load_newest()
    assert newest is not None
    metrics = newest.manifest["metrics"]
    assert metrics["prequential_loss"] > metrics["baseline_loss"]
    assert newest.manifest["gate"]["reason"] == "below_baseline"
    assert telemetry.unpublished == {"below_baseline": 1}
    assert store.latest_version() is None


def test_gate_disabled_publishes_every_snapshot(tmp_path: Path) -> None:
    store = InMemorySnapshotStore(keep=5)
    _, telemetry = _run(tmp_path, store, events=64, reference_loss=1e-6, gate_enabled=False)
    assert store.latest_version() == 1
    latest = store.load_latest()
    assert latest is not None
    assert latest.manifest["gate"]["reason"] == "gate_disabled"
    assert telemetry.unpublished == {}


def test_a_failing_notifier_is_counted_and_training_goes_on(tmp_path: Path) -> None:
    store = InMemorySnapshotStore(keep=5)
    notifier = RecordingNotifier(fail=True)
    trainer, telemetry = _run(
        tmp_path, store, events=640, notifier=notifier, gate_enabled=False, every_steps=5
    )
    assert trainer.loop.progress.events_learned == 640
    assert store.versions() == [1, 2, 3, 4]
    assert telemetry.notification_failures == {"RuntimeError": 4}


def test_restart_resumes_from_the_newest_durable_snapshot_not_latest(tmp_path: Path) -> None:
    store = FileSnapshotStore(tmp_path / "snap", keep=5)
    _run(tmp_path, store, events=320, gate_enabled=False)  # version 1: published
    published = store.load_latest()
    assert published is not None
    # Version 2: durable, refused (no drift resetting the gate's reference).
    _run(tmp_path, store, events=160, reference_loss=1e-6, watch_drift=False)
    assert (store.latest_version(), store.versions()) == (1, [1, 2])

    telemetry = RecordingTelemetry()
    resumed, _ = _trainer(_settings(tmp_path), _records(640), store, telemetry=telemetry)  # type: ignore[arg-type]
    state = resumed.loop.state
    assert state.snapshot_version == 2
    assert state.offsets == {TP0: 240, TP1: 240}, "the offsets of the unpublished version 2"
    gate = resumed.loop.publisher.gate
    assert gate is not None
    assert gate.reference == PublishedReference(1, published.manifest["gate"]["loss"])
    assert gate.labels.count > 0, "the baseline window came back from the manifest"
    assert telemetry.published_version == 1
    assert resumed.loop.progress.published_version == 1
    # inference keeps following LATEST
    served = FileSnapshotReader(tmp_path / "snap", weights_only=True).load_latest()
    assert served is not None
    assert served.version == 1
    resumed.close()


def test_prometheus_exports_published_version_and_unpublished_reasons() -> None:
    registry = CollectorRegistry()
    telemetry = PrometheusTelemetry(registry)
    assert registry.get_sample_value("driftd_snapshot_published_version") == 0.0
    telemetry.snapshot_published(7)
    telemetry.snapshot_unpublished("regressed")
    telemetry.snapshot_unpublished("regressed")
    telemetry.snapshot_unpublished("below_baseline")
    telemetry.snapshot_notification_failed("KafkaTimeoutError")
    assert registry.get_sample_value("driftd_snapshot_published_version") == 7.0
    value = registry.get_sample_value
    assert value("driftd_snapshots_unpublished_total", {"reason": "regressed"}) == 2.0
    assert value("driftd_snapshots_unpublished_total", {"reason": "below_baseline"}) == 1.0
    assert (
        value("driftd_snapshot_notification_failures_total", {"reason": "KafkaTimeoutError"}) == 1.0
    )


@pytest.mark.parametrize("margin", [-0.1])
def test_a_negative_margin_is_refused_by_the_settings(tmp_path: Path, margin: float) -> None:
    with pytest.raises(ConfigurationError, match=r"snapshots\.gate_margin"):
        _settings(tmp_path, gate_margin=margin)
