"""The ports: the small protocols the core talks to, and the values that cross them.

Adapters (:mod:`driftd.adapters`) implement them by technology; the loops and the composition
roots see only these names. One module per side:

* :mod:`~driftd.ports.clock`: :class:`Clock` (and the real :class:`SystemClock`);
* :mod:`~driftd.ports.records`: :class:`RecordSource`, :class:`Decoder`, :class:`DeadLetterSink`;
* :mod:`~driftd.ports.snapshots`: :class:`Snapshot`, :class:`SnapshotStore`,
  :class:`SnapshotNotifier` and :class:`SnapshotPublished`;
* :mod:`~driftd.ports.telemetry`: the training loop's :class:`Telemetry`;
* :mod:`~driftd.ports.group`: :class:`TrainerGroup`, the collectives of a trainer group;
* :mod:`~driftd.ports.serving`: :class:`Predictor`, :class:`PredictionSink`,
  :class:`InferenceTelemetry` and the values they carry (:class:`Predictions`, ...).

Importing them stays light (no torch, no numpy): the CLI and the consumer child start without.
"""

from driftd.ports.clock import Clock, SystemClock
from driftd.ports.group import TrainerGroup
from driftd.ports.records import DeadLetterSink, Decoder, RecordSource
from driftd.ports.serving import (
    RELOAD_INTERVAL_S,
    InferenceTelemetry,
    ModelNotReadyError,
    ModelSwapped,
    Predictions,
    PredictionSink,
    Predictor,
    ReloadRefused,
)
from driftd.ports.snapshots import (
    NullSnapshotNotifier,
    Snapshot,
    SnapshotNotifier,
    SnapshotPublished,
    SnapshotStore,
    SnapshotStoreUnreachableError,
    UnreadableSnapshotsError,
)
from driftd.ports.telemetry import Telemetry

__all__ = [
    "RELOAD_INTERVAL_S",
    "Clock",
    "DeadLetterSink",
    "Decoder",
    "InferenceTelemetry",
    "ModelNotReadyError",
    "ModelSwapped",
    "NullSnapshotNotifier",
    "PredictionSink",
    "Predictions",
    "Predictor",
    "RecordSource",
    "ReloadRefused",
    "Snapshot",
    "SnapshotNotifier",
    "SnapshotPublished",
    "SnapshotStore",
    "SnapshotStoreUnreachableError",
    "SystemClock",
    "Telemetry",
    "TrainerGroup",
    "UnreadableSnapshotsError",
]
