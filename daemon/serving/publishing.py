"""The loop's publish step: gate a snapshot before it is saved, then report and announce it.

Every snapshot is saved (it holds the offsets that get committed); :class:`SnapshotPublisher`
decides, before the save, whether it is also *published* (``LATEST`` moves), writes the verdict
into the manifest (``published`` by the store, ``gate``, ``publish_gate``, baseline metrics),
and after the save reports it and announces a published one to the notifier, best effort.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from driftd.decode import DecodedBatch
from driftd.ports import (
    NullSnapshotNotifier,
    Snapshot,
    SnapshotNotifier,
    SnapshotPublished,
    SnapshotStore,
    Telemetry,
)
from driftd.serving.publish_gate import PublishDecision, PublishGate, PublishPolicy, decide

log = logging.getLogger("driftd.loop")

_PUBLISH_ALL = PublishPolicy(enabled=False)


class SnapshotPublisher:
    """Gate, report and announce snapshots for the training loop.

    Args:
        store: Where snapshots are saved (for their location in notifications).
        telemetry: Receives published versions, refusals and notification failures.
        gate: The quality gate (None: every snapshot is published).
        notifier: Told of each published snapshot (None: nobody).
    """

    def __init__(
        self,
        *,
        store: SnapshotStore,
        telemetry: Telemetry,
        gate: PublishGate | None = None,
        notifier: SnapshotNotifier | None = None,
    ) -> None:
        self.store = store
        self.telemetry = telemetry
        self.gate = gate
        self.notifier = notifier or NullSnapshotNotifier()

    @property
    def published_version(self) -> int | None:
        """The version the gate knows as published, if any."""
        gate = self.gate
        return None if gate is None or gate.reference is None else gate.reference.version

    def drifted(self) -> None:
        """The stream changed: the published loss no longer compares (see the gate)."""
        if self.gate is not None:
            self.gate.drifted()

    def observe(self, batch: DecodedBatch) -> None:
        """Feed one scored batch's labels to the gate's no-change baseline."""
        if self.gate is not None:
            self.gate.observe(batch.y, batch.labelled)

    def decide(self, snapshot: Snapshot) -> tuple[Snapshot, PublishDecision]:
        """The gate's verdict, and the snapshot with it recorded in the manifest."""
        metrics: dict[str, Any] = dict(snapshot.manifest.get("metrics") or {})
        loss = metrics.get("prequential_loss")
        gate = self.gate
        extra: dict[str, Any] = {}
        if gate is None:
            decision = decide(_PUBLISH_ALL, loss=loss, baseline_loss=None, reference=None)
        else:
            decision = gate.decide(loss)
            metrics["baseline_loss"] = decision.baseline_loss
            metrics["baseline_accuracy"] = gate.labels.baseline_accuracy()
            extra["publish_gate"] = gate.state_dict()
        manifest = {
            **snapshot.manifest,
            "metrics": metrics,
            "gate": decision.as_manifest(),
            **extra,
        }
        return replace(snapshot, manifest=manifest), decision

    def saved(self, saved: Snapshot, decision: PublishDecision) -> bool:
        """After a durable save: report the verdict, announce it if published; True if so."""
        if not decision.published:
            self.telemetry.snapshot_unpublished(decision.reason)
            log.warning(
                "snapshot %d kept but not published: %s (loss %s, baseline %s, published "
                "version %s loss %s)", saved.version, decision.reason, decision.loss,
                decision.baseline_loss, decision.reference_version, decision.reference_loss,
                extra={"event": "snapshot_unpublished", "version": saved.version,
                       "reason": decision.reason},
            )  # fmt: skip
            return False
        self.telemetry.snapshot_published(saved.version)
        if self.gate is not None:
            self.gate.published(saved.version, decision.loss)
        manifest = saved.manifest
        event = SnapshotPublished(
            version=saved.version,
            path=self.store.location(saved.version),
            created_at=float(manifest["created_at"]),
            metrics=dict(manifest.get("metrics") or {}),
            watermark=manifest.get("watermark"),
        )
        try:
            self.notifier.published(event)
        except Exception as error:  # notifications are best effort: training goes on
            log.warning("snapshot %d publish notification failed: %s", saved.version, error)
            self.telemetry.snapshot_notification_failed(type(error).__name__)
        return True
