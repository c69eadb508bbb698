"""The group's batch and step report, so drift, adaptation and pruning decide the same everywhere.

With ``distributed.sync=allreduce`` the replicas are identical at every step; if every rank's
drift monitor, adaptation policy and pruner also see the same inputs, every rank takes the same
decisions at the same step, with no decision sent anywhere. These functions make those inputs:
each rank's decoded rows and its part of a step's report, gathered in rank order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from driftd.decode import DecodedBatch
from driftd.learning.learner import StepReport
from driftd.ports import TrainerGroup


def gather_batch(group: TrainerGroup, batch: DecodedBatch) -> DecodedBatch:
    """Every rank's valid rows, in rank order (other ranks' records without their bytes).

    Rejections stay with the rank that dead-letters them.
    """
    records = [record._replace(value=b"", key=None) for record in batch.records]
    payload = (records, batch.x, batch.y, batch.labelled, batch.timestamps, list(batch.domains))
    parts = group.all_gather(payload)
    mine = group.rank
    return DecodedBatch(
        records=[
            record
            for rank, part in enumerate(parts)
            for record in (batch.records if rank == mine else part[0])
        ],
        x=torch.cat([part[1] for part in parts]),
        y=torch.cat([part[2] for part in parts]),
        labelled=torch.cat([part[3] for part in parts]),
        timestamps=np.concatenate([part[4] for part in parts]),
        domains=[domain for part in parts for domain in part[5]],
        rejections=list(batch.rejections),
    )


@dataclass(frozen=True)
class _ReportPart:
    """One rank's share of a step's report."""

    n_events: int
    n_learned: int
    n_scored: int
    loss_sum: float
    correct: float
    classified: bool
    event_losses: torch.Tensor
    predictions: torch.Tensor
    skipped: str | None
    dropped: torch.Tensor


def gather_report(group: TrainerGroup, report: StepReport, n_rows: int) -> StepReport:
    """The step's report over every rank's rows of the part, in rank order.

    ``n_rows``: the rows this rank's report is about (its ``dropped`` mask's length).
    """
    scored = len(report.event_losses)
    dropped = (
        report.dropped if report.dropped is not None else torch.zeros(n_rows, dtype=torch.bool)
    )
    mine = _ReportPart(
        report.n_events, report.n_learned, scored, (report.loss or 0.0) * scored,
        (report.accuracy or 0.0) * scored, report.accuracy is not None,
        report.event_losses.cpu(), report.predictions.cpu(), report.skipped, dropped.cpu(),
    )  # fmt: skip
    parts: list[_ReportPart] = group.all_gather(mine)
    n_scored = sum(part.n_scored for part in parts)
    classified = any(part.classified for part in parts)
    drops = torch.cat([part.dropped for part in parts])
    device = report.event_losses.device
    return StepReport(
        n_events=sum(part.n_events for part in parts),
        n_learned=sum(part.n_learned for part in parts),
        loss=sum(part.loss_sum for part in parts) / n_scored if n_scored else None,
        accuracy=sum(part.correct for part in parts) / n_scored
        if n_scored and classified
        else None,
        event_losses=torch.cat([part.event_losses for part in parts]).to(device),
        predictions=torch.cat([part.predictions for part in parts]).to(device),
        lr=report.lr,
        skipped=next((part.skipped for part in parts if part.skipped is not None), None),
        dropped=drops if bool(drops.any()) else None,
    )
