"""A built-in, seeded drifting stream: the demo's and the benchmark's data.

Each class is a Gaussian blob around a centre; a *concept* is one placement of the centres.
At every change point the stream jumps abruptly to the next concept, and the concepts recur
(0, 1, 2, 0, ...), so a learner sees sudden drifts and a domain it has seen before.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DriftingStream:
    """Parameters of the synthetic stream.

    Attributes:
        n_events: Events in total.
        n_features: Features per event.
        n_classes: Classes.
        n_concepts: Distinct concepts cycled through.
        change_every: Events between abrupt concept changes.
        noise: Standard deviation around each class centre.
        seed: Seed of the generator: the same seed gives the same stream.
    """

    n_events: int = 30_000
    n_features: int = 10
    n_classes: int = 3
    n_concepts: int = 3
    change_every: int = 10_000
    noise: float = 1.0
    seed: int = 7

    def concept_at(self, index: int) -> int:
        """The concept in force for the event at ``index``."""
        return (index // self.change_every) % self.n_concepts

    def events(self, chunk: int = 4096) -> Iterator[dict[str, object]]:
        """Yield events as dicts in the driftd event format (``x``, ``y``, ``domain``, ``id``)."""
        rng = np.random.default_rng(self.seed)
        centres = rng.normal(0.0, 2.0, size=(self.n_concepts, self.n_classes, self.n_features))
        for start in range(0, self.n_events, chunk):
            size = min(chunk, self.n_events - start)
            labels = rng.integers(0, self.n_classes, size=size)
            noise = rng.normal(0.0, self.noise, size=(size, self.n_features))
            concepts = (np.arange(start, start + size) // self.change_every) % self.n_concepts
            features = centres[concepts, labels] + noise
            for offset in range(size):
                index = start + offset
                yield {
                    "id": str(index),
                    "x": features[offset].round(5).tolist(),
                    "y": int(labels[offset]),
                    "domain": None,
                }
