"""One ``learn_many`` call as one poll of the daemon's loop: its records and its step size.

The rows become the daemon's JSON events (``{"x": [...], "y": ..., "domain": ...}``), numbered
in one partition of their own, so the loop decodes and learns them exactly as events read from
Kafka; nothing in the learning path knows they came from a library call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from driftd.decode import DecodedBatch
from driftd.learning.learner import StepReport
from driftd.records import Record

TOPIC = "driftd-learner"  #: the partition a learner's events are numbered in


def records_of(
    features: np.ndarray, targets: Sequence[Any], domains: Any, *, first_offset: int
) -> list[Record]:
    """The events of one call, numbered from ``first_offset``.

    Raises:
        ValueError: ``domains`` is a sequence of another length than the rows.
    """
    dumps = orjson.dumps
    domain_of = _domains(domains, len(targets))
    return [
        Record(TOPIC, 0, first_offset + i, dumps({"x": row, "y": target, "domain": domain}))
        for i, (row, target, domain) in enumerate(
            zip(features.tolist(), targets, domain_of, strict=True)
        )
    ]


class CallPredictions:
    """What the loop predicted for each row of one call, before learning it.

    Filled by the loop's ``on_report`` (one report per step, per domain part): class indices
    (-1 where none was made: a row whose loss overflowed, dead-lettered by the daemon), or
    ``(n, n_outputs)`` values (NaN there).

    Args:
        first_offset: The offset of the call's first row.
        n_rows: Rows in the call.
        n_outputs: Values per row for regression; None for classification.
    """

    def __init__(self, first_offset: int, n_rows: int, n_outputs: int | None) -> None:
        self.first_offset = first_offset
        self.rows: np.ndarray = (
            np.full(n_rows, -1, dtype=np.int64)
            if n_outputs is None
            else np.full((n_rows, n_outputs), np.nan)
        )

    def collect(self, report: StepReport, batch: DecodedBatch) -> int | None:
        """Keep one step's predictions; return the events seen up to its last row."""
        if not batch.records:
            return None
        offsets = np.fromiter((r.offset for r in batch.records), np.int64, len(batch.records))
        self.rows[offsets - self.first_offset] = report.predictions.cpu().numpy()
        return int(offsets.max()) + 1


def _domains(domains: Any, n_rows: int) -> Sequence[str | None]:
    if domains is None or isinstance(domains, str):
        return [domains] * n_rows
    named = [None if domain is None else str(domain) for domain in domains]
    if len(named) != n_rows:
        raise ValueError(f"{len(named)} domains for {n_rows} rows")
    return named
