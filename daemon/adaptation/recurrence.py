"""Recognising a recurring domain early: by the loss (labelled events) or by the inputs (none).

Two tests the adaptation uses to switch back to a stored head without waiting for its full
scoring window (and :func:`change_point`, which finds where the post-drift events begin):

- :func:`clearly_better`: a one-sided paired test on per-event losses. On the same post-drift
  events, the head in use when the drift was detected and a stored head each have a loss; the
  stored head is *clearly* better when the mean of the differences exceeds ``z`` standard
  errors. Evidence accumulates step by step (a sequential test), so a head that fits well is
  switched in after a few dozen events, while a doubtful one waits for the full window.
- :class:`InputStats`: per-feature count, sum and sum of squares of the inputs of a domain (a
  fingerprint needing no labels). :meth:`InputStats.distance` is the mean standardized
  difference of the per-feature means of two fingerprints (Cohen's d, averaged over features):
  after a covariate drift on an unlabelled stream, the stored head whose domain's inputs look
  like the new ones is the recurring domain.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from driftd.learning.tensor_state import TensorState


def clearly_better(baseline: torch.Tensor, candidate: torch.Tensor, *, z: float) -> bool:
    """Whether ``candidate``'s per-event losses are below ``baseline``'s beyond ``z`` std errors.

    Args:
        baseline: Per-event losses of the head the drift was detected with.
        candidate: Per-event losses of a stored head on the same events.
        z: One-sided threshold in standard errors of the mean difference (2.33: about 1 %
            false switches when both heads are equally good and the differences near normal).
    """
    n = len(baseline)
    if n < 2 or len(candidate) != n:
        return False
    differences = (baseline - candidate).to(torch.float64)
    mean = float(differences.mean())
    error = float(differences.std()) / math.sqrt(n)
    return mean > 0.0 and mean > z * error


def change_point(losses: torch.Tensor, *, min_after: int = 2) -> int:
    """Where the mean of ``losses`` most likely rose: the start index of the higher level.

    The split maximising the CUSUM statistic of a mean increase,
    ``(mean after - mean before) * sqrt(k (n - k) / n)``, with at least one event before and
    ``min_after`` after (0 when there are too few events to split).
    """
    n = len(losses)
    if n < min_after + 1:
        return 0
    sums = losses.to(torch.float64).cumsum(0)
    k = torch.arange(1, n - min_after + 1, dtype=torch.float64)
    before = sums[: n - min_after] / k
    after = (sums[-1] - sums[: n - min_after]) / (n - k)
    statistic = (after - before) * torch.sqrt(k * (n - k) / n)
    return int(statistic.argmax()) + 1


@dataclass
class InputStats:
    """Per-feature moments of the inputs seen (float64; inputs flattened per event).

    Attributes:
        count: Events seen.
        total: Per-feature sum (None before the first event).
        squares: Per-feature sum of squares.
    """

    count: int = 0
    total: torch.Tensor | None = None
    squares: torch.Tensor | None = None

    def update(self, x: torch.Tensor) -> None:
        """Add the events (rows) of ``x`` (rows holding a NaN or infinity are left out)."""
        if len(x) == 0:
            return
        flat = x.detach().reshape(len(x), -1).to("cpu", torch.float64)
        flat = flat[torch.isfinite(flat).all(dim=1)]
        if len(flat) == 0:
            return
        if self.total is None or self.squares is None or self.total.shape != flat.shape[1:]:
            self.count = 0
            self.total, self.squares = (
                flat.new_zeros(flat.shape[1:]),
                flat.new_zeros(flat.shape[1:]),
            )
        self.total += flat.sum(0)
        self.squares += flat.square().sum(0)
        self.count += len(flat)

    def merged(self, other: InputStats) -> InputStats:
        """A new fingerprint of both sets of events."""
        if other.total is None or other.squares is None:
            return self.copy()
        if self.total is None or self.squares is None or self.total.shape != other.total.shape:
            return other.copy()
        return InputStats(
            self.count + other.count, self.total + other.total, self.squares + other.squares
        )

    def copy(self) -> InputStats:
        """An independent copy."""
        clone = None if self.total is None else self.total.clone()
        return InputStats(self.count, clone, None if self.squares is None else self.squares.clone())

    def distance(self, other: InputStats) -> float | None:
        """Mean over features of ``|mean difference| / pooled std`` (None: no common data).

        Each feature's term is capped at 10, so a feature constant in both domains (a border
        pixel) that moved a little cannot outweigh all the others.
        """
        if self.count < 2 or other.count < 2 or self.total is None or other.total is None:
            return None
        if self.total.shape != other.total.shape:
            return None
        (m1, v1), (m2, v2) = self._moments(), other._moments()
        pooled = ((v1 + v2) / 2.0).clamp_min(1e-12).sqrt()
        return float(((m1 - m2).abs() / pooled).clamp_max(10.0).mean())

    def _moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.total is not None
        assert self.squares is not None
        mean = self.total / self.count
        return mean, (self.squares / self.count - mean.square()).clamp_min(0.0)

    def state_dict(self) -> TensorState:
        """Tensors ``total``/``squares`` (none before the first event) and ``{"count": ...}``."""
        meta = {"count": self.count}
        if self.total is None or self.squares is None:
            return {}, meta
        return {"total": self.total, "squares": self.squares}, meta

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> InputStats:
        """Rebuild from :meth:`state_dict` output."""
        count = int(meta["count"])
        if "total" not in tensors:
            return cls(count)
        return cls(count, tensors["total"].clone(), tensors["squares"].clone())


def early_choice(
    losses: dict[str, torch.Tensor],
    *,
    baseline: str,
    fits: Callable[[str, float], bool],
    z: float,
) -> str | None:
    """The stored head to switch to now, if one both fits and is clearly better than ``baseline``.

    Args:
        losses: Per-event losses of every stored head on the post-drift events so far.
        baseline: The head in use when the drift was detected (stored under its domain).
        fits: Whether a head with that mean loss fits its own domain's reference level.
        z: Threshold of :func:`clearly_better`.
    """
    reference = losses.get(baseline)
    if reference is None:
        return None
    means = {name: float(values.mean()) for name, values in losses.items() if name != baseline}
    fitting = [name for name, mean in means.items() if fits(name, mean)]
    if not fitting:
        return None
    best = min(fitting, key=means.__getitem__)
    return best if clearly_better(reference, losses[best], z=z) else None


def input_choice(
    recent: InputStats,
    fingerprints: dict[str, InputStats],
    *,
    baseline: str,
    max_distance: float,
) -> tuple[str | None, dict[str, float]]:
    """The stored domain whose inputs look like ``recent``, and every distance measured.

    A domain is chosen when its distance is at most ``max_distance`` and below the
    ``baseline`` domain's (the one the covariate drift moved away from).
    """
    distances = {
        name: distance
        for name, stats in fingerprints.items()
        if (distance := recent.distance(stats)) is not None
    }
    candidates = [
        name for name, distance in distances.items()
        if name != baseline and distance <= max_distance
    ]  # fmt: skip
    if not candidates:
        return None, distances
    best = min(candidates, key=distances.__getitem__)
    if baseline in distances and distances[baseline] <= distances[best]:
        return None, distances
    return best, distances
