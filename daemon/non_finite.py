"""Events whose prequential loss is not finite: out of the batch, into the dead-letter sink.

The decoder accepts any value finite in float32, yet such a value (``3e38``) can overflow the
model. The learner drops those rows (:attr:`~driftd.learning.learner.StepReport.dropped`);
:func:`split_dropped` gives the loop the batch without them, for everything downstream (drift
monitor, replay, head scores, pruning, the gate's label window), and their rejections, which
keep the original record bytes.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from driftd.decode import DecodedBatch
from driftd.records import Rejection

REASON = "non_finite_loss"
_DETAIL = "the prequential loss of this event is not finite (its values overflow the model)"


def split_dropped(
    batch: DecodedBatch, dropped: torch.Tensor
) -> tuple[DecodedBatch, list[Rejection]]:
    """The batch without the rows ``dropped`` marks, and one rejection per dropped row."""
    mask = dropped.cpu()
    rows = mask.nonzero()[:, 0].tolist()
    rejections = [Rejection(batch.records[row], REASON, _DETAIL) for row in rows]
    keep = ~mask
    kept = keep.tolist()
    return replace(
        batch,
        records=[record for record, ok in zip(batch.records, kept, strict=True) if ok],
        x=batch.x[keep],
        y=batch.y[keep],
        labelled=batch.labelled[keep],
        timestamps=batch.timestamps[keep.numpy()],
        domains=[domain for domain, ok in zip(batch.domains, kept, strict=True) if ok],
        rejections=[],
    ), rejections
