"""Decoding raw records into a mini-batch of tensors; bad records become values, never raise.

An event is JSON: ``{"x": [floats] | {"name": float}, "y": label | null, "domain": str | null,
"id": str | null, "ts": epoch seconds | null}`` (field names configurable). Each record is
either decoded or turned into a :class:`~driftd.records.Rejection` with a stable reason:

``empty``, ``oversized``, ``not_json``, ``not_object``, ``missing_x``, ``wrong_type``,
``wrong_dimension``, ``missing_feature``, ``non_finite``, ``unknown_label``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import orjson
import torch

from driftd.records import Record, Rejection

_NUMBER_TYPES = frozenset({int, float})
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_Decoded = tuple[list[float], Any, float | None, str | None]


@dataclass(frozen=True)
class DecodedBatch:
    """The valid events of one poll, as tensors, plus the rejected records.

    Attributes:
        records: The valid events' raw records, in the order of the tensor rows.
        x: Features, float32, shape ``(n, n_features)``.
        y: Targets: int64 ``(n,)`` for classification, float32 ``(n, n_outputs)`` for
            regression. Rows of unlabelled events hold zeros.
        labelled: Bool ``(n,)``: whether the event carries a target to learn from.
        timestamps: Float64 ``(n,)`` epoch seconds: the event's ``ts``, else the record's
            timestamp, else NaN.
        domains: The ``domain`` field of each event, or None.
        rejections: The records that could not be decoded, with reasons.
    """

    records: Sequence[Record]
    x: torch.Tensor
    y: torch.Tensor
    labelled: torch.Tensor
    timestamps: np.ndarray
    domains: Sequence[str | None]
    rejections: Sequence[Rejection]

    def __len__(self) -> int:
        return len(self.records)


class _InvalidRecordError(Exception):
    """Internal: one record is invalid (reason, detail)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class JsonDecoder:
    """Turns JSON records into :class:`DecodedBatch` es.

    The feature count is fixed by ``n_features``; when that is None the first valid dense event
    fixes it (see :attr:`n_features`). Class indices must lie in ``[0, n_classes)``, or in
    ``[0, label_limit)`` when that is larger (class-incremental growth; not with ``labels``).
    """

    def __init__(
        self,
        *,
        task: Literal["classification", "regression"],
        n_features: int | None,
        n_classes: int,
        n_outputs: int,
        max_record_bytes: int,
        x_field: str = "x",
        y_field: str = "y",
        domain_field: str = "domain",
        id_field: str = "id",
        ts_field: str = "ts",
        feature_names: Sequence[str] = (),
        labels: Sequence[str] = (),
        label_limit: int | None = None,
    ) -> None:
        self.task = task
        self._n_features = len(feature_names) if feature_names else n_features
        if feature_names and n_features is not None and n_features != len(feature_names):
            raise ValueError(f"n_features={n_features} but {len(feature_names)} feature names")
        # Class-incremental growth accepts indices up to ``label_limit`` (the model grows).
        self.n_classes = len(labels) if labels else max(n_classes, label_limit or 0)
        self.n_outputs = n_outputs
        self.max_record_bytes = max_record_bytes
        self.x_field, self.y_field = x_field, y_field
        self.domain_field, self.id_field, self.ts_field = domain_field, id_field, ts_field
        self.feature_names = tuple(feature_names)
        self.label_index = {name: index for index, name in enumerate(labels)}

    @property
    def n_features(self) -> int | None:
        """Features per event; None until configured or inferred from a first valid event."""
        return self._n_features

    def decode_many(self, records: Sequence[Record]) -> DecodedBatch:
        """Decode a batch; every record ends up either in the tensors or in ``rejections``."""
        kept: list[Record] = []
        rows: list[list[float]] = []
        targets: list[Any] = []
        labelled: list[bool] = []
        timestamps: list[float] = []
        domains: list[str | None] = []
        rejections: list[Rejection] = []
        fast = self._fast_path(records)
        for record in records:
            decoded = fast(record)
            if decoded is None:  # not the common well-formed shape: validate in full
                try:
                    decoded = self._decode_one(record)
                except _InvalidRecordError as invalid:
                    rejections.append(Rejection(record, invalid.reason, invalid.detail))
                    continue
            x, y, ts, domain = decoded
            kept.append(record)
            rows.append(x)
            labelled.append(y is not None)
            targets.append(self._zero_target() if y is None else y)
            if ts is None:
                ts = record.timestamp_ms / 1000.0 if record.timestamp_ms is not None else math.nan
            timestamps.append(ts)
            domains.append(domain)
        return self._assemble(kept, rows, targets, labelled, timestamps, domains, rejections)

    def _fast_path(self, records: Sequence[Record]) -> Callable[[Record], _Decoded | None]:
        """A decoder for the common case only (dense ``x``, class index or scalar target).

        It returns None for anything else, which then goes through the full validation; on
        the hot path it saves most of the per-record cost of the general decoder.
        """
        loads, limit, numbers = orjson.loads, self.max_record_bytes, _NUMBER_TYPES
        x_field, y_field, ts_field, domain_field = (
            self.x_field, self.y_field, self.ts_field, self.domain_field
        )  # fmt: skip
        n_features, n_classes = self._n_features, self.n_classes
        classification = self.task == "classification"
        scalar_regression = not classification and self.n_outputs == 1

        def decode(record: Record) -> _Decoded | None:
            value = record.value
            if not value or len(value) > limit or n_features is None:
                return None
            try:
                event = loads(value)
                x, y = event[x_field], event.get(y_field)
                ts, domain = event.get(ts_field), event.get(domain_field)
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                return None
            if type(x) is not list or len(x) != n_features or not set(map(type, x)) <= numbers:
                return None
            if y is not None:
                if classification:
                    if type(y) is not int or not 0 <= y < n_classes:
                        return None
                elif scalar_regression and type(y) in numbers and abs(y) < _FLOAT32_MAX:
                    y = [y]
                else:
                    return None
            if (ts is not None and type(ts) is not float) or (
                domain is not None and type(domain) is not str
            ):
                return None
            return x, y, ts, domain

        return decode

    def _decode_one(self, record: Record) -> _Decoded:
        value = record.value
        if not value:
            raise _InvalidRecordError("empty", "record has no value")
        if len(value) > self.max_record_bytes:
            raise _InvalidRecordError(
                "oversized", f"{len(value)} bytes > limit {self.max_record_bytes}"
            )
        event = _parse_json(value)
        if not isinstance(event, dict):
            raise _InvalidRecordError(
                "not_object", f"expected a JSON object, got {type(event).__name__}"
            )
        x = self._features(event.get(self.x_field))
        y = self._target(event.get(self.y_field))
        ts = event.get(self.ts_field)
        if ts is not None and (type(ts) not in _NUMBER_TYPES or not math.isfinite(ts)):
            raise _InvalidRecordError(
                "wrong_type", f"{self.ts_field!r} must be epoch seconds or null"
            )
        domain = event.get(self.domain_field)
        if domain is not None and not isinstance(domain, str):
            raise _InvalidRecordError(
                "wrong_type", f"{self.domain_field!r} must be a string or null"
            )
        if self._n_features is None:
            if not _fits_float32(x):
                raise _InvalidRecordError("non_finite", "features hold NaN or infinity")
            self._n_features = len(x)  # the first valid event fixes the dimension
        return x, y, ts, domain

    def _features(self, x: Any) -> list[float]:
        if x is None:
            raise _InvalidRecordError("missing_x", f"no {self.x_field!r} field")
        if isinstance(x, dict):
            x = self._named_features(x)
        elif not isinstance(x, list):
            raise _InvalidRecordError("wrong_type", f"{self.x_field!r} must be a list or an object")
        if not set(map(type, x)) <= _NUMBER_TYPES:
            raise _InvalidRecordError("wrong_type", f"{self.x_field!r} must hold only numbers")
        if self._n_features is None:
            if not x:
                raise _InvalidRecordError("wrong_dimension", f"{self.x_field!r} is empty")
        elif len(x) != self._n_features:
            raise _InvalidRecordError(
                "wrong_dimension", f"{len(x)} features, expected {self._n_features}"
            )
        features: list[float] = x
        return features

    def _named_features(self, named: dict[str, Any]) -> list[Any]:
        if not self.feature_names:
            raise _InvalidRecordError(
                "wrong_type", "named features need event.feature_names configured"
            )
        try:
            return [named[name] for name in self.feature_names]
        except KeyError as missing:
            raise _InvalidRecordError(
                "missing_feature", f"feature {missing.args[0]!r} is missing"
            ) from None

    def _target(self, y: Any) -> Any:
        if y is None:
            return None
        if self.task == "regression":
            return self._regression_target(y)
        if isinstance(y, str):
            if y not in self.label_index:
                raise _InvalidRecordError("unknown_label", f"label {y[:64]!r} is not configured")
            return self.label_index[y]
        if type(y) is float:
            if math.isinf(y):
                raise _InvalidRecordError("unknown_label", "label is out of any class range")
            if y.is_integer():
                y = int(y)
        if type(y) is not int:
            raise _InvalidRecordError(
                "wrong_type", f"{self.y_field!r} must be a class index or name"
            )
        if not 0 <= y < self.n_classes:
            raise _InvalidRecordError("unknown_label", f"label {y} outside [0, {self.n_classes})")
        return y

    def _regression_target(self, y: Any) -> list[float]:
        values = y if isinstance(y, list) else [y]
        if not set(map(type, values)) <= _NUMBER_TYPES:
            raise _InvalidRecordError(
                "wrong_type", f"{self.y_field!r} must be a number or list of numbers"
            )
        if len(values) != self.n_outputs:
            raise _InvalidRecordError(
                "wrong_dimension", f"{len(values)} targets, expected {self.n_outputs}"
            )
        if not _fits_float32(values):
            raise _InvalidRecordError("non_finite", f"{self.y_field!r} holds NaN or infinity")
        return values

    def _zero_target(self) -> Any:
        return 0 if self.task == "classification" else [0.0] * self.n_outputs

    def _assemble(
        self,
        kept: list[Record],
        rows: list[list[float]],
        targets: list[Any],
        labelled: list[bool],
        timestamps: list[float],
        domains: list[str | None],
        rejections: list[Rejection],
    ) -> DecodedBatch:
        width = self._n_features or 0
        with np.errstate(over="ignore", invalid="ignore"):
            x = np.array(rows, dtype=np.float32).reshape(len(rows), width)
        finite = np.asarray(np.isfinite(x).all(axis=1), dtype=bool)
        if not finite.all():
            for index in np.flatnonzero(~finite).tolist():
                rejections.append(
                    Rejection(kept[index], "non_finite", "features hold NaN or infinity")
                )
            keep = [bool(ok) for ok in finite.tolist()]
            x = x[finite]
            kept = [item for item, ok in zip(kept, keep, strict=True) if ok]
            targets = [item for item, ok in zip(targets, keep, strict=True) if ok]
            labelled = [item for item, ok in zip(labelled, keep, strict=True) if ok]
            timestamps = [item for item, ok in zip(timestamps, keep, strict=True) if ok]
            domains = [item for item, ok in zip(domains, keep, strict=True) if ok]
        if self.task == "classification":
            y = torch.tensor(targets, dtype=torch.int64)
        else:
            y = torch.tensor(targets, dtype=torch.float32).reshape(len(targets), self.n_outputs)
        return DecodedBatch(
            records=kept,
            x=torch.from_numpy(x),
            y=y,
            labelled=torch.tensor(labelled, dtype=torch.bool),
            timestamps=np.array(timestamps, dtype=np.float64),
            domains=domains,
            rejections=rejections,
        )


def _parse_json(value: bytes) -> Any:
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        pass
    # orjson refuses NaN/Infinity literals that Python's json writes; parse them to say so.
    try:
        # Integers beyond 64 bits become floats (inf when huge), so range checks stay simple.
        return json.loads(value, parse_int=float)
    except (ValueError, RecursionError) as error:
        raise _InvalidRecordError("not_json", f"not valid JSON: {str(error)[:200]}") from None


def _fits_float32(values: list[Any]) -> bool:
    """Whether every number is finite once stored as float32."""
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(np.asarray(values, dtype=np.float32)).all())
