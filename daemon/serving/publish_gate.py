"""The quality gate: whether a durable snapshot is also *published* (``LATEST`` moves to it).

Every snapshot is saved durably (it holds the offsets the source commits), but inference
workers follow only published ones. A snapshot is published when its recent prequential loss
is

* not worse than the last published snapshot's by more than ``margin`` (relative), and
* not worse than the *no-change baseline* by more than ``baseline_margin`` (relative).

The no-change baseline is the loss of a model that ignores the features and always predicts
what the recent labels look like, over the same recent window:

* classification (cross-entropy): always predicting the window's class frequencies, whose
  cross-entropy is the entropy of those frequencies, ``-sum(p * log p)`` (nats). The majority
  class's frequency is reported too, as the baseline accuracy;
* regression: always predicting the window's mean target, scored with the configured loss
  (``mse``: the variance; ``huber``: the mean Huber loss of the deviations from the mean).

The decision is a pure function (:func:`decide`); :class:`PublishGate` holds the label window
and the published reference around it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

#: Why a snapshot was published (or not): metric label values, stable.
PUBLISHED_REASONS = ("gate_disabled", "first", "passed")
UNPUBLISHED_REASONS = ("regressed", "below_baseline", "unscored", "non_finite")

LossName = Literal["cross_entropy", "mse", "huber"]


@dataclass(frozen=True)
class PublishPolicy:
    """The gate's configuration.

    Attributes:
        enabled: False publishes every snapshot.
        margin: Relative slack over the last published loss (0.05: up to 5 % worse passes).
        baseline: Whether a snapshot must also beat the no-change baseline.
        baseline_margin: Relative slack over the baseline loss.
    """

    enabled: bool = True
    margin: float = 0.05
    baseline: bool = True
    baseline_margin: float = 0.0


@dataclass(frozen=True)
class PublishedReference:
    """The last published snapshot, which a new one must not be much worse than."""

    version: int
    loss: float | None


@dataclass(frozen=True)
class PublishDecision:
    """The gate's verdict on one snapshot, with the numbers it was based on."""

    published: bool
    reason: str
    loss: float | None
    baseline_loss: float | None
    reference_version: int | None
    reference_loss: float | None

    def as_manifest(self) -> dict[str, Any]:
        """The ``gate`` entry of the snapshot's manifest."""
        return {
            "published": self.published,
            "reason": self.reason,
            "loss": self.loss,
            "baseline_loss": self.baseline_loss,
            "reference_version": self.reference_version,
            "reference_loss": self.reference_loss,
        }


def _worse(value: float, reference: float, margin: float) -> bool:
    """Whether loss ``value`` exceeds ``reference`` by more than the relative ``margin``."""
    return value > reference + margin * abs(reference)


def decide(
    policy: PublishPolicy,
    *,
    loss: float | None,
    baseline_loss: float | None,
    reference: PublishedReference | None,
) -> PublishDecision:
    """Decide whether a snapshot with recent ``loss`` is published.

    Args:
        policy: The gate's configuration.
        loss: The snapshot's recent prequential loss (None: no labelled event yet).
        baseline_loss: The no-change baseline over the same window (None: unknown, not checked).
        reference: The last published snapshot (None: nothing published yet).

    Returns:
        The decision. Published reasons: ``gate_disabled``, ``first`` (nothing published yet
        and nothing to compare), ``passed``. Refusals: ``non_finite`` (NaN/inf loss),
        ``unscored`` (no loss while something is published), ``below_baseline``, ``regressed``.
    """
    ref_version = None if reference is None else reference.version
    ref_loss = None if reference is None else reference.loss

    def verdict(published: bool, reason: str) -> PublishDecision:
        return PublishDecision(published, reason, loss, baseline_loss, ref_version, ref_loss)

    if not policy.enabled:
        return verdict(True, "gate_disabled")
    if loss is None:
        return verdict(reference is None, "first" if reference is None else "unscored")
    if not math.isfinite(loss):
        return verdict(False, "non_finite")
    if (
        policy.baseline
        and baseline_loss is not None
        and math.isfinite(baseline_loss)
        and _worse(loss, baseline_loss, policy.baseline_margin)
    ):
        return verdict(False, "below_baseline")
    if ref_loss is not None and math.isfinite(ref_loss) and _worse(loss, ref_loss, policy.margin):
        return verdict(False, "regressed")
    return verdict(True, "passed" if reference is not None or policy.baseline else "first")


class LabelWindow:
    """The labels of roughly the last ``size`` labelled events, for the no-change baseline.

    Kept per mini-batch like the prequential window: class counts for classification, the
    target rows for regression. At most ``size`` events plus one batch are held.

    Args:
        size: Events in the window (the learner's ``metrics_window``).
        task: ``classification`` or ``regression``.
        loss: The learner's loss, which the baseline is scored with.
        huber_delta: The Huber loss's delta (``loss="huber"`` only).
    """

    def __init__(
        self,
        size: int,
        *,
        task: Literal["classification", "regression"],
        loss: LossName,
        huber_delta: float = 1.0,
    ) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size = size
        self.task = task
        self.loss = loss
        self.huber_delta = huber_delta
        self._batches: deque[np.ndarray] = deque()
        self._count = 0

    @property
    def count(self) -> int:
        """Labelled events in the window."""
        return self._count

    def update(self, y: torch.Tensor, labelled: torch.Tensor) -> None:
        """Add the labelled targets of one batch (unlabelled and non-finite rows are ignored)."""
        mask = labelled.detach().cpu().numpy().astype(bool)
        targets = y.detach().cpu().numpy()[mask]
        if targets.dtype.kind == "f":  # one NaN target would make the baseline NaN for good
            targets = targets[np.isfinite(targets.reshape(len(targets), -1)).all(axis=1)]
        if not len(targets):
            return
        if self.task == "classification":
            self._append(np.bincount(targets.astype(np.int64)), len(targets))
        else:
            self._append(targets.astype(np.float64).reshape(len(targets), -1), len(targets))

    def _append(self, entry: np.ndarray, count: int) -> None:
        self._batches.append(entry)
        self._count += count
        while len(self._batches) > 1 and self._count - self._entry_count(self._batches[0]) >= (
            self.size
        ):
            self._count -= self._entry_count(self._batches.popleft())

    def _entry_count(self, entry: np.ndarray) -> int:
        return int(entry.sum()) if self.task == "classification" else len(entry)

    def baseline_loss(self) -> float | None:
        """The no-change baseline's mean loss over the window (None when empty)."""
        if not self._count:
            return None
        if self.task == "classification":
            p = self._frequencies()
            p = p[p > 0]
            return float(-(p * np.log(p)).sum()) if self.loss == "cross_entropy" else None
        rows = np.concatenate(list(self._batches))
        deviation = rows - rows.mean(axis=0)
        if self.loss == "mse":
            return float((deviation**2).mean())
        if self.loss == "huber":
            a, delta = np.abs(deviation), self.huber_delta
            huber = np.where(a <= delta, 0.5 * a**2, delta * (a - 0.5 * delta))
            return float(huber.mean())
        return None

    def baseline_accuracy(self) -> float | None:
        """The majority class's frequency in the window (classification; None otherwise)."""
        if not self._count or self.task != "classification":
            return None
        return float(self._frequencies().max())

    def _frequencies(self) -> np.ndarray:
        width = max(len(entry) for entry in self._batches)
        counts = np.zeros(width, dtype=np.float64)
        for entry in self._batches:
            counts[: len(entry)] += entry
        frequencies: np.ndarray = counts / counts.sum()
        return frequencies

    def state_dict(self) -> dict[str, Any]:
        """JSON-ready state (the manifest's ``publish_gate.labels``)."""
        return {"size": self.size, "batches": [entry.tolist() for entry in self._batches]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict` (the size in force now wins)."""
        self._batches.clear()
        self._count = 0
        for entry in state.get("batches", []):
            if self.task == "classification":
                counts = np.asarray(entry, dtype=np.int64)
                self._append(counts, int(counts.sum()))
            else:
                rows = np.asarray(entry, dtype=np.float64)
                self._append(rows.reshape(len(rows), -1), len(rows))


class PublishGate:
    """The gate as the loop uses it: observe labels, decide at snapshot time, remember.

    Args:
        policy: The gate's configuration.
        labels: The label window behind the no-change baseline.
        reference: The last published snapshot, if any (from the store at start-up).
    """

    def __init__(
        self,
        policy: PublishPolicy,
        labels: LabelWindow,
        reference: PublishedReference | None = None,
    ) -> None:
        self.policy = policy
        self.labels = labels
        self.reference = reference

    def observe(self, y: torch.Tensor, labelled: torch.Tensor) -> None:
        """Feed one scored batch's labels into the baseline window."""
        self.labels.update(y, labelled)

    def decide(self, loss: float | None) -> PublishDecision:
        """The verdict for a snapshot whose recent loss is ``loss``."""
        return decide(
            self.policy,
            loss=loss,
            baseline_loss=self.labels.baseline_loss(),
            reference=self.reference,
        )

    def drifted(self) -> None:
        """Forget the published loss after a drift; keep its version.

        That loss was measured on the old concept, so a snapshot after a shift to a harder
        one would look "regressed" for good and serving would stay on the stale model. Until
        the next publish, snapshots are judged against the no-change baseline only.
        """
        if self.reference is not None:
            self.reference = PublishedReference(self.reference.version, None)

    def published(self, version: int, loss: float | None) -> None:
        """A snapshot was published: it is the reference from now on."""
        self.reference = PublishedReference(version, loss)

    def state_dict(self) -> dict[str, Any]:
        """JSON-ready state saved in the manifest (``publish_gate``)."""
        return {"labels": self.labels.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        labels = state.get("labels")
        if isinstance(labels, dict):
            self.labels.load_state_dict(labels)
