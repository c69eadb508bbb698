"""Everything a snapshot saves, and the conversion to and from a :class:`~driftd.ports.Snapshot`.

"What is saved" lives here; "where it is saved" is a snapshot store's business. The state is the
learner (model, optimizer, LR policy, prequential window) together with the next offset of every
partition: saved together, restored together, so a restart replays exactly what came after.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from driftd import __version__
from driftd.decode import DecodedBatch
from driftd.learner import OnlineLearner
from driftd.models import count_parameters, sparsity
from driftd.ports import Snapshot
from driftd.records import Record, TopicPartition
from driftd.tensor_state import flatten_optimizer_state, unflatten_optimizer_state

ModelConfigFor = Callable[[int], dict[str, Any]]
LearnerFromConfig = Callable[[dict[str, Any]], OnlineLearner]


class TrainingState:
    """The learner (built lazily once the feature count is known) plus stream position.

    Args:
        config_for: Model config for a given feature count (from the settings).
        build_learner: A fresh learner for a model config (same seed, same weights).
        n_features: Known feature count; None waits for the first valid event.
    """

    def __init__(
        self,
        *,
        config_for: ModelConfigFor,
        build_learner: LearnerFromConfig,
        n_features: int | None,
    ) -> None:
        self._config_for = config_for
        self._build_learner = build_learner
        self.learner: OnlineLearner | None = None
        self.model_config: dict[str, Any] | None = None
        self.offsets: dict[TopicPartition, int] = {}
        self.events_rejected = 0
        self.watermark: float | None = None
        self.snapshot_version: int | None = None
        if n_features is not None:
            self._build(self._config_for(n_features))

    @property
    def has_model(self) -> bool:
        """Whether the learner exists yet."""
        return self.learner is not None

    @property
    def steps(self) -> int:
        """Gradient steps taken over the state's whole life."""
        return self.learner.steps if self.learner is not None else 0

    def learner_for(self, batch: DecodedBatch) -> OnlineLearner:
        """The learner, building it from the batch's feature count on first use."""
        if self.learner is None:
            self._build(self._config_for(batch.x.shape[1]))
        assert self.learner is not None
        return self.learner

    def advance(self, records: Iterable[Record]) -> None:
        """Move each partition's next offset past the processed records (never backwards)."""
        newest: dict[tuple[str, int], int] = {}
        for record in records:  # hot path: plain tuples, one dict write per record
            key = (record.topic, record.partition)
            if newest.get(key, -1) < record.offset:
                newest[key] = record.offset
        offsets = self.offsets
        for (topic, partition), offset in newest.items():
            tp = TopicPartition(topic, partition)
            if offsets.get(tp, -1) <= offset:
                offsets[tp] = offset + 1

    def observe(self, batch: DecodedBatch) -> None:
        """Track the newest event timestamp learned (the snapshot's watermark)."""
        if len(batch):
            newest = float(batch.timestamps.max(initial=-math.inf))
            if math.isfinite(newest) and (self.watermark is None or newest > self.watermark):
                self.watermark = newest

    def to_snapshot(self, now: float) -> Snapshot:
        """A snapshot of the current state, numbered one past the last."""
        learner = self.learner
        if learner is None or self.model_config is None:
            raise RuntimeError("no model yet: nothing to snapshot")
        optimizer_tensors, optimizer_meta = flatten_optimizer_state(learner.optimizer.state_dict())
        weights = {key: value.detach() for key, value in learner.model.state_dict().items()}
        manifest = {
            "driftd_version": __version__,
            "created_at": now,
            "model": self.model_config,
            "offsets": [
                {"topic": tp.topic, "partition": tp.partition, "next_offset": offset}
                for tp, offset in sorted(self.offsets.items())
            ],
            "step": learner.steps,
            "events_learned": learner.events_learned,
            "events_rejected": self.events_rejected,
            "watermark": self.watermark,
            "metrics": {
                "prequential_accuracy": learner.window.accuracy,
                "prequential_loss": learner.window.loss,
                "learning_rate": learner.lr_policy.lr,
            },
            "parameters": count_parameters(learner.model),
            "sparsity": sparsity(learner.model),
            "domains": [],
            "learner": learner.state_dict(),
            "optimizer": optimizer_meta,
        }
        version = (self.snapshot_version or 0) + 1
        return Snapshot(version, weights, optimizer_tensors, manifest)

    def restore(self, snapshot: Snapshot) -> None:
        """Load a snapshot: model, optimizer, LR policy, window, counters and offsets."""
        manifest = snapshot.manifest
        self._build(dict(manifest["model"]))
        learner = self.learner
        assert learner is not None
        learner.model.load_state_dict(dict(snapshot.weights))
        learner.optimizer.load_state_dict(
            unflatten_optimizer_state(dict(snapshot.training), manifest["optimizer"])
        )
        learner.load_state_dict(manifest["learner"])
        self.offsets = _offsets_from(manifest["offsets"])
        self.events_rejected = int(manifest["events_rejected"])
        self.watermark = manifest.get("watermark")
        self.snapshot_version = snapshot.version

    def _build(self, config: dict[str, Any]) -> None:
        self.model_config = config
        self.learner = self._build_learner(config)


def _offsets_from(entries: Iterable[Mapping[str, Any]]) -> dict[TopicPartition, int]:
    return {
        TopicPartition(str(entry["topic"]), int(entry["partition"])): int(entry["next_offset"])
        for entry in entries
    }


def snapshot_offsets(snapshot: Snapshot) -> dict[TopicPartition, int]:
    """The next offset per partition recorded in a snapshot's manifest."""
    return _offsets_from(snapshot.manifest.get("offsets", []))
