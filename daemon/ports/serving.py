"""The serving ports and the values that flow through them: predictions, model swaps, refusals.

The inference loop (:mod:`driftd.serving.inference_loop`) talks to a :class:`Predictor` (the
hot-reloading :class:`~driftd.adapters.hot_model.HotModel`), a :class:`PredictionSink` and an
:class:`InferenceTelemetry`; :class:`Predictions`, :class:`ModelSwapped` and
:class:`ReloadRefused` are what those calls carry, so they live here with them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from driftd.records import TopicPartition

if TYPE_CHECKING:  # annotations only: the CLI starts without numpy
    import numpy as np

RELOAD_INTERVAL_S = 0.2
"""How often a served model checks for a newer snapshot, unless told otherwise (the one default
behind ``infer.reload_interval_s`` and ``HotModel(poll_interval_s=...)``)."""


class ModelNotReadyError(RuntimeError):
    """No snapshot has been served yet, so there is nothing to predict with."""


@dataclass(frozen=True, slots=True)
class Predictions:
    """The predictions for one batch, all made by one model version.

    Attributes:
        version: The snapshot version that made every prediction of the batch.
        classes: Classification: the most probable class per row, int64 ``(n,)``.
        probabilities: Classification: softmax probabilities, float32 ``(n, n_classes)``.
        values: Regression: the outputs, float32 ``(n, n_outputs)``.
    """

    version: int
    classes: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    values: np.ndarray | None = None

    def __len__(self) -> int:
        rows = self.classes if self.classes is not None else self.values
        return 0 if rows is None else len(rows)


@dataclass(frozen=True, slots=True)
class ModelSwapped:
    """A snapshot started serving.

    Attributes:
        version: The version now serving.
        previous_version: The version it replaced; None for the first model of a process.
        created_at: The snapshot's ``created_at`` (epoch seconds), if recorded.
        watermark: The newest event timestamp the snapshot learned from, if recorded.
        served_at: Epoch seconds when it started serving.
        load_seconds: Time to read, verify and build it (0 for a rollback, kept in memory).
        cause: ``latest`` (followed LATEST), ``pin`` or ``rollback``.
        newest: Whether it is newer than every version served before by this process: only
            then does it bring events to serving for the first time.
    """

    version: int
    previous_version: int | None
    created_at: float | None
    watermark: float | None
    served_at: float
    load_seconds: float
    cause: str
    newest: bool


@dataclass(frozen=True, slots=True)
class ReloadRefused:
    """A snapshot was not served; the current model (if any) keeps serving.

    Attributes:
        version: The refused version.
        reason: A stable label: ``missing``, ``corrupt``, ``unsupported``, ``incompatible``
            (another task or feature count than the serving contract) or ``bad_model`` (its
            model config or weights cannot build the network).
        detail: Why, for logs.
    """

    version: int
    reason: str
    detail: str


class Predictor(Protocol):
    """A model that predicts batches: :class:`~driftd.adapters.hot_model.HotModel`."""

    def predict(self, x: Any) -> Predictions:
        """Predict a batch of shape ``(n, n_features)``."""
        ...

    @property
    def ready(self) -> bool:
        """Whether a model is serving."""
        ...

    @property
    def n_features(self) -> int | None:
        """Features per row of the serving model; None before the first."""
        ...


class PredictionSink(Protocol):
    """Where predictions go (an output topic); sends are batched until :meth:`flush`."""

    def send(self, key: bytes | None, value: bytes) -> None:
        """Queue one prediction message."""
        ...

    def flush(self, timeout_s: float) -> None:
        """Block until every queued message is acknowledged; raise if one cannot be."""
        ...

    def close(self) -> None:
        """Flush what is pending and release resources."""
        ...


class InferenceTelemetry(Protocol):
    """What the inference worker reports; Prometheus or a recorder implements it."""

    def events_consumed(self, n: int) -> None:
        """``n`` records were read from the source."""
        ...

    def events_invalid(self, reason: str, n: int = 1) -> None:
        """``n`` records were rejected for ``reason``."""
        ...

    def predictions_made(self, latencies: np.ndarray) -> None:
        """One prediction per entry was delivered; entries are event-to-prediction seconds."""
        ...

    def delivery_failed(self) -> None:
        """A batch of predictions could not be acknowledged; its offsets stay uncommitted."""
        ...

    def model_swapped(self, swap: ModelSwapped) -> None:
        """A snapshot started serving."""
        ...

    def reload_refused(self, refusal: ReloadRefused) -> None:
        """A snapshot was refused."""
        ...

    def consumer_lag(self, lag: Mapping[TopicPartition, int]) -> None:
        """Per-partition lag of the source."""
        ...
