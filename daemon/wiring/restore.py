"""Restoring a trainer: the newest durable snapshot, the publish gate's reference, transfer.

The restore policy of ``driftd run``: resume from the newest durable snapshot, refuse to start
blank over unreadable ones, or start fresh (optionally from another run's weights).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from driftd.ports import Clock, Snapshot, SnapshotStore, SystemClock, UnreadableSnapshotsError
from driftd.pruning.int8_export import Int8Exporter
from driftd.records import TopicPartition
from driftd.serving.publish_gate import LabelWindow, PublishGate, PublishPolicy
from driftd.settings.root import Settings
from driftd.training_state import TrainingState
from driftd.wiring.adaptation import make_adaptation
from driftd.wiring.learning import (
    configured_n_features,
    learner_builder,
    loss_name,
    model_config_from_settings,
)
from driftd.wiring.pruning import pruning_builder

log = logging.getLogger("driftd.app")


def make_publish_gate(settings: Settings) -> PublishGate:
    """The quality gate the settings describe (its reference is set by :func:`restore_state`)."""
    snapshots = settings.snapshots
    policy = PublishPolicy(
        enabled=snapshots.gate_enabled,
        margin=snapshots.gate_margin,
        baseline=snapshots.gate_baseline,
        baseline_margin=snapshots.gate_baseline_margin,
    )
    labels = LabelWindow(
        settings.learner.metrics_window,
        task=settings.model.task,
        loss=loss_name(settings),
        huber_delta=settings.learner.huber_delta,
    )
    return PublishGate(policy, labels)


def _restore_gate(gate: PublishGate, store: SnapshotStore, newest: Snapshot | None) -> None:
    """Baseline window from the newest snapshot; reference from the published one."""
    if newest is not None and isinstance(newest.manifest.get("publish_gate"), dict):
        gate.load_state_dict(newest.manifest["publish_gate"])
    published_version = store.latest_version()
    if published_version is None:
        return
    if newest is not None and newest.version == published_version:
        published: Snapshot | None = newest
    else:
        published = store.load_latest()
    if published is None:
        return
    saved_gate = published.manifest.get("gate") or {}
    loss = saved_gate.get("loss", (published.manifest.get("metrics") or {}).get("prequential_loss"))
    gate.published(published.version, None if loss is None else float(loss))


def restore_state(
    settings: Settings,
    store: SnapshotStore,
    gate: PublishGate | None = None,
    clock: Clock | None = None,
    *,
    read_other: Callable[[Path], Snapshot | None] | None = None,
) -> TrainingState:
    """The training state from the newest durable snapshot (published or not), or a fresh one.

    Training resumes from the newest *durable* version, never just the published one: it holds
    the newest offsets, which were committed. ``gate`` (if given) gets its baseline window and
    its published reference back. ``clock`` drives the pruning trigger (system clock if None).
    ``read_other`` reads the newest snapshot of another directory, for a fresh start's warm
    start or structure transfer (``adaptation.warm_start_dir`` / ``structure_from``).
    """
    state = TrainingState(
        config_for=lambda n: model_config_from_settings(settings.model, n),
        build_learner=learner_builder(settings),
        n_features=configured_n_features(settings),
        build_adaptation=lambda learner: make_adaptation(settings, learner),
        build_pruning=pruning_builder(settings, clock or SystemClock()),
        int8=(
            Int8Exporter(window_events=settings.pruning.replay_events, task=settings.model.task)
            if settings.pruning.int8_export
            else None
        ),
    )
    snapshot = store.load_newest()
    if snapshot is None and store.versions():
        versions = store.versions()
        raise UnreadableSnapshotsError(
            f"{len(versions)} snapshot(s) exist (newest {store.location(versions[-1])}) but "
            "none is readable: refusing to start a blank model at the committed offsets "
            "(everything before them would be in no model). Move them away to start afresh."
        )
    if gate is not None:
        _restore_gate(gate, store, snapshot)
    if snapshot is None:
        log.info("no snapshot found: starting fresh", extra={"event": "start_fresh"})
        _transfer(settings, state, read_other)
    else:
        state.restore(snapshot)
    # Number past every version on disk, even unreadable ones the store fell back from.
    newest_present = max(store.versions(), default=0)
    if newest_present > (state.snapshot_version or 0):
        state.snapshot_version = newest_present
    if snapshot is None:
        return state
    log.info(
        "resumed from snapshot %d at step %d, offsets %s",
        snapshot.version, state.steps, _offsets_text(state.offsets),
        extra={"event": "resumed", "version": snapshot.version},
    )  # fmt: skip
    return state


def _transfer(
    settings: Settings,
    state: TrainingState,
    read_other: Callable[[Path], Snapshot | None] | None,
) -> None:
    """Warm start (weights) or structure transfer (architecture) from another snapshot dir."""
    adaptation = settings.adaptation
    source = adaptation.warm_start_dir or adaptation.structure_from
    if source is None or not adaptation.enabled:
        return
    if read_other is None:
        raise ValueError("adaptation transfer: no reader for another snapshot directory")
    weights = adaptation.warm_start_dir is not None
    other = read_other(Path(source))
    if other is None:
        raise FileNotFoundError(f"adaptation transfer: no readable snapshot under {source}")
    loaded = state.start_from(other, weights=weights)
    log.info(
        "%s from snapshot %d of %s: %d tensors loaded",
        "warm start" if weights else "structure transfer", other.version, source, len(loaded),
        extra={"event": "transfer", "source": str(source), "tensors": loaded},
    )  # fmt: skip


def _offsets_text(offsets: dict[TopicPartition, int]) -> str:
    return ", ".join(f"{tp}={offset}" for tp, offset in sorted(offsets.items())) or "none"
