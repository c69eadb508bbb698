"""``driftd.Learner``: the daemon's learning core as a library, with river's protocol.

Each :meth:`Learner.learn_many` call is one polled batch of the daemon's loop
(:meth:`driftd.loop.TrainingLoop.process`): the rows become the daemon's JSON events, are
decoded, predicted and learned in micro-batches of ``learner.micro_batch``, the input
standardiser is updated once after the batch is scored, and the LR policy, drift monitor,
adaptation and pruning act exactly as in ``driftd run``. Nothing is reimplemented here.

``learner.micro_batch=auto`` chooses the step size from the consumer's backlog; a call is a
poll with nothing waiting behind it, so steps get finer down to ``learner.min_micro_batch``
(the daemon keeping up with a live stream).

river's :meth:`Learner.learn_one` does not buffer: each event is a poll of one, learnt at
once, so :meth:`Learner.predict_one` always answers with everything learnt so far (as any
river model does). For throughput, pass mini-batches to :meth:`Learner.learn_many`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from river import base

from driftd.decode import DecodedBatch
from driftd.learning.learner import OnlineLearner, StepReport
from driftd.loop import TrainingLoop
from driftd.ports import Snapshot
from driftd.settings.root import Settings
from driftd.wiring.learning import configured_n_features, make_decoder

from .events import EventTelemetry, LearnerEvent
from .feed import CallPredictions, records_of
from .inputs import ClassLabels, FeatureLayout, label_list, regression_targets
from .snapshots import (
    directory_files,
    library_state,
    read_snapshot,
    write_files,
    write_snapshot,
)
from .wiring import build_loop, learning_sections, merged, resolve_settings, with_n_features


class Learner(base.Estimator):
    """A model that keeps learning, test-then-train, with the daemon's settings and core.

    ``Learner(...)`` makes a :class:`ClassifyingLearner` or a :class:`RegressingLearner`,
    following ``model.task``: river's metrics tell a classifier from a regressor by its class.
    As ``driftd run`` does, the first batch sets torch's intra-op threads to
    ``learner.torch_threads`` (1 by default: small online steps run best on one).

    Args:
        settings: Settings to use as they are (``overrides`` are laid over them).
        settings_file: A TOML settings file, as ``driftd run --config``.
        on_event: Called with each drift, adaptation and pruning outcome as it happens.
        **overrides: Settings sections, e.g. ``model={"n_classes": 3}``, ``learner={...}``.

    Raises:
        ConfigurationError: A setting is invalid (the message names the field and why).

    Example:
        >>> import numpy as np, driftd
        >>> learner = driftd.Learner(model={"n_classes": 2}, learner={"micro_batch": 16})
        >>> x = np.random.default_rng(0).normal(size=(64, 3))
        >>> predicted = learner.learn_many(x, (x[:, 0] > 0).astype(int))
    """

    settings: Settings  #: the effective settings (resolved once, by ``__new__``)

    def __new__(
        cls,
        settings: Settings | None = None,
        *,
        settings_file: str | Path | None = None,
        on_event: Callable[[LearnerEvent], None] | None = None,
        **overrides: Any,
    ) -> Learner:
        """The learner of the configured task (settings are resolved once, here)."""
        resolved = resolve_settings(settings, settings_file, overrides)
        if cls is Learner:
            regression = resolved.model.task == "regression"
            cls = RegressingLearner if regression else ClassifyingLearner
        learner: Learner = super().__new__(cls)
        learner.settings = resolved
        return learner

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        settings_file: str | Path | None = None,
        on_event: Callable[[LearnerEvent], None] | None = None,
        **overrides: Any,
    ) -> None:
        self.settings_file = settings_file
        self.on_event = on_event
        self.overrides = overrides
        event = self.settings.event
        self._features = FeatureLayout(
            configured_n_features(self.settings), event.feature_names or None
        )
        self._labels = ClassLabels(make_decoder(self.settings, None).n_classes, event.labels)
        self._telemetry = EventTelemetry(on_event=on_event)
        self._loop: TrainingLoop | None = None
        self._events_seen = 0
        self._call = CallPredictions(0, 0, None)

    # -- learning ----------------------------------------------------------------------------

    def learn_many(self, X: Any, y: Any, *, domains: Any = None) -> np.ndarray:  # noqa: N803
        """Predict, then learn, one batch (one poll of the daemon); return the predictions.

        Args:
            X: Features, ``(n, n_features)``: numpy, pandas DataFrame, torch tensor, lists.
            y: ``n`` class labels (None: an unlabelled event, predicted and not learnt), or
                numeric targets (regression).
            domains: The events' domain (one name, or one per row), as the event's ``domain``.

        Returns:
            What the model predicted for each row before learning it: class labels, or
            values (``(n,)``, or ``(n, n_outputs)`` for several outputs). A row whose loss
            overflowed (the daemon dead-letters it) predicts -1 (classes) or NaN (values).

        Raises:
            ValueError: Wrong feature count, NaN or infinity, an unknown label, or mismatched
                lengths (the message names the row).
        """
        features = self._features.matrix(X)
        targets = self._targets(y, len(features))
        records = records_of(features, targets, domains, first_offset=self._events_seen)
        loop = self._started()
        outputs = None if self._classifies else self.settings.model.n_outputs
        self._call = CallPredictions(self._events_seen, len(records), outputs)
        loop.choose_step_size(len(records), backlog=0)  # a call is all there is: nothing waits
        loop.process(records)
        self._events_seen += len(records)
        return self._decoded(self._call.rows)

    def learn_one(self, x: Mapping[str, Any], y: Any) -> None:
        """Learn one event (river's protocol): a poll of one, learnt at once."""
        self.learn_many(self._features.row(x), [y])

    # -- predicting --------------------------------------------------------------------------

    def predict_many(self, X: Any) -> np.ndarray:  # noqa: N803
        """Class labels, or values, the current model predicts for a batch (nothing learnt)."""
        outputs = self._outputs(self._features.matrix(X))
        if self._classifies:
            return self._decoded(outputs.argmax(dim=1).numpy())
        return self._values(outputs.numpy())

    def predict_proba_many(self, X: Any) -> np.ndarray:  # noqa: N803
        """Class probabilities, ``(n, n_classes)`` (softmax of the model's outputs).

        Raises:
            TypeError: The task is regression.
        """
        if not self._classifies:
            raise TypeError("predict_proba_many needs model.task=classification")
        return torch.softmax(self._outputs(self._features.matrix(X)), dim=1).numpy()

    def predict_one(self, x: Mapping[str, Any], **kwargs: Any) -> Any:
        """The label (or value) predicted for one event's features (river's protocol)."""
        predicted = self.predict_many(self._features.row(x))[0]
        return predicted.item() if isinstance(predicted, np.generic) else predicted

    def predict_proba_one(self, x: Mapping[str, Any], **kwargs: Any) -> dict[Any, float]:
        """Probability per class label seen so far, summing to 1 (river's protocol).

        Renormalised in float64 over the seen labels, as river's classifiers know only those.
        """
        probabilities = self.predict_proba_many(self._features.row(x))[0].astype(np.float64)
        known = list(self._labels.known())
        total = float(probabilities[known].sum()) if known else 0.0
        if total <= 0.0:
            return {}
        return {self._labels.label(i): float(probabilities[i]) / total for i in known}

    # -- state -------------------------------------------------------------------------------

    @property
    def events(self) -> list[LearnerEvent]:
        """Every drift, adaptation and pruning outcome so far, oldest first."""
        return self._telemetry.events

    @property
    def steps(self) -> int:
        """Gradient steps taken (the daemon's ``step``)."""
        return 0 if self._loop is None else self._loop.state.steps

    @property
    def n_features(self) -> int | None:
        """Features per event (None until configured or seen)."""
        return self._features.n_features

    @property
    def feature_names(self) -> list[str] | None:
        """Feature order fixed by the first DataFrame or dict (or ``event.feature_names``)."""
        return self._features.names

    @property
    def model(self) -> torch.nn.Module | None:
        """The live torch model (None before the first batch fixes its width)."""
        return None if self._loop is None else self._learner().model

    @property
    def metrics(self) -> dict[str, float | None]:
        """The prequential window's figures, as the daemon's metrics report them."""
        if self._loop is None:
            return {}
        learner = self._learner()
        window = learner.window
        figures = {"accuracy": window.accuracy, "loss": window.loss, "lr": learner.lr_policy.lr}
        if window.task == "regression":
            figures |= {"mae": window.mae, "rmse": window.rmse, "r2": window.r2}
        return figures

    def save(self, path: str | Path) -> int:
        """Write a snapshot in the daemon's format under directory ``path``; return its version.

        It is published (``LATEST``): :class:`driftd.HotModel` serves it, and ``driftd run``
        with ``snapshots.dir`` there resumes from it (a warm start: no stream offsets).

        Raises:
            RuntimeError: Nothing was learnt yet (no model exists).
        """
        return self._save(Path(path))

    def _save(self, path: Path, created_at: float | None = None) -> int:
        if self._loop is None or (self._events_seen == 0 and self.steps == 0):
            raise RuntimeError("nothing learnt yet: no model to save")
        library = {
            "settings": learning_sections(self.settings),
            "labels": self._labels.state_dict(),
            "feature_names": self._features.names,
        }
        keep = self.settings.snapshots.keep
        return write_snapshot(self._loop.state, path, library, keep=keep, created_at=created_at)

    @classmethod
    def load(
        cls,
        path: str | Path,
        settings: Settings | None = None,
        *,
        settings_file: str | Path | None = None,
        on_event: Callable[[LearnerEvent], None] | None = None,
        **overrides: Any,
    ) -> Learner:
        """The learner saved in ``path`` (or the newest snapshot ``driftd run`` wrote there).

        A learner's saved settings are used unless ``settings`` is given; ``overrides`` win.

        Raises:
            FileNotFoundError: ``path`` holds no readable snapshot.
        """
        snapshot = read_snapshot(Path(path))
        saved = library_state(snapshot)
        if settings is None and saved.get("settings"):
            overrides = merged(saved["settings"], overrides)
        learner = cls(settings, settings_file=settings_file, on_event=on_event, **overrides)
        learner._resume(snapshot, saved)
        return learner

    def __getstate__(self) -> dict[str, Any]:
        """What pickling and ``copy.deepcopy`` keep: settings, callback, events, a snapshot.

        The loop holds locks and threads; the learner travels as its own saved snapshot, so a
        copy goes on exactly as one :meth:`load` gave (the tests check it bit for bit).
        """
        files = None
        if self._loop is not None and (self._events_seen or self.steps):
            with tempfile.TemporaryDirectory() as directory:
                self._save(Path(directory), created_at=0.0)  # equal states pickle equal
                files = directory_files(Path(directory))
        return {
            "settings": self.settings, "settings_file": self.settings_file,
            "overrides": self.overrides, "on_event": self.on_event, "events": list(self.events),
            "events_seen": self._events_seen, "snapshot": files,
        }  # fmt: skip

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Rebuild a learner from :meth:`__getstate__` output."""
        self.settings = state["settings"]
        Learner.__init__(
            self, self.settings, settings_file=state["settings_file"],
            on_event=state["on_event"], **state["overrides"],
        )  # fmt: skip
        self._telemetry.events.extend(state["events"])
        self._events_seen = self._telemetry.events_seen = state["events_seen"]
        if state["snapshot"] is not None:
            with tempfile.TemporaryDirectory() as directory:
                write_files(state["snapshot"], Path(directory))
                snapshot = read_snapshot(Path(directory))
            self._resume(snapshot, library_state(snapshot))

    def _resume(self, snapshot: Snapshot, saved: Mapping[str, Any]) -> None:
        width = int(snapshot.manifest["model"]["n_features"])
        self._features = FeatureLayout(width, saved.get("feature_names") or self._features.names)
        self._labels.load_state_dict(saved.get("labels") or self._labels.state_dict())
        self._loop = self._build(width, resume_from=snapshot)

    # -- internals ---------------------------------------------------------------------------

    @property
    def _classifies(self) -> bool:
        return bool(self.settings.model.task == "classification")

    def _started(self) -> TrainingLoop:
        if self._loop is None:
            assert self._features.n_features is not None  # fixed by the batch just checked
            self._loop = self._build(self._features.n_features)
        return self._loop

    def _build(self, width: int, resume_from: Snapshot | None = None) -> TrainingLoop:
        loop = build_loop(
            with_n_features(self.settings, width),
            telemetry=self._telemetry,
            on_report=self._collect,
            resume_from=resume_from,
        )
        self._telemetry.step_of = lambda: loop.state.steps
        return loop

    def _learner(self) -> OnlineLearner:
        learner = self._started().state.learner
        assert learner is not None  # the width is known when the loop is built
        return learner

    def _outputs(self, features: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(features.astype(np.float32))
        return self._learner().predict_many(x).float().cpu()

    def _targets(self, y: Any, n_rows: int) -> list[Any]:
        if self._classifies:
            return self._labels.indices(label_list(y, n_rows))
        values = regression_targets(y, n_rows, self.settings.model.n_outputs).tolist()
        return [row[0] for row in values] if self.settings.model.n_outputs == 1 else values

    def _collect(self, report: StepReport, batch: DecodedBatch) -> None:
        """The loop's ``on_report``: keep the step's predictions; note where the stream is."""
        seen = self._call.collect(report, batch)
        if seen is not None:
            self._telemetry.events_seen = seen

    def _decoded(self, indices: np.ndarray) -> np.ndarray:
        return self._labels.labels_of(indices) if self._classifies else self._values(indices)

    def _values(self, outputs: np.ndarray) -> np.ndarray:
        return outputs[:, 0] if outputs.shape[1] == 1 else outputs


class ClassifyingLearner(Learner, base.Classifier):  # type: ignore[misc]
    """A :class:`Learner` with ``model.task=classification`` (a river classifier)."""

    @property
    def _multiclass(self) -> bool:
        return True


class RegressingLearner(Learner, base.Regressor):  # type: ignore[misc]
    """A :class:`Learner` with ``model.task=regression`` (a river regressor)."""
