"""Everything a snapshot saves, and the conversion to and from a :class:`~driftd.ports.Snapshot`.

"What is saved" lives here; "where it is saved" is a snapshot store's business. The state is the
learner (model, optimizer, LR policy, prequential window) and the adaptation (drift detectors,
stored domains, replay buffer, policy), together with the next offset of every partition: saved
together, restored together, so a restart replays exactly what came after.

Layout: ``weights`` hold the live model only (shared trunk + active head: all inference needs;
after structured pruning, the shrunk layers, described by the manifest's ``model`` config);
``training`` holds the optimizer tensors and, under ``adaptation.``, the stored trunks and
heads, replay rows and generator state, under ``pruning.`` the masks, Taylor scores and recent
window, and under ``dead_letters.`` the bytes of rejections not yet acknowledged; the manifest
holds ``domains`` (one entry per known domain), ``adaptation`` (policy, detector and
stored-domain state as JSON; never pickle), ``pruning`` (schedule, controller, sizes) and
``dead_letters`` (those rejections' partition, offset and reason:
:mod:`driftd.dead_letter_backlog`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from driftd import __version__
from driftd.adaptation.policy import Adaptation
from driftd.adaptation.transfer import transfer_weights, transferred_config
from driftd.dead_letter_backlog import backlog_state, restore_backlog
from driftd.decode import DecodedBatch
from driftd.learning.learner import OnlineLearner, prefer_fused
from driftd.learning.models import SplitModel, count_parameters, sparsity
from driftd.learning.tensor_state import flatten_optimizer_state, unflatten_optimizer_state
from driftd.ports import Snapshot
from driftd.pruning.int8_export import Int8Exporter
from driftd.pruning.stage import PruningStage
from driftd.records import Record, Rejection, TopicPartition

ModelConfigFor = Callable[[int], dict[str, Any]]
LearnerFromConfig = Callable[[dict[str, Any]], OnlineLearner]
AdaptationFor = Callable[[OnlineLearner], Adaptation | None]
PruningFor = Callable[[OnlineLearner, Adaptation | None], PruningStage | None]

log = logging.getLogger("driftd.training_state")
_ADAPTATION = "adaptation."
_PRUNING = "pruning."
_DEAD_LETTERS = "dead_letters."


class TrainingState:
    """The learner (built lazily once the feature count is known) plus stream position.

    Args:
        config_for: Model config for a given feature count (from the settings).
        build_learner: A fresh learner for a model config (same seed, same weights).
        n_features: Known feature count; None waits for the first valid event.
        build_adaptation: The drift monitor and adaptation policy for a new learner (None:
            neither).
        build_pruning: The pruning stage for a new learner and its adaptation (None: none).
        int8: Writes an int8 copy of the model with each snapshot (None: none).
    """

    def __init__(
        self,
        *,
        config_for: ModelConfigFor,
        build_learner: LearnerFromConfig,
        n_features: int | None,
        build_adaptation: AdaptationFor | None = None,
        build_pruning: PruningFor | None = None,
        int8: Int8Exporter | None = None,
    ) -> None:
        self._config_for = config_for
        self._build_learner = build_learner
        self._build_adaptation = build_adaptation
        self._build_pruning = build_pruning
        self.learner: OnlineLearner | None = None
        self.adaptation: Adaptation | None = None
        self.pruning: PruningStage | None = None
        self.int8 = int8
        self.model_config: dict[str, Any] | None = None
        self.offsets: dict[TopicPartition, int] = {}
        self.events_rejected = 0
        # Dead letters not acknowledged when the snapshot was taken (set by the loop just
        # before, restored from it): saved with the offsets they were rejected below.
        self.undelivered: list[Rejection] = []
        self.watermark: float | None = None
        self.snapshot_version: int | None = None
        self.step_size: int | None = None  # the auto step-size controller's, kept by the loop
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
        if self.int8 is not None:
            self.int8.observe(batch)
        if len(batch):
            newest = float(batch.timestamps.max(initial=-math.inf))
            if math.isfinite(newest) and (self.watermark is None or newest > self.watermark):
                self.watermark = newest

    def to_snapshot(self, now: float) -> Snapshot:
        """A snapshot of the current state, numbered one past the last."""
        learner = self.learner
        if learner is None or self.model_config is None:
            raise RuntimeError("no model yet: nothing to snapshot")
        self._follow_model()
        training, optimizer_meta = flatten_optimizer_state(learner.optimizer.state_dict())
        weights = {key: value.detach() for key, value in learner.model.state_dict().items()}
        adaptation_meta: dict[str, Any] | None = None
        if self.adaptation is not None:
            tensors, adaptation_meta = self.adaptation.state_dict()
            training |= {_ADAPTATION + key: value for key, value in tensors.items()}
        pruning_meta: dict[str, Any] | None = None
        if self.pruning is not None:
            tensors, pruning_meta = self.pruning.state_dict()
            training |= {_PRUNING + key: value for key, value in tensors.items()}
        backlog, dead_letters = backlog_state(self.undelivered)
        training |= {_DEAD_LETTERS + key: value for key, value in backlog.items()}
        serving: dict[str, Any] = {}
        int8_meta: dict[str, Any] | None = None
        if self.int8 is not None:
            serving, int8_meta = self.int8.export(learner.model)
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
            "dead_letters": dead_letters,
            "watermark": self.watermark,
            "step_size": self.step_size,
            "metrics": _window_metrics(learner),
            "parameters": count_parameters(learner.model),
            "sparsity": sparsity(learner.model),
            "domains": self._domains(),
            "learner": learner.state_dict(),
            "optimizer": optimizer_meta,
            "adaptation": adaptation_meta,
            "pruning": pruning_meta,
            "int8": int8_meta,
        }
        version = (self.snapshot_version or 0) + 1
        return Snapshot(version, weights, training, manifest, serving)

    def _domains(self) -> list[dict[str, Any]]:
        adaptation = self.adaptation
        if adaptation is None:
            return []
        stored = adaptation.domain_store
        return [
            {
                "name": name,
                "active": name == adaptation.active,
                "reference_loss": stored.entry(name).reference_loss
                if stored is not None and name in stored
                else None,
            }
            for name in adaptation.domains
        ]

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
        prefer_fused(learner.optimizer)  # a snapshot from before fused steps says foreach
        learner.load_state_dict(manifest["learner"])
        saved = manifest.get("adaptation")
        if self.adaptation is not None and saved is not None:
            tensors = _part(snapshot.training, _ADAPTATION)
            self.adaptation.load_state_dict(tensors, saved)
            for signal in self.adaptation.reset_signals:
                log.warning(
                    "drift detector on %s changed since the snapshot: it starts afresh", signal,
                    extra={"event": "detector_reset", "signal": signal},
                )  # fmt: skip
        saved_pruning = manifest.get("pruning")
        if self.pruning is not None and saved_pruning is not None:
            self.pruning.load_state_dict(_part(snapshot.training, _PRUNING), saved_pruning)
        self.offsets = _offsets_from(manifest["offsets"])
        self.events_rejected = int(manifest["events_rejected"])
        self.undelivered = restore_backlog(
            _part(snapshot.training, _DEAD_LETTERS), manifest.get("dead_letters") or []
        )
        self.watermark = manifest.get("watermark")
        self.step_size = manifest.get("step_size")
        self.snapshot_version = snapshot.version

    def start_from(self, snapshot: Snapshot, *, weights: bool) -> list[str]:
        """Start afresh from another deployment's snapshot.

        Its architecture (structure transfer) and, if ``weights``, every matching tensor
        (parameter transfer). Offsets, optimizer and adaptation state are not taken.

        Returns:
            The tensor names loaded.
        """
        self._build(transferred_config(snapshot.manifest))
        assert self.learner is not None
        if not weights:
            return []
        return transfer_weights(self.learner.model, snapshot.weights)

    def _build(self, config: dict[str, Any]) -> None:
        learner = self._build_learner(config)
        # The model's own config: class growth updates it, and snapshots must describe that.
        self.model_config = (
            learner.model.config if isinstance(learner.model, SplitModel) else config
        )
        self.learner = learner
        self.adaptation = (
            None if self._build_adaptation is None else self._build_adaptation(learner)
        )
        self.pruning = (
            None if self._build_pruning is None else self._build_pruning(learner, self.adaptation)
        )

    def _follow_model(self) -> None:
        """Describe the live model: class growth and structured pruning change it."""
        assert self.learner is not None
        config = getattr(self.learner.model, "config", None)
        if isinstance(config, dict):
            self.model_config = dict(config)


def _window_metrics(learner: OnlineLearner) -> dict[str, Any]:
    """The manifest's ``metrics``: the prequential window (accuracy is None for regression)."""
    window = learner.window
    metrics: dict[str, Any] = {
        "prequential_accuracy": window.accuracy,
        "prequential_loss": window.loss,
        "learning_rate": learner.lr_policy.lr,
    }
    if window.task == "regression":
        metrics |= {"prequential_mae": window.mae, "prequential_rmse": window.rmse,
                    "prequential_r2": window.r2}  # fmt: skip
    return metrics


def _part(tensors: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {key[len(prefix) :]: value for key, value in tensors.items() if key.startswith(prefix)}


def _offsets_from(entries: Iterable[Mapping[str, Any]]) -> dict[TopicPartition, int]:
    return {
        TopicPartition(str(entry["topic"]), int(entry["partition"])): int(entry["next_offset"])
        for entry in entries
    }


def snapshot_offsets(snapshot: Snapshot) -> dict[TopicPartition, int]:
    """The next offset per partition recorded in a snapshot's manifest."""
    return _offsets_from(snapshot.manifest.get("offsets", []))
