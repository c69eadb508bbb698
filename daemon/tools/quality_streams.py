"""Seeded, offline drifting streams with known drift points, for ``driftd bench --section quality``.

Each generator returns a :class:`QualityStream`: the whole stream as arrays (small: a few
thousand events), where its concept changes, and the model settings it wants. Nothing is
downloaded; the same seed gives the same stream.

- :func:`sea_switches`: river's SEA generator, switched abruptly between its variants
  (thresholds 8, 9, 7, 9.5 on ``x0 + x1``) at known points; a concept recurs.
- :func:`rotating_hyperplane`: ``y = [w . x > 0]`` where ``w`` rotates by ``angle`` over
  ``width`` events from each drift point (gradual drift), fixed in between.
- :func:`moving_centroids`: a multi-class Gaussian-blob stream whose class centroids glide to
  new places over ``width`` events from each drift point.
- :func:`stationary`: the same generator as :func:`moving_centroids`, without moves (control).
- :func:`glyph_shift`: 8x8 digit-like glyphs drawn here (10 patterns, jittered and noisy),
  shown original -> rotated 90 degrees -> inverted -> original (a recurring image domain).
- :func:`glyph_unlabelled_return`: original -> inverted, labelled, then original again with
  *no labels* (a covariate shift only the inputs show: the recurring domain must be recognised
  from them alone).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from river.datasets import synth

GLYPHS = (
    "..####.. .#....#. .#...##. .#..#.#. .#.#..#. .##...#. .#....#. ..####..",
    "...##... ..###... .#.##... ...##... ...##... ...##... ...##... .######.",
    "..####.. .#....#. ......#. .....#.. ....#... ...#.... ..#..... .######.",
    "..####.. .#....#. ......#. ...###.. ......#. ......#. .#....#. ..####..",
    ".....#.. ....##.. ...#.#.. ..#..#.. .#...#.. .######. .....#.. .....#..",
    ".######. .#...... .#...... .#####.. ......#. ......#. .#....#. ..####..",
    "...###.. ..#..... .#...... .#####.. .#....#. .#....#. .#....#. ..####..",
    ".######. ......#. .....#.. ....#... ...#.... ...#.... ...#.... ...#....",
    "..####.. .#....#. .#....#. ..####.. .#....#. .#....#. .#....#. ..####..",
    "..####.. .#....#. .#....#. .#....#. ..#####. ......#. .....#.. ..###...",
)
"""Ten 8x8 digit patterns, 0 to 9, row by row (``#`` ink, ``.`` background)."""


@dataclass(frozen=True, eq=False)
class QualityStream:
    """A seeded stream with known drift points.

    Attributes:
        name: Short name (printed by the benchmark).
        description: What drifts and how.
        features: ``(n_events, n_features)`` inputs.
        labels: ``(n_events,)`` class labels.
        n_classes: Number of classes.
        drifts: Index of the first event of each new concept (a gradual drift starts there).
        widths: Events each drift takes to complete (1: abrupt), one per drift.
        concepts: Name of the concept in force from the start and after each drift; a name
            seen before marks a recurring concept.
        model: ``model`` settings the stream needs (e.g. a CNN and its input shape).
        learner: ``learner`` settings the stream needs (e.g. a higher LR for the CNN).
        labelled: Per event, whether it carries its label (None: all do); the benchmark scores
            the predictions of every event against ``labels`` all the same.
        variants: Extra benchmark variants to run on it (names of ``quality_bench.VARIANTS``).
    """

    name: str
    description: str
    features: np.ndarray
    labels: np.ndarray
    n_classes: int
    drifts: tuple[int, ...]
    widths: tuple[int, ...]
    concepts: tuple[str, ...]
    model: dict[str, Any] = field(default_factory=dict)
    learner: dict[str, Any] = field(default_factory=dict)
    labelled: np.ndarray | None = None
    variants: tuple[str, ...] = ()

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
        """Yield events in the driftd format (``id``, ``x``, ``y`` or null, ``domain``: unknown)."""
        rounded = self.features.round(4)
        labelled = self.labelled
        for index in range(self.n_events):
            known = labelled is None or bool(labelled[index])
            yield {
                "id": f"{self.name}-{index}",
                "x": rounded[index].tolist(),
                "y": int(self.labels[index]) if known else None,
                "domain": None,
            }


def _segments(n_events: int, drifts: tuple[int, ...]) -> list[tuple[int, int]]:
    bounds = (0, *drifts, n_events)
    return list(itertools.pairwise(bounds))


def sea_switches(
    *,
    segment: int = 2_000,
    variants: tuple[int, ...] = (2, 3, 2, 3),
    noise: float = 0.0,
    seed: int = 11,
) -> QualityStream:
    """River's SEA, one variant per ``segment`` events; features scaled from [0, 10] to [0, 1].

    Variants 2 and 3 (thresholds 7 and 9.5) disagree on about a fifth of the input space.
    """
    features, labels = [], []
    for k, variant in enumerate(variants):
        source = synth.SEA(variant=variant, noise=noise, seed=seed * 1_000 + k)
        for x, y in source.take(segment):
            features.append([x[0] / 10.0, x[1] / 10.0, x[2] / 10.0])
            labels.append(int(y))
    drifts = tuple(segment * k for k in range(1, len(variants)))
    return QualityStream(
        name="sea_abrupt",
        description=f"river SEA variants {'->'.join(map(str, variants))}, {segment:,} each",
        features=np.asarray(features, dtype=np.float32),
        labels=np.asarray(labels, dtype=np.int64),
        n_classes=2,
        drifts=drifts,
        widths=(1,) * len(drifts),
        concepts=tuple(f"variant{v}" for v in variants),
    )


def rotating_hyperplane(
    *,
    n_events: int = 9_000,
    n_features: int = 4,
    drifts: tuple[int, ...] = (3_000, 6_000),
    width: int = 1_000,
    angle: float = math.pi / 2,
    seed: int = 12,
) -> QualityStream:
    """``y = [w(t) . x > 0]``, ``x`` uniform in [-1, 1]; ``w`` turns by ``angle`` per drift."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(n_features, 2)))  # the rotation plane
    u, v = basis[:, 0], basis[:, 1]
    turned = np.zeros(n_events)
    for start in drifts:
        progress = np.clip((np.arange(n_events) - start + 1) / width, 0.0, 1.0)
        turned += angle * progress
    weights = np.cos(turned)[:, None] * u + np.sin(turned)[:, None] * v
    features = rng.uniform(-1.0, 1.0, size=(n_events, n_features))
    labels = (np.einsum("ij,ij->i", features, weights) > 0).astype(np.int64)
    return QualityStream(
        name="hyperplane_gradual",
        description=f"hyperplane turning {math.degrees(angle):.0f} deg over {width:,} events "
        f"at {', '.join(f'{t:,}' for t in drifts)}",
        features=features.astype(np.float32),
        labels=labels,
        n_classes=2,
        drifts=drifts,
        widths=(width,) * len(drifts),
        concepts=tuple(f"angle{k}" for k in range(len(drifts) + 1)),
    )


def moving_centroids(
    *,
    n_events: int = 9_000,
    n_features: int = 6,
    n_classes: int = 5,
    drifts: tuple[int, ...] = (3_000, 6_000),
    width: int = 300,
    spread: float = 2.0,
    noise: float = 0.7,
    seed: int = 13,
    name: str = "centroids_moving",
) -> QualityStream:
    """Gaussian classes around centroids that glide to new random places at each drift."""
    rng = np.random.default_rng(seed)
    places = rng.normal(0.0, spread, size=(len(drifts) + 1, n_classes, n_features))
    index = np.arange(n_events)
    centroids = np.repeat(places[0][None], n_events, axis=0)
    for k, start in enumerate(drifts):
        progress = np.clip((index - start + 1) / width, 0.0, 1.0)[:, None, None]
        centroids = centroids + progress * (places[k + 1] - places[k])[None]
    labels = rng.integers(0, n_classes, size=n_events)
    features = centroids[index, labels] + rng.normal(0.0, noise, size=(n_events, n_features))
    moves = f"moving over {width:,} events at {', '.join(f'{t:,}' for t in drifts)}"
    return QualityStream(
        name=name,
        description=f"{n_classes} classes, {n_features} features, centroids "
        + (moves if drifts else "fixed"),
        features=features.astype(np.float32),
        labels=labels.astype(np.int64),
        n_classes=n_classes,
        drifts=drifts,
        widths=(width,) * len(drifts),
        concepts=tuple(f"places{k}" for k in range(len(drifts) + 1)),
    )


def stationary(*, n_events: int = 6_000, seed: int = 14) -> QualityStream:
    """The :func:`moving_centroids` generator with no drift: the control stream."""
    return moving_centroids(n_events=n_events, drifts=(), seed=seed, name="stationary")


def glyph_images(labels: np.ndarray, rng: np.random.Generator, noise: float = 0.15) -> np.ndarray:
    """``(n, 8, 8)`` images of the glyphs ``labels``: shifted by up to a pixel, noisy, in [0, 1]."""
    patterns = np.array(
        [[[char == "#" for char in row] for row in glyph.split()] for glyph in GLYPHS],
        dtype=np.float32,
    )
    images = patterns[labels] * rng.uniform(0.7, 1.0, size=(len(labels), 1, 1))
    shifts = rng.integers(-1, 2, size=(len(labels), 2))
    for dy, dx in itertools.product((-1, 0, 1), repeat=2):
        chosen = (shifts[:, 0] == dy) & (shifts[:, 1] == dx)
        images[chosen] = np.roll(images[chosen], (dy, dx), axis=(1, 2))
    images += rng.normal(0.0, noise, size=images.shape).astype(np.float32)
    clipped: np.ndarray = np.clip(images, 0.0, 1.0)
    return clipped


DOMAINS = {
    "original": lambda images: images,
    "rotated": lambda images: np.rot90(images, k=1, axes=(1, 2)),
    "inverted": lambda images: 1.0 - images,
}


def glyph_shift(
    *,
    segment: int = 2_500,
    domains: tuple[str, ...] = ("original", "rotated", "inverted", "original"),
    seed: int = 15,
) -> QualityStream:
    """8x8 glyphs (64 features, CNN ``1,8,8``) through image domains, ``segment`` events each."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(GLYPHS), size=segment * len(domains))
    images = glyph_images(labels, rng)
    for k, domain in enumerate(domains):
        part = slice(k * segment, (k + 1) * segment)
        images[part] = DOMAINS[domain](images[part])
    drifts = tuple(segment * k for k in range(1, len(domains)))
    return QualityStream(
        name="glyphs_domain",
        description=f"8x8 glyphs {' -> '.join(domains)}, {segment:,} each (CNN)",
        features=images.reshape(len(labels), 64).astype(np.float32),
        labels=labels.astype(np.int64),
        n_classes=len(GLYPHS),
        drifts=drifts,
        widths=(1,) * len(drifts),
        concepts=domains,
        model={"kind": "cnn", "input_shape": [1, 8, 8]},
        learner={"lr": 0.003},  # the default 1e-3 leaves the CNN at ~0.45 after 5,000 events
    )


def glyph_unlabelled_return(*, segment: int = 3_000, seed: int = 16) -> QualityStream:
    """Glyphs original -> inverted (both labelled), then original again, unlabelled (CNN)."""
    stream = glyph_shift(segment=segment, domains=("original", "inverted", "original"), seed=seed)
    labelled = np.arange(stream.n_events) < 2 * segment
    return QualityStream(
        name="glyphs_unlabelled",
        description=f"8x8 glyphs original -> inverted -> original, {segment:,} each; the last "
        "unlabelled (CNN)",
        features=stream.features,
        labels=stream.labels,
        n_classes=stream.n_classes,
        drifts=stream.drifts,
        widths=stream.widths,
        concepts=stream.concepts,
        model=stream.model,
        learner=stream.learner,
        labelled=labelled,
        variants=("ignore",),
    )


def quality_streams(*, quick: bool = False) -> list[QualityStream]:
    """The benchmark's streams; ``quick`` halves their lengths (a smoke test)."""
    scale = 2 if quick else 1
    return [
        sea_switches(segment=5_000 // scale),
        rotating_hyperplane(
            n_events=9_000 // scale, drifts=(3_000 // scale, 6_000 // scale), width=1_000 // scale
        ),
        moving_centroids(n_events=9_000 // scale, drifts=(3_000 // scale, 6_000 // scale)),
        stationary(n_events=6_000 // scale),
        glyph_shift(segment=5_000 // scale),
        glyph_unlabelled_return(segment=3_000 // scale),
    ]
