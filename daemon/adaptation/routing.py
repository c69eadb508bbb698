"""Routing a batch by its events' ``domain`` field: per-domain splits of one batch."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from driftd.decode import DecodedBatch


def split_by_domain(batch: DecodedBatch) -> list[tuple[str | None, DecodedBatch]]:
    """The batch's rows grouped by their ``domain`` field, groups in order of first appearance.

    Events without a domain form the ``None`` group. A batch of one domain (the common case,
    checked first) comes back whole.
    """
    domains = batch.domains
    first = domains[0] if len(domains) else None
    if all(domain == first for domain in domains):
        return [(first, batch)]
    groups: dict[str | None, list[int]] = {}
    for row, domain in enumerate(domains):
        groups.setdefault(domain, []).append(row)
    return [(domain, select_rows(batch, rows)) for domain, rows in groups.items()]


def select_rows(batch: DecodedBatch, rows: list[int]) -> DecodedBatch:
    """A batch of the given rows only (rejections stay with the first split only)."""
    index = torch.tensor(rows, dtype=torch.int64)
    return replace(
        batch,
        records=[batch.records[r] for r in rows],
        x=batch.x[index],
        y=batch.y[index],
        labelled=batch.labelled[index],
        timestamps=batch.timestamps[np.asarray(rows, dtype=np.int64)],
        domains=[batch.domains[r] for r in rows],
        rejections=[],
    )
