"""Adaptation through the real loop: recurring domains, exact resume, routing, growth, transfer."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import torch
from prometheus_client import CollectorRegistry

from driftd.adapters.file_snapshot_store import FileSnapshotStore
from driftd.adapters.memory import InMemoryDeadLetterSink
from driftd.adapters.memory_snapshot_store import InMemorySnapshotStore
from driftd.adapters.memory_source import InMemoryRecordSource
from driftd.adapters.prometheus_telemetry import PrometheusTelemetry
from driftd.adapters.recording_telemetry import RecordingTelemetry
from driftd.app import Trainer, build_trainer
from driftd.decode import DecodedBatch
from driftd.learning.learner import StepReport
from driftd.loop import StopWhen
from driftd.ports import SnapshotStore
from driftd.records import Record
from driftd.settings.root import Settings, load_settings
from driftd.tools.streams import DriftingStream
from tests.fakes import FakeClock

CHANGE = 2_000  # concepts 0, 1, 2, 0: drifts at 2,000, 4,000 and 6,000


def _records(n: int = 4 * CHANGE, **event: Any) -> list[Record]:
    stream = DriftingStream(n_events=n, n_features=4, change_every=CHANGE, seed=7)
    return [
        Record("events", 0, index, orjson.dumps({**item, **event}))
        for index, item in enumerate(stream.events())
    ]


def _settings(tmp_path: Path, **sections: dict[str, Any]) -> Settings:
    # The mechanism under test, pinned: one step per batch of 32, ADWIN on the loss, the trunk
    # held for its whole schedule, raw inputs (the defaults are measured by the quality bench).
    options: dict[str, Any] = {
        "model": {"n_classes": 3, "seed": 5, "standardize": False},
        "learner": {"batch_size": 32, "micro_batch": 32, "lr": 1e-3},
        "lr": {"policy": "adaptive"},
        "drift": {"detector": "adwin"},
        "adaptation": {
            "trunk_evidence": False,
            "trunk_scale": 0.0,
            "lr_boost": 3.0,
            "reset_head_moments": True,
            "new_head": "fresh",
        },
        "snapshots": {"dir": str(tmp_path), "every_steps": 10**6, "every_seconds": 10**6},
        "metrics": {"enabled": False},
    }
    for name, values in sections.items():
        options[name] = {**options.get(name, {}), **values}
    return load_settings(**options)


def _trainer(
    settings: Settings, records: list[Record], store: SnapshotStore, telemetry: Any = None
) -> Trainer:
    snapshot = store.load_newest()
    start = None
    if snapshot is not None:
        start = {
            (e["topic"], e["partition"]): e["next_offset"] for e in snapshot.manifest["offsets"]
        }
    from driftd.records import TopicPartition

    source = InMemoryRecordSource(
        records,
        start_offsets=None if start is None else {TopicPartition(*k): v for k, v in start.items()},
    )
    return build_trainer(
        settings, source=source, store=store, clock=FakeClock(),
        telemetry=telemetry or RecordingTelemetry(), dead_letters=InMemoryDeadLetterSink(),
        serve_metrics=False,
    )  # fmt: skip


def test_a_recurring_concept_switches_back_to_its_head(tmp_path: Path) -> None:
    telemetry = RecordingTelemetry()
    store = InMemorySnapshotStore(keep=1)
    _trainer(_settings(tmp_path), _records(), store, telemetry).run(StopWhen(max_events=8_000))
    assert telemetry.domains == ["d0", "d1", "d2", "d0"], "0 -> 1 -> 2 -> back to head 0"
    assert telemetry.drifts[("adwin", "loss")] == 3
    assert telemetry.adaptations["new_head"] == 2
    assert telemetry.adaptations["reuse_head"] == 1
    assert telemetry.adaptations["lr_boost"] == telemetry.adaptations["replay"] == 3
    assert telemetry.adaptations["trunk_freeze"] == telemetry.adaptations["trunk_unfreeze"] == 3
    manifest = store.load_newest().manifest  # type: ignore[union-attr]
    assert [d["name"] for d in manifest["domains"]] == ["d1", "d2", "d0"]
    assert [d["active"] for d in manifest["domains"]] == [False, False, True]
    assert telemetry.accuracy is not None
    assert telemetry.accuracy > 0.8


@pytest.mark.parametrize("stop_at", [2_048, 3_200])  # inside the head decision / after it
def test_resume_with_adaptation_continues_bit_identically(tmp_path: Path, stop_at: int) -> None:
    """Stop (snapshot) mid-adaptation, learn on and crash, then resume: the same final state
    and the same adaptations as a run that never stopped."""
    records, settings = _records(), _settings(tmp_path)
    reference_telemetry = RecordingTelemetry()
    reference = _trainer(settings, records, InMemorySnapshotStore(keep=1), reference_telemetry)
    reference.run(StopWhen(max_events=8_000))

    store = InMemorySnapshotStore(keep=5)
    first_telemetry, resumed_telemetry = RecordingTelemetry(), RecordingTelemetry()
    _trainer(settings, records, store, first_telemetry).run(StopWhen(max_events=stop_at))
    saved = store.load_newest()
    assert saved is not None
    assert saved.manifest["adaptation"]["replay"]["size"] > 0
    crashed = _trainer(settings, records, store)
    crashed.loop.process(crashed.loop.source.poll(500, 0.0))  # learned, never saved
    resumed = _trainer(settings, records, store, resumed_telemetry)
    resumed.run(StopWhen(max_events=8_000 - stop_at))
    expected = reference.loop.state.learner.model.state_dict()  # type: ignore[union-attr]
    for key, value in resumed.loop.state.learner.model.state_dict().items():  # type: ignore[union-attr]
        assert torch.equal(value, expected[key]), key
    combined = first_telemetry.adaptations + resumed_telemetry.adaptations
    assert combined == reference_telemetry.adaptations
    assert first_telemetry.drifts + resumed_telemetry.drifts == reference_telemetry.drifts
    a, b = reference.loop.state.adaptation, resumed.loop.state.adaptation
    assert a is not None
    assert b is not None
    assert a.domain_store is not None
    assert b.domain_store is not None
    assert a.domain_store.names == b.domain_store.names
    for name in a.domain_store.names:
        for key, value in a.domain_store.entry(name).head.items():
            assert torch.equal(value, b.domain_store.entry(name).head[key]), (name, key)
    assert a.monitor is not None
    assert b.monitor is not None
    assert json.dumps(a.monitor.state_dict()) == json.dumps(b.monitor.state_dict())


def test_the_manifest_keeps_the_layout_older_daemons_read(tmp_path: Path) -> None:
    """Stored domains stay a bare list of entries under ``heads`` (a rollback reads them); the
    ``{"entries": [...]}`` shape of :class:`DomainStore` state is also accepted on load."""
    records, settings = _records(), _settings(tmp_path)
    store = InMemorySnapshotStore(keep=1)
    _trainer(settings, records, store).run(StopWhen(max_events=2_048))  # a decision pending
    snapshot = store.load_newest()
    assert snapshot is not None
    manifest = copy.deepcopy(dict(snapshot.manifest))
    adaptation = manifest["adaptation"]
    assert adaptation["pending"] is not None
    assert isinstance(adaptation["heads"], list)
    assert len(adaptation["heads"]) >= 1
    adaptation["heads"] = {"entries": adaptation["heads"]}
    other_store = InMemorySnapshotStore(keep=1)
    other_store.save(dataclasses.replace(snapshot, manifest=manifest))
    a = _trainer(settings, records, store).loop.state.adaptation
    b = _trainer(settings, records, other_store).loop.state.adaptation
    assert a is not None
    assert b is not None
    (a_tensors, a_meta), (b_tensors, b_meta) = a.state_dict(), b.state_dict()
    assert json.dumps(a_meta, sort_keys=True) == json.dumps(b_meta, sort_keys=True)
    assert a_tensors.keys() == b_tensors.keys()
    assert all(torch.equal(value, b_tensors[key]) for key, value in a_tensors.items())


def test_a_changed_detector_starts_afresh_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = InMemorySnapshotStore(keep=1)
    _trainer(_settings(tmp_path), _records(), store).run(StopWhen(max_events=640))
    caplog.set_level(logging.WARNING, logger="driftd.training_state")
    changed = _settings(tmp_path, drift={"params": {"delta": 0.01}})
    adaptation = _trainer(changed, _records(), store).loop.state.adaptation
    resets = [r for r in caplog.records if getattr(r, "event", None) == "detector_reset"]
    assert [r.signal for r in resets] == ["loss"]  # type: ignore[attr-defined]
    assert adaptation is not None
    assert adaptation.reset_signals == ["loss"]
    assert adaptation.monitor is not None
    assert adaptation.monitor.concept is not None
    assert adaptation.monitor.concept.seen == 0
    assert all(monitor.seen > 0 for monitor in adaptation.monitor.covariate), "inputs restored"


def test_snapshot_holds_everything_as_json_and_tensors(tmp_path: Path) -> None:
    store = FileSnapshotStore(tmp_path / "snap", keep=2)
    trainer = _trainer(_settings(tmp_path), _records(), store)
    trainer.run(StopWhen(max_events=3_500))
    snapshot = store.load_newest()
    assert snapshot is not None
    manifest = snapshot.manifest
    assert [d["name"] for d in manifest["domains"]] == ["d0", "d1"]
    adaptation = manifest["adaptation"]
    assert adaptation["active"] == "d1"
    assert adaptation["monitor"]["concept"]["detector"] == "adwin"
    assert {"adaptation.generator", "adaptation.replay.x", "adaptation.heads.0.w.0.weight"} <= set(
        snapshot.training
    )
    assert set(snapshot.weights) == set(trainer.loop.state.learner.model.state_dict())  # type: ignore[union-attr]
    restored = _trainer(_settings(tmp_path), _records(), store)
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = trainer.loop.state.learner.model(x)  # type: ignore[union-attr]
        after = restored.loop.state.learner.model(x)  # type: ignore[union-attr]
    assert torch.equal(before, after)


def test_explicit_domains_route_to_their_heads(tmp_path: Path) -> None:
    records = [
        Record("events", 0, i, orjson.dumps({**json.loads(r.value), "domain": "ab"[i % 2]}))  # type: ignore[arg-type]
        for i, r in enumerate(_records(640))
    ]
    telemetry, store = RecordingTelemetry(), InMemorySnapshotStore(keep=1)
    trainer = _trainer(_settings(tmp_path), records, store, telemetry)
    progress = trainer.run(StopWhen(max_events=640))
    assert progress.steps == 40, "each mixed batch steps once per domain"
    assert progress.events_learned == 640
    assert telemetry.adaptations["new_head"] == 2
    manifest = store.load_newest().manifest  # type: ignore[union-attr]
    assert sorted(d["name"] for d in manifest["domains"]) == ["a", "b", "d0"]


def test_unseen_labels_grow_the_output_layer_up_to_the_bound(tmp_path: Path) -> None:
    records = _records(320)
    for i in range(100, 320, 10):  # class 3 from event 100, class 4 from event 200
        records[i] = records[i]._replace(value=orjson.dumps({"x": [0.1] * 4, "y": 3 + i // 200}))
    records.append(Record("events", 0, 320, orjson.dumps({"x": [0.1] * 4, "y": 7})))
    settings = _settings(tmp_path, adaptation={"grow_classes": True, "max_classes": 5})
    telemetry, store = RecordingTelemetry(), InMemorySnapshotStore(keep=1)
    progress = _trainer(settings, records, store, telemetry).run(StopWhen(max_events=321))
    assert telemetry.adaptations["grow_classes"] == 2  # 3 -> 4, then 4 -> 5
    assert progress.events_invalid == 1
    assert telemetry.invalid["unknown_label"] == 1
    snapshot = store.load_newest()
    assert snapshot is not None
    assert snapshot.manifest["model"]["n_outputs"] == 5
    # The head sees the trunk's 64 features and (wide & deep) the 4 standardised inputs.
    assert snapshot.weights["head.0.weight"].shape == (5, 64 + 4)
    restored = _trainer(settings, records, store)
    assert restored.loop.state.learner.model.n_outputs == 5  # type: ignore[union-attr]


def test_warm_start_and_structure_transfer(tmp_path: Path) -> None:
    source = FileSnapshotStore(tmp_path / "pretrained", keep=1)
    pretrained_settings = _settings(
        tmp_path, model={"hidden": [16]}, snapshots={"gate_enabled": False}
    )  # transfer reads the *published* snapshot: publish it whatever its quality
    pretrained = _trainer(pretrained_settings, _records(320), source)
    pretrained.run(StopWhen(max_events=320))
    trunk = pretrained.loop.state.learner.model.shared.state_dict()  # type: ignore[union-attr]
    for option, same_weights in (("warm_start_dir", True), ("structure_from", False)):
        settings = _settings(tmp_path, adaptation={option: str(tmp_path / "pretrained")})
        fresh = _trainer(settings, _records(32), InMemorySnapshotStore(keep=1))
        model = fresh.loop.state.learner.model  # type: ignore[union-attr]
        assert model.config["hidden"] == [16], "the other deployment's architecture"
        equal = all(torch.equal(v, trunk[k]) for k, v in model.shared.state_dict().items())
        assert equal is same_weights, option


def test_freeze_trunk_keeps_the_trunk_for_good(tmp_path: Path) -> None:
    settings = _settings(tmp_path, adaptation={"freeze_trunk": True}, model={"n_features": 4})
    trainer = _trainer(settings, _records(640), InMemorySnapshotStore(keep=1))
    model = trainer.loop.state.learner.model  # type: ignore[union-attr]
    trunk = {k: v.clone() for k, v in model.shared.state_dict().items()}
    head = {k: v.clone() for k, v in model.head.state_dict().items()}
    trainer.run(StopWhen(max_events=640))
    assert all(torch.equal(v, trunk[k]) for k, v in model.shared.state_dict().items())
    assert not all(torch.equal(v, head[k]) for k, v in model.head.state_dict().items())


def test_prometheus_exports_drifts_adaptations_and_the_active_domain() -> None:
    registry = CollectorRegistry()
    telemetry = PrometheusTelemetry(registry)
    telemetry.drift_detected("adwin", "loss", "drift")
    telemetry.drift_detected("ddm", "error", "warning")
    telemetry.adapted("new_head")
    telemetry.active_domain("d0")
    telemetry.active_domain("d1")
    value = registry.get_sample_value
    assert value("driftd_drift_detected_total", {"detector": "adwin", "signal": "loss"}) == 1
    assert value("driftd_drift_detected_total", {"detector": "ddm", "signal": "error"}) is None
    assert value("driftd_drift_warnings_total", {"detector": "ddm", "signal": "error"}) == 1
    assert value("driftd_adaptations_total", {"kind": "new_head"}) == 1
    assert value("driftd_active_domain", {"domain": "d1"}) == 1
    assert value("driftd_active_domain", {"domain": "d0"}) is None, "one series: the live one"


def test_settings_validate_the_adaptation_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from driftd.settings.root import ConfigurationError

    with pytest.raises(ConfigurationError, match="replay_size"):
        _settings(tmp_path, adaptation={"replay_size": 64, "score_events": 128})
    with pytest.raises(ConfigurationError, match="not both"):
        _settings(tmp_path, adaptation={"warm_start_dir": "a", "structure_from": "b"})
    with pytest.raises(ConfigurationError, match="on_covariate_drift"):
        _settings(tmp_path, adaptation={"on_covariate_drift": "panic"})
    defaults = load_settings()
    assert defaults.adaptation.on_covariate_drift == "score_heads"
    assert (defaults.adaptation.early_reuse, defaults.drift.covariate_batch_mean) == (True, False)
    monkeypatch.setenv("DRIFTD_DRIFT__DETECTOR", "hddm_w")
    monkeypatch.setenv("DRIFTD_DRIFT__PARAMS", '{"lambda_val": 0.1}')
    monkeypatch.setenv("DRIFTD_ADAPTATION__ON_COVARIATE_DRIFT", "lr_boost")
    settings = load_settings()
    assert settings.drift.concept_signal == "error"
    assert settings.drift.params == {"lambda_val": 0.1}
    assert settings.adaptation.on_covariate_drift == "lr_boost"


def _reuse_log(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [
        (int(r.step), r.getMessage())  # type: ignore[attr-defined]
        for r in caplog.records
        if getattr(r, "event", None) == "adapted" and getattr(r, "kind", None) == "reuse_head"
    ]


def test_early_reuse_switches_back_before_the_full_scoring_window(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The recurring concept at 6,000: the paired test picks head d0 within a step or two of
    the detection instead of after 128 more labelled events (4 steps of 32)."""
    caplog.set_level(logging.INFO, logger="driftd.adaptation")
    steps = {}
    for early in (True, False):
        caplog.clear()
        settings = _settings(tmp_path, adaptation={"early_reuse": early})
        telemetry = RecordingTelemetry()
        _trainer(settings, _records(), InMemorySnapshotStore(keep=1), telemetry).run(
            StopWhen(max_events=8_000)
        )
        assert telemetry.domains == ["d0", "d1", "d2", "d0"]
        (steps[early], message), *_ = _reuse_log(caplog)
        assert ("early, on" in message) is early, message
    assert steps[True] <= steps[False] - 3, steps
    assert 6_000 // 32 < steps[True] <= 6_000 // 32 + 4, "within 4 steps of the change"


def _covariate_records() -> tuple[list[Record], np.ndarray]:
    """Domain A (labelled), domain B (inputs shifted by 3, another concept, labelled), then A
    again without labels: only the inputs show the return. 1,200 events each, seeded."""
    rng = np.random.default_rng(21)
    x = rng.normal(0.0, 1.0, size=(3_600, 4))
    x[1_200:2_400] += 3.0
    y = np.argmax(x[:, :3], axis=1)
    y[1_200:2_400] = np.argmin(x[1_200:2_400, :3], axis=1)
    records = [
        Record("events", 0, i, orjson.dumps({"x": x[i].round(4).tolist(),
                                             "y": int(y[i]) if i < 2_400 else None}))
        for i in range(3_600)
    ]  # fmt: skip
    return records, y


def _covariate_run(
    tmp_path: Path, mode: str, store: SnapshotStore | None = None, max_events: int = 3_600
) -> tuple[RecordingTelemetry, np.ndarray, Trainer]:
    records, labels = _covariate_records()
    predicted = np.full(len(records), -1)

    def on_report(report: StepReport, batch: DecodedBatch) -> None:
        predicted[[r.offset for r in batch.records]] = report.predictions.numpy()

    settings = _settings(tmp_path, adaptation={"on_covariate_drift": mode})
    telemetry = RecordingTelemetry()
    trainer = build_trainer(
        settings, source=InMemoryRecordSource(records), clock=FakeClock(), telemetry=telemetry,
        store=store or InMemorySnapshotStore(keep=1), dead_letters=InMemoryDeadLetterSink(),
        serve_metrics=False, on_report=on_report,
    )  # fmt: skip
    trainer.run(StopWhen(max_events=max_events))
    return telemetry, predicted == labels, trainer


def test_covariate_drift_on_unlabelled_events_switches_back_by_the_inputs(tmp_path: Path) -> None:
    telemetry, correct, _ = _covariate_run(tmp_path, "score_heads")
    ignored_telemetry, ignored, _ = _covariate_run(tmp_path, "ignore")
    assert telemetry.drifts[("adwin", "input_mean")] >= 2, "to B and back to A"
    assert telemetry.adaptations["score_heads"] >= 1
    assert telemetry.adaptations["reuse_head"] == 1
    assert telemetry.domains[-1] == "d0", "back to A's head without a single label"
    unlabelled = slice(2_400, 3_600)
    assert correct[unlabelled].mean() > 0.85
    assert ignored[unlabelled].mean() < 0.5, "B's head does not know A"
    assert ignored_telemetry.adaptations["score_heads"] == 0
    assert ignored_telemetry.adaptations["reuse_head"] == 0
    assert ignored_telemetry.drifts == telemetry.drifts, "detection does not depend on the mode"
    assert correct[:2_400].mean() == pytest.approx(ignored[:2_400].mean(), abs=0.02)


def test_covariate_drift_can_boost_the_learning_rate(tmp_path: Path) -> None:
    boosted, _, trainer = _covariate_run(tmp_path, "lr_boost", max_events=2_560)
    ignored, _, _ = _covariate_run(tmp_path, "ignore", max_events=2_560)
    assert boosted.drifts[("adwin", "input_mean")] >= 2
    assert boosted.adaptations["lr_boost"] > ignored.adaptations["lr_boost"]
    assert boosted.adaptations["score_heads"] == boosted.adaptations["reuse_head"] == 0
    group = trainer.loop.state.learner.param_group("head")  # type: ignore[union-attr]
    assert group is not None
    assert group["lr_scale"] > 1.0, "the unlabelled return boosted the head, still decaying"


@pytest.mark.parametrize("before", [0, 64])  # at the input drift's batch / two batches before
def test_resume_around_a_covariate_switch_continues_bit_identically(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, before: int
) -> None:
    caplog.set_level(logging.INFO, logger="driftd.adaptation")
    """Stop at (or before) the batch whose inputs show the unlabelled return, resume: the same
    weights, fingerprints and adaptations as a run that never stopped."""
    caplog.set_level(logging.INFO, logger="driftd.adaptation")
    reference_telemetry, _, reference = _covariate_run(tmp_path, "score_heads")
    offsets = [
        int(getattr(r, "offset", -1))
        for r in caplog.records
        if getattr(r, "event", None) == "drift_detected" and getattr(r, "offset", -1) >= 2_400
    ]
    stop_at = (offsets[0] // 32 + 1) * 32 - before
    store = InMemorySnapshotStore(keep=5)
    first, _, _ = _covariate_run(tmp_path, "score_heads", store, max_events=stop_at)
    saved = store.load_newest()
    assert saved is not None
    assert {"adaptation.inputs.total", "adaptation.heads.0.i.total"} <= set(saved.training)
    records, _ = _covariate_records()
    second = RecordingTelemetry()
    resumed = _trainer(_settings(tmp_path), records, store, second)
    resumed.run(StopWhen(max_events=3_600 - stop_at))
    assert first.adaptations + second.adaptations == reference_telemetry.adaptations
    expected = reference.loop.state.learner.model.state_dict()  # type: ignore[union-attr]
    for key, value in resumed.loop.state.learner.model.state_dict().items():  # type: ignore[union-attr]
        assert torch.equal(value, expected[key]), key
    a, b = reference.loop.state.adaptation, resumed.loop.state.adaptation
    assert a is not None
    assert b is not None
    assert (
        (a.active, a.switch.inputs.count)
        == (b.active, b.switch.inputs.count)
        == ("d0", a.switch.inputs.count)
    )
    assert a.switch.inputs.total is not None
    assert b.switch.inputs.total is not None
    assert torch.equal(a.switch.inputs.total, b.switch.inputs.total)
