"""Reporting what the drift monitor and the adaptation did: telemetry plus one log line each."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from driftd.adaptation.outcomes import StepOutcome
from driftd.ports import Telemetry
from driftd.records import Record

log = logging.getLogger("driftd.adaptation")


def report_outcome(
    outcome: StepOutcome,
    records: Sequence[Record],
    telemetry: Telemetry,
    *,
    step: int,
    offsets: str,
) -> None:
    """Count each drift and adaptation and log it with the step and the record's offset."""
    for drift in outcome.drifts:
        telemetry.drift_detected(drift.detector, drift.signal, drift.kind)
        record = records[drift.row]
        log.info(
            "%s: %s on %s at step %d (value %d), level %.4g -> %.4g, record %s[%d]@%d",
            drift.kind, drift.detector, drift.signal, step, drift.index, drift.before,
            drift.after, record.topic, record.partition, record.offset,
            extra={"event": "drift_detected", "kind": drift.kind, "detector": drift.detector,
                   "signal": drift.signal, "step": step, "index": drift.index,
                   "before": drift.before, "after": drift.after, "topic": record.topic,
                   "partition": record.partition, "offset": record.offset, "offsets": offsets},
        )  # fmt: skip
    for adapted in outcome.adaptations:
        telemetry.adapted(adapted.kind)
        log.info(
            "adapted: %s (domain %s) at step %d: %s",
            adapted.kind, adapted.domain, step, adapted.detail,
            extra={"event": "adapted", "kind": adapted.kind, "domain": adapted.domain,
                   "step": step},
        )  # fmt: skip
