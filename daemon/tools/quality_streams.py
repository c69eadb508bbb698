"""Seeded, offline drifting streams with known drift points, for ``driftd bench --section quality``.

Each maker returns a :class:`QualityStream` built from river's own generators (nothing is
downloaded; the same seed gives the same stream):

- :func:`sea_abrupt`: SEA switched abruptly between variants, a concept recurring, 10 % label
  noise (river's ``noise``), features on their raw [0, 10] scale;
- :func:`sea_gradual`: SEA variant 0 -> 3 through ``ConceptDriftStream`` (gradual: the new
  concept's share grows over ``width`` events), 5 % label noise;
- :func:`hyperplane_moving`: river's ``Hyperplane`` with ``mag_change`` (continuous drift, no
  change points), 5 % label noise;
- :func:`agrawal_raw`: river's ``Agrawal`` switched between classification functions, raw
  unscaled salary/commission/loan columns (tens of thousands) beside small integer ones, 5 % of
  labels flipped;
- :func:`rbf_moving`: river's ``RandomRBFDrift`` (moving centroids, 4 classes, continuous);
- :func:`led_permuted`: river's ``LED`` (10 classes, 24 binary columns of which 7 carry the
  digit, 10 % attribute noise); at the drift the columns are permuted so that the signal moves
  to other inputs;
- :func:`stagger_recurring`: river's ``STAGGER`` cycling through its three functions and back
  to the first (clean labels).

The real data sets (river's bundled Bananas, scikit-learn's digits) are in
:mod:`~driftd.tools.quality_datasets`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from river.datasets import synth


@dataclass(frozen=True, eq=False)
class QualityStream:
    """A seeded stream with known drift points.

    Attributes:
        name: Short name (printed by the benchmark).
        description: What drifts and how.
        features: ``(n_events, n_features)`` inputs, exactly the values every learner sees.
        labels: ``(n_events,)`` class labels.
        n_classes: Number of classes.
        drifts: Index of the first event of each new concept (a gradual drift starts there).
        widths: Events each drift takes to complete (1: abrupt), one per drift.
        concepts: Name of the concept in force from the start and after each drift; a name
            seen before marks a recurring concept.
        drift: ``abrupt``, ``gradual``, ``continuous`` (no change points: the concept moves all
            the time) or ``none``.
        model: ``model`` settings that are facts of the stream (a CNN's input shape), never
            tuning.
    """

    name: str
    description: str
    features: np.ndarray
    labels: np.ndarray
    n_classes: int
    drifts: tuple[int, ...]
    widths: tuple[int, ...]
    concepts: tuple[str, ...]
    drift: str = "abrupt"
    model: dict[str, Any] = field(default_factory=dict)

    @property
    def n_events(self) -> int:
        """Events in the stream."""
        return len(self.labels)

    @property
    def recurring(self) -> tuple[int, ...]:
        """Drift points after which a concept seen earlier comes back."""
        return tuple(
            t for k, t in enumerate(self.drifts) if self.concepts[k + 1] in self.concepts[: k + 1]
        )

    def first_seen(self, drift: int) -> tuple[int, int]:
        """``(start, end)`` of the first segment of the concept that starts at ``drift``."""
        bounds = (0, *self.drifts, self.n_events)
        concept = self.concepts[self.drifts.index(drift) + 1]
        first = self.concepts.index(concept)
        return bounds[first], bounds[first + 1]

    def events(self) -> Iterator[dict[str, object]]:
        """Yield events in the driftd format (``id``, ``x``, ``y``, ``domain``: unknown)."""
        for index, row in enumerate(self.features.tolist()):
            yield {"id": f"{self.name}-{index}", "x": row, "y": int(self.labels[index]),
                   "domain": None}  # fmt: skip


def from_river(
    name: str,
    description: str,
    segments: Iterable[tuple[str, Iterable[tuple[dict[Any, Any], Any]]]],
    *,
    n_classes: int,
    widths: tuple[int, ...] | None = None,
    drift: str = "abrupt",
    flip: float = 0.0,
    seed: int = 0,
    transform: Callable[[str, np.ndarray], np.ndarray] | None = None,
) -> QualityStream:
    """A stream from river ``(x, y)`` pairs, one named concept per segment.

    Args:
        name: The stream's name.
        description: What drifts and how.
        segments: ``(concept, pairs)`` in order; a drift point starts each but the first.
        n_classes: Number of classes.
        widths: Width of each drift (default: abrupt).
        drift: The drift's kind (``none`` when there is a single segment and it is not
            ``continuous``).
        flip: Share of labels replaced by a uniformly drawn other class (label noise).
        seed: Seeds the label flips.
        transform: ``(concept, features) -> features`` applied per segment (a permutation).
    """
    features: list[np.ndarray] = []
    labels: list[int] = []
    concepts: list[str] = []
    drifts: list[int] = []
    for concept, pairs in segments:
        if concepts:
            drifts.append(len(labels))
        concepts.append(concept)
        rows, ys = zip(*((list(x.values()), int(y)) for x, y in pairs), strict=True)
        block = np.asarray(rows, dtype=np.float64)
        features.append(transform(concept, block) if transform else block)
        labels.extend(ys)
    y = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    flipped = rng.random(len(y)) < flip
    y[flipped] = (y[flipped] + rng.integers(1, n_classes, size=int(flipped.sum()))) % n_classes
    return QualityStream(
        name=name,
        description=description,
        features=np.round(np.concatenate(features), 4).astype(np.float32),
        labels=y,
        n_classes=n_classes,
        drifts=tuple(drifts),
        widths=widths or (1,) * len(drifts),
        concepts=tuple(concepts),
        drift=drift if drifts or drift == "continuous" else "none",
    )


def sea_abrupt(*, segment: int = 1_500, seed: int = 0) -> QualityStream:
    """SEA variants 0 -> 2 -> 3 -> 0 (thresholds 8, 7, 9.5, 8 on ``x0 + x1``), 10 % noise."""
    variants = (0, 2, 3, 0)
    segments = [
        (f"variant{v}", synth.SEA(variant=v, noise=0.1, seed=seed * 100 + k).take(segment))
        for k, v in enumerate(variants)
    ]
    return from_river(
        "sea_abrupt", f"river SEA {'->'.join(map(str, variants))}, {segment:,} each, 10% noise",
        segments, n_classes=2,
    )  # fmt: skip


def sea_gradual(*, n_events: int = 6_000, width: int = 1_000, seed: int = 0) -> QualityStream:
    """SEA variant 0 -> 3 via river's ``ConceptDriftStream`` at the middle, 5 % noise."""
    position = n_events // 2
    stream = synth.ConceptDriftStream(
        stream=synth.SEA(variant=0, noise=0.05, seed=seed),
        drift_stream=synth.SEA(variant=3, noise=0.05, seed=seed + 1_000),
        position=position, width=width, seed=seed,
    )  # fmt: skip
    pairs = list(stream.take(n_events))
    half = position - width // 2  # river centres the sigmoid on ``position``
    return from_river(
        "sea_gradual", f"river SEA 0->3 over {width:,} events around {position:,}, 5% noise",
        [("variant0", pairs[:half]), ("variant3", pairs[half:])], n_classes=2,
        widths=(width,), drift="gradual",
    )  # fmt: skip


def hyperplane_moving(*, n_events: int = 6_000, seed: int = 0) -> QualityStream:
    """River's rotating ``Hyperplane``: 10 features, 5 drifting by ``mag_change`` 0.001/event."""
    source = synth.Hyperplane(
        seed=seed, n_features=10, n_drift_features=5, mag_change=0.001,
        noise_percentage=0.05, sigma=0.1,
    )  # fmt: skip
    return from_river(
        "hyperplane_moving", "river Hyperplane, 5 of 10 weights moving continuously, 5% noise",
        [("moving", source.take(n_events))], n_classes=2, drift="continuous",
    )  # fmt: skip


def agrawal_raw(*, segment: int = 2_000, seed: int = 0) -> QualityStream:
    """River's ``Agrawal`` functions 0 -> 2 -> 4, raw feature scales, 5 % labels flipped."""
    functions = (0, 2, 4)
    segments = [
        (f"f{f}", synth.Agrawal(classification_function=f, seed=seed * 100 + k).take(segment))
        for k, f in enumerate(functions)
    ]
    return from_river(
        "agrawal_raw", f"river Agrawal functions {'->'.join(map(str, functions))}, {segment:,} "
        "each, raw salary/loan scales, 5% flips", segments, n_classes=2, flip=0.05, seed=seed,
    )  # fmt: skip


def rbf_moving(*, n_events: int = 6_000, seed: int = 0) -> QualityStream:
    """River's ``RandomRBFDrift``: 4 classes, 10 features, 10 of 20 centroids moving."""
    source = synth.RandomRBFDrift(
        seed_model=seed, seed_sample=seed + 1, n_classes=4, n_features=10, n_centroids=20,
        change_speed=0.001, n_drift_centroids=10,
    )  # fmt: skip
    return from_river(
        "rbf_moving", "river RandomRBFDrift, 4 classes, 10 of 20 centroids moving",
        [("moving", source.take(n_events))], n_classes=4, drift="continuous",
    )  # fmt: skip


def led_permuted(*, segment: int = 3_000, seed: int = 0) -> QualityStream:
    """River's ``LED`` (7 relevant of 24 columns, 10 % noise); the columns permuted at the drift.

    The permutation sends the seven relevant columns to irrelevant positions, so a model whose
    first layer learnt which inputs matter must relearn it.
    """
    rng = np.random.default_rng(seed)
    moved = rng.permutation(np.arange(7, 24))[:7]  # where the seven digit segments go
    order = np.arange(24)
    order[moved], order[:7] = np.arange(7), moved  # column j of the new layout: old order[j]

    def permute(concept: str, block: np.ndarray) -> np.ndarray:
        return block[:, order] if concept == "moved" else block

    source = synth.LED(seed=seed, noise_percentage=0.1, irrelevant_features=True)
    pairs = source.take(2 * segment)
    segments = [("original", itertools.islice(pairs, segment)), ("moved", pairs)]
    return from_river(
        "led_permuted", f"river LED, 10 classes, 10% noise; the 7 digit columns move at "
        f"{segment:,}", segments, n_classes=10, transform=permute,
    )  # fmt: skip


def stagger_recurring(*, segment: int = 1_500, seed: int = 0) -> QualityStream:
    """River's ``STAGGER`` functions 0 -> 1 -> 2 -> 0, ``segment`` events each, clean."""
    functions = (0, 1, 2, 0)
    segments = [
        (f"f{f}", synth.STAGGER(classification_function=f, seed=seed * 100 + k).take(segment))
        for k, f in enumerate(functions)
    ]
    return from_river(
        "stagger_recurring", f"river STAGGER {'->'.join(map(str, functions))}, {segment:,} each",
        segments, n_classes=2,
    )  # fmt: skip


SYNTHETIC: dict[str, Callable[..., QualityStream]] = {
    "sea_abrupt": sea_abrupt,
    "sea_gradual": sea_gradual,
    "hyperplane_moving": hyperplane_moving,
    "agrawal_raw": agrawal_raw,
    "rbf_moving": rbf_moving,
    "led_permuted": led_permuted,
    "stagger_recurring": stagger_recurring,
}
