"""Settings and the wired loop for a :class:`~driftd.library.Learner`: the daemon's own.

The settings go through :func:`~driftd.settings.root.load_settings` (the same validation and
field-path errors as ``driftd run``); the loop is :func:`driftd.app.build_trainer`'s, wired
with in-memory edges: no broker, no disk, no metrics endpoint, no notifier.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from driftd.adapters.memory import DiscardingDeadLetterSink
from driftd.adapters.memory_snapshot_store import InMemorySnapshotStore
from driftd.adapters.memory_source import InMemoryRecordSource
from driftd.app import Trainer, build_trainer
from driftd.decode import DecodedBatch
from driftd.learning.learner import StepReport
from driftd.loop import TrainingLoop
from driftd.loop_progress import LoopProgress
from driftd.ports import NullSnapshotNotifier, Snapshot
from driftd.records import Record
from driftd.settings.root import Settings, load_settings, redacted

from .events import EventTelemetry

#: The sections a saved learner keeps with its snapshot (what shapes learning, no endpoints).
LEARNING_SECTIONS = ("event", "model", "learner", "lr", "drift", "adaptation", "pruning")


def resolve_settings(
    settings: Settings | None, settings_file: str | Path | None, overrides: Mapping[str, Any]
) -> Settings:
    """``settings`` as given, or loaded from every source with ``overrides`` winning.

    Overrides are nested sections (``model={"n_classes": 3}``), merged into ``settings``'
    values when both are given.

    Raises:
        ConfigurationError: A setting is invalid (the message names the field).
    """
    if settings is not None and not overrides:
        return settings
    base: dict[str, Any] = {}
    if settings is not None:
        base = settings.model_dump(exclude={"config"}, exclude_unset=True)
    return load_settings(settings_file, **merged(base, overrides))


def merged(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` laid over it, nested mappings merged key by key."""
    result = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


def learning_sections(settings: Settings) -> dict[str, Any]:
    """The sections saved with a learner's snapshot, JSON-ready."""
    data = redacted(settings)
    return {name: data[name] for name in LEARNING_SECTIONS}


def with_n_features(settings: Settings, n_features: int) -> Settings:
    """``settings`` with ``model.n_features`` fixed (the first batch's width, when unset)."""
    if settings.model.n_features == n_features:
        return settings
    model = settings.model.model_copy(update={"n_features": n_features})
    return settings.model_copy(update={"model": model})


def offline_trainer(
    settings: Settings,
    records: Sequence[Record] = (),
    *,
    telemetry: EventTelemetry,
    on_report: Callable[[StepReport, DecodedBatch], None],
    on_step: Callable[[LoopProgress], None] | None = None,
    store: InMemorySnapshotStore | None = None,
) -> Trainer:
    """The daemon's trainer on in-memory edges, with ``records`` as its topic.

    No broker, no disk, no metrics endpoint, no notifier; dead letters are discarded.
    """
    return build_trainer(
        settings,
        source=InMemoryRecordSource(records),
        store=store or InMemorySnapshotStore(keep=1),
        telemetry=telemetry,
        dead_letters=DiscardingDeadLetterSink(),
        notifier=NullSnapshotNotifier(),
        serve_metrics=False,
        on_step=on_step,
        on_report=on_report,
    )


def build_loop(
    settings: Settings,
    *,
    telemetry: EventTelemetry,
    on_report: Callable[[StepReport, DecodedBatch], None],
    resume_from: Snapshot | None = None,
) -> TrainingLoop:
    """The daemon's loop on in-memory edges, resumed from ``resume_from`` if given.

    The loop is driven one polled batch at a time (:meth:`TrainingLoop.process`); its source
    stays empty and its snapshot store holds at most the snapshot it resumed from.
    """
    store = InMemorySnapshotStore(keep=1)
    if resume_from is not None:
        store.save(resume_from)
    return offline_trainer(settings, telemetry=telemetry, on_report=on_report, store=store).loop
