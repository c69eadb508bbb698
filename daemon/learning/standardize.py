"""Running per-feature input standardisation, part of the model so serving applies it too.

:class:`RunningStandardizer` keeps the inputs' running mean and variance in buffers (saved with
the weights in every snapshot, so ``HotModel``, ``driftd infer`` and the int8 copy standardise
exactly as the trainer did). The learner calls :meth:`RunningStandardizer.update` after each
batch is scored; :meth:`~RunningStandardizer.forward` is pure.

The statistics are Welford's (Chan et al.'s batch merge), accumulated in float64; once
``horizon`` events have been seen, older events weigh exponentially less (an effective window
of ``horizon`` events), so a stream whose inputs keep moving stays standardised. A feature
with (almost) no variance yet is centred but not scaled up beyond ``1 / min_std``, and
standardised values are clipped to ``±clip``; once warm, a rare value beyond 20 standard
deviations enters the statistics as if at that bound (a shift, most of a batch out there,
enters as it is): one outlier cannot blow up the network nor poison the statistics.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

_WARM_EVENTS = 100  # events before the statistics are trusted to bound an update
_OUTLIER_STDS = 20.0  # values past this many standard deviations (or 1.0) enter as if at it
_SHIFT_ROWS = 8  # ... unless at least this many rows, and most of the batch, lie past it


class RunningStandardizer(nn.Module):
    """``(x - mean) / std`` per feature, from running statistics of the inputs seen so far.

    Args:
        n_features: Width of the flat input.
        horizon: Events after which the statistics forget exponentially (effective window).
        min_std: Floor of the standard deviation used to scale.
        clip: Standardised values are clipped to ``[-clip, clip]``.
    """

    count: Tensor
    mean: Tensor
    m2: Tensor
    scale: Tensor
    shift: Tensor

    def __init__(
        self, n_features: int, *, horizon: int = 10_000, min_std: float = 1e-3, clip: float = 8.0
    ) -> None:
        super().__init__()
        self.horizon = horizon
        self.min_std = min_std
        self.clip = clip
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(n_features, dtype=torch.float64))
        self.register_buffer("m2", torch.zeros(n_features, dtype=torch.float64))
        # What forward applies, in the inputs' dtype: derived from the statistics on update.
        self.register_buffer("shift", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(n_features))

    def forward(self, x: Tensor) -> Tensor:
        """Standardise ``x`` with the statistics as of the last :meth:`update` (identity before)."""
        return ((x - self.shift) * self.scale).clamp_(-self.clip, self.clip)

    @torch.no_grad()
    def update(self, x: Tensor) -> None:
        """Merge a batch of inputs into the statistics (non-finite rows are skipped)."""
        batch = x.detach().to(torch.float64).reshape(len(x), -1)
        batch = batch[torch.isfinite(batch).all(dim=1)]
        n = len(batch)
        if n == 0:
            return
        if self.count >= _WARM_EVENTS:
            batch = self._winsorised(batch)
        seen = min(float(self.count), float(self.horizon))
        total = seen + n
        batch_mean = batch.mean(dim=0)
        delta = batch_mean - self.mean
        self.mean.add_(delta * (n / total))
        batch_m2 = ((batch - batch_mean) ** 2).sum(dim=0)
        decay = seen / max(float(self.count), 1.0)
        self.m2.mul_(decay).add_(batch_m2 + delta**2 * (seen * n / total))
        self.count.fill_(total)
        self.refresh()

    @torch.no_grad()
    def refresh(self) -> None:
        """Derive what :meth:`forward` applies from the statistics (after they were changed)."""
        total = float(self.count)
        if total <= 0:
            return
        std = (self.m2 / total).sqrt().clamp_(min=self.min_std)
        self.shift.copy_(self.mean)
        self.scale.copy_(1.0 / std)

    def _winsorised(self, batch: Tensor) -> Tensor:
        """Clip rare far outliers (a poison 3e38 moves the statistics by a bounded step).

        A feature where most of the batch (and at least a few rows) lies far out has moved:
        its values enter as they are, so the statistics follow a real shift at once.
        """
        std = (self.m2 / self.count).sqrt().clamp(min=self.min_std)
        reach = (_OUTLIER_STDS * std).clamp(min=1.0)
        low, high = self.mean - reach, self.mean + reach
        beyond = ((batch < low) | (batch > high)).sum(dim=0)
        shifted = (beyond >= _SHIFT_ROWS) & (beyond * 2 > len(batch))
        clipped = torch.minimum(torch.maximum(batch, low), high)
        return torch.where(shifted, batch, clipped)

    def extra_repr(self) -> str:
        """The settings, for ``print(model)``."""
        return f"horizon={self.horizon}, min_std={self.min_std}, clip={self.clip}"


def standardizer_of(model: nn.Module) -> RunningStandardizer | None:
    """The model's input standardiser, if it has one (``model.inputs``)."""
    inputs = getattr(model, "inputs", None)
    return inputs if isinstance(inputs, RunningStandardizer) else None
