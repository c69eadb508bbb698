"""What a library user hands the learner, turned into what the daemon's events hold.

Features arrive as numpy arrays, pandas DataFrames, torch tensors, nested lists or (river's
protocol) one dict per event; labels as class indices, booleans, names, or numbers for
regression. :class:`FeatureLayout` fixes the feature order on first sight (a DataFrame's
columns, a dict's keys) and checks every later batch against it; :class:`ClassLabels` maps
labels to the model's class indices and back. Anything the daemon would dead-letter is refused
here with a ``ValueError`` that says which row and why.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

_FLOAT32_MAX = float(np.finfo(np.float32).max)


class FeatureLayout:
    """The feature count and, when known, the feature names and their order.

    Args:
        n_features: The width the settings fix (None: the first batch fixes it).
        names: Feature names in order (None: learnt from the first DataFrame or dict).
    """

    def __init__(self, n_features: int | None, names: Sequence[str] | None = None) -> None:
        self.n_features = len(names) if names else n_features
        self.names: list[str] | None = list(names) if names else None

    def matrix(self, x: Any) -> np.ndarray:
        """A float64 ``(n, n_features)`` array of ``x``, checked finite and float32-sized.

        Raises:
            ValueError: ``x`` is not a numeric 2-D batch of the known width, lacks a known
                column, or holds NaN, infinity or a value beyond float32.
        """
        if hasattr(x, "columns") and hasattr(x, "to_numpy"):  # a pandas DataFrame
            x = self._ordered_columns(x)
        elif hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor
            x = x.detach().cpu().numpy()
        try:
            array = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ValueError(f"features must be numbers: {error}") from None
        if array.ndim != 2:
            raise ValueError(f"expected a 2-D batch (n, n_features), got shape {array.shape}")
        self._check_width(array.shape[1])
        _check_finite(array)
        return array

    def row(self, x: Mapping[str, Any]) -> np.ndarray:
        """One event's dict as a ``(1, n_features)`` array, in the order of the first dict.

        Raises:
            ValueError: A known feature is missing, or a value is not a finite number.
        """
        named = {str(name): value for name, value in x.items()}  # as DataFrame columns are
        if self.names is None:
            self.names = list(named)
        try:
            values = [named[name] for name in self.names]
        except KeyError as missing:
            raise ValueError(f"feature {missing.args[0]!r} is missing") from None
        return self.matrix([values])

    def _ordered_columns(self, frame: Any) -> Any:
        columns = [str(column) for column in frame.columns]
        if self.names is None:
            self.names = columns
            return frame.to_numpy()
        missing = [name for name in self.names if name not in columns]
        if missing:
            raise ValueError(f"columns missing from the DataFrame: {missing}")
        positions = [columns.index(name) for name in self.names]
        return frame.to_numpy()[:, positions]

    def _check_width(self, width: int) -> None:
        if self.n_features is None:
            if width == 0:
                raise ValueError("a batch needs at least one feature")
            self.n_features = width
        elif width != self.n_features:
            raise ValueError(f"{width} features, expected {self.n_features}")


def _check_finite(array: np.ndarray) -> None:
    bad = ~(np.isfinite(array) & (np.abs(array) <= _FLOAT32_MAX))
    if bad.any():
        row, column = (int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"row {row}, feature {column}: {float(array[row, column])!r} is not a finite "
            f"float32 ({int(bad.any(axis=1).sum())} such rows)"
        )


class ClassLabels:
    """Maps a user's class labels to the model's class indices, and back.

    Integers are their own index (as in the daemon's events); booleans are 0 and 1; any other
    label (a name) gets the next free index on first sight, unless ``names`` fixes them (the
    ``event.labels`` setting). The first label seen fixes which kind is used.

    Args:
        n_classes: Class indices the model may predict (labels beyond are refused).
        names: Class names in index order (``event.labels``), if configured.
    """

    def __init__(self, n_classes: int, names: Sequence[Hashable] = ()) -> None:
        self.n_classes = n_classes
        self.names: list[Hashable] = list(names)
        self.kind: str | None = "name" if names else None
        self._configured = bool(names)  # then indices are accepted too, as in the daemon

    def indices(self, labels: Sequence[Any]) -> list[int | None]:
        """Class index of each label (None stays None: an unlabelled event, predicted only).

        Raises:
            ValueError: A label is of another kind than the first one, or out of range.
        """
        return [self._index(label, row) for row, label in enumerate(labels)]

    def _index(self, label: Any, row: int) -> int | None:
        if hasattr(label, "item") and not isinstance(label, str):  # numpy / torch scalars
            label = label.item()
        if label is None:
            return None
        kind = _kind_of(label)
        if self.kind is None:
            self.kind = kind
        if kind != self.kind and not (self._configured and kind == "int"):
            raise ValueError(
                f"row {row}: label {label!r} is a {kind}, earlier ones were {self.kind}"
            )
        if kind == "bool":
            return int(label)
        if kind == "int":
            index = int(label)
        elif label in self.names:
            return self.names.index(label)
        else:
            index = len(self.names)
            if index < self.n_classes:
                self.names.append(label)
        if not 0 <= index < self.n_classes:
            raise ValueError(
                f"row {row}: label {label!r} is beyond model.n_classes={self.n_classes}"
            )
        return index

    def label(self, index: int) -> Any:
        """The label of class ``index`` (the index itself when no label maps to it)."""
        if self.kind == "bool":
            return bool(index)
        if self.kind == "name" and index < len(self.names):
            return self.names[index]
        return index

    def labels_of(self, indices: np.ndarray) -> np.ndarray:
        """The labels of class indices (-1, no prediction, becomes None)."""
        if self.kind in (None, "int"):
            return indices
        labels = [self.label(i) if i >= 0 else None for i in indices.tolist()]
        if self.kind == "bool" and None not in labels:
            return np.array(labels, dtype=bool)
        return np.array(labels, dtype=object)

    def known(self) -> list[int]:
        """The class indices a prediction may name: those labels map to, or all."""
        if self.kind == "name":
            return list(range(len(self.names)))
        return list(range(self.n_classes))

    def state_dict(self) -> dict[str, Any]:
        """The mapping, JSON-ready (names must be JSON values to be saved)."""
        return {"kind": self.kind, "names": list(self.names)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""
        self.kind = state.get("kind")
        self.names = list(state.get("names") or [])


def _kind_of(label: Any) -> str:
    if isinstance(label, bool):
        return "bool"
    if isinstance(label, int) or (isinstance(label, float) and label.is_integer()):
        return "int"
    if isinstance(label, float):
        raise ValueError(f"class label {label!r} is neither a whole number nor a name")
    return "name"


def regression_targets(y: Any, n_rows: int, n_outputs: int) -> np.ndarray:
    """Regression targets as a float64 ``(n, n_outputs)`` array, checked finite.

    Raises:
        ValueError: Another number of rows or outputs, or a target that is not finite.
    """
    if hasattr(y, "detach") and hasattr(y, "cpu"):
        y = y.detach().cpu().numpy()
    elif hasattr(y, "to_numpy"):
        y = y.to_numpy()
    try:
        array = np.asarray(y, dtype=np.float64).reshape(n_rows, -1)
    except (TypeError, ValueError) as error:
        raise ValueError(f"regression targets must be {n_rows} rows of numbers: {error}") from None
    if array.shape[1] != n_outputs:
        raise ValueError(f"{array.shape[1]} targets per row, expected model.n_outputs={n_outputs}")
    _check_finite(array)
    return array


def label_list(y: Any, n_rows: int) -> list[Any]:
    """Class labels as a list of ``n_rows`` Python values.

    Raises:
        ValueError: Another number of labels than rows.
    """
    if hasattr(y, "detach") and hasattr(y, "cpu"):
        y = y.detach().cpu().numpy()
    if hasattr(y, "to_numpy"):  # a pandas Series
        y = y.to_numpy()
    if isinstance(y, np.ndarray):
        y = (y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y).tolist()
    labels = list(y)
    if len(labels) != n_rows:
        raise ValueError(f"{len(labels)} labels for {n_rows} rows")
    return labels
