"""Real data sets that ship inside installed packages, as quality-bench streams (no download).

- :func:`bananas`: river's bundled Bananas (5,300 events, 2 features, 2 classes), in a seeded
  order: a stationary stream, where every drift detection is a false alarm.
- :func:`digits_domains`: scikit-learn's bundled digits (1,797 8x8 images, 10 classes, pixel
  values 0..16), drawn with replacement in a seeded order and shown through domains: original
  -> rotated 90 degrees -> inverted -> original (a return to an earlier domain). Each drawn
  image gets a little seeded pixel noise, so no event repeats exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from river import datasets

from driftd.tools.quality_streams import QualityStream, from_river

DOMAINS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "original": lambda images: images,
    "rotated": lambda images: np.rot90(images, k=1, axes=(1, 2)),
    "inverted": lambda images: 16.0 - images,
}


def bananas(*, seed: int = 0) -> QualityStream:
    """River's Bananas data set, shuffled by ``seed`` (no drift)."""
    pairs = list(datasets.Bananas())  # type: ignore[no-untyped-call]
    order = np.random.default_rng(seed).permutation(len(pairs))
    return from_river(
        "bananas", "river Bananas (bundled), 5,300 events in a seeded order, no drift",
        [("bananas", [pairs[k] for k in order])], n_classes=2,
    )  # fmt: skip


def digits_domains(
    *,
    segment: int = 1_500,
    domains: tuple[str, ...] = ("original", "rotated", "inverted", "original"),
    seed: int = 0,
) -> QualityStream:
    """scikit-learn's digits through image domains, ``segment`` events each (CNN ``1,8,8``)."""
    from sklearn.datasets import load_digits  # type: ignore[import-untyped]  # bench extra

    digits = load_digits()
    rng = np.random.default_rng(seed)
    chosen = rng.integers(0, len(digits.target), size=segment * len(domains))
    images = digits.images[chosen] + rng.normal(0.0, 0.5, size=(len(chosen), 8, 8))
    images = np.clip(images, 0.0, 16.0)
    for k, domain in enumerate(domains):
        part = slice(k * segment, (k + 1) * segment)
        images[part] = DOMAINS[domain](images[part])
    drifts = tuple(segment * k for k in range(1, len(domains)))
    return QualityStream(
        name="digits_domains",
        description=f"scikit-learn digits (bundled) {' -> '.join(domains)}, {segment:,} each",
        features=np.round(images.reshape(len(chosen), 64), 4).astype(np.float32),
        labels=digits.target[chosen].astype(np.int64),
        n_classes=10,
        drifts=drifts,
        widths=(1,) * len(drifts),
        concepts=domains,
        model={"kind": "cnn", "input_shape": [1, 8, 8]},
    )


def bench_streams(*, seed: int, quick: bool = False) -> list[QualityStream]:
    """The benchmark's streams for one seed; ``quick`` shortens them to a third (smoke test)."""
    from driftd.tools import quality_streams as synthetic

    k = 3 if quick else 1
    return [
        synthetic.sea_abrupt(segment=1_500 // k, seed=seed),
        synthetic.sea_gradual(n_events=6_000 // k, width=1_000 // k, seed=seed),
        synthetic.hyperplane_moving(n_events=6_000 // k, seed=seed),
        synthetic.agrawal_raw(segment=2_000 // k, seed=seed),
        synthetic.rbf_moving(n_events=6_000 // k, seed=seed),
        synthetic.led_permuted(segment=3_000 // k, seed=seed),
        synthetic.stagger_recurring(segment=1_500 // k, seed=seed),
        bananas(seed=seed),
        digits_domains(segment=1_500 // k, seed=seed),
    ]
