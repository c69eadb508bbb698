"""What makes an event valid: every rule of :class:`~driftd.decode.JsonDecoder`, each written once.

:func:`event_decoder` checks one record's event and returns its fields, normalised (a class name
becomes its index, a scalar target a one-element list), or raises :class:`InvalidRecordError`
with a stable ``reason`` (a metric label) and a ``detail`` (for logs and dead-letter headers).
The checks run in a fixed order, so a record with several faults always gets the same reason.
Each is cheap for a well-formed event (a few type checks, no numpy): this is the hot path.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import orjson

_NUMBER_TYPES = frozenset({int, float})
_FLOAT32_MAX = float(np.finfo(np.float32).max)
NON_FINITE_FEATURES = "features hold NaN or infinity"

Decoded = tuple[list[Any], Any, float | None, str | None]
"""One valid event: features, target (None: unlabelled), timestamp, domain."""


class InvalidRecordError(Exception):
    """One record is invalid: ``reason`` is its stable label, ``detail`` says why."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def event_decoder(
    *,
    max_bytes: int,
    n_features: int | None,
    feature_names: Sequence[str],
    x_field: str,
    y_field: str,
    ts_field: str,
    domain_field: str,
    target: Callable[[Any], Any],
    on_width: Callable[[int], None],
) -> Callable[[bytes | None], Decoded]:
    """The validation of one record's value, configured once per batch.

    Args:
        max_bytes: Longest value accepted.
        n_features: Features per event; None lets the first valid event fix it.
        feature_names: The order of named features (empty: only lists are accepted).
        x_field: The features' field.
        y_field: The target's field.
        ts_field: The event time's field.
        domain_field: The domain's field.
        target: Checks a present target (:func:`class_index` or :func:`regression_target`).
        on_width: Told the feature count the first valid event fixed.
    """
    loads, numbers, isfinite = orjson.loads, _NUMBER_TYPES, math.isfinite

    def decode(value: bytes | None) -> Decoded:
        nonlocal n_features
        if not value or len(value) > max_bytes:
            raise _size_error(value, max_bytes)
        try:
            event = loads(value)
        except orjson.JSONDecodeError:
            event = _parse_python_json(value)
        if type(event) is not dict:
            raise InvalidRecordError(
                "not_object", f"expected a JSON object, got {type(event).__name__}"
            )
        x = features(event.get(x_field), n_features, x_field, feature_names)
        y = event.get(y_field)
        if y is not None:
            y = target(y)
        ts = event.get(ts_field)
        if ts is not None and (type(ts) not in numbers or not isfinite(ts)):
            raise InvalidRecordError("wrong_type", f"{ts_field!r} must be epoch seconds or null")
        domain = event.get(domain_field)
        if domain is not None and type(domain) is not str:
            raise InvalidRecordError("wrong_type", f"{domain_field!r} must be a string or null")
        if n_features is None:  # the first valid event fixes the dimension
            if not fits_float32(x):
                raise InvalidRecordError("non_finite", NON_FINITE_FEATURES)
            n_features = len(x)
            on_width(n_features)
        return x, y, ts, domain

    return decode


def features(x: Any, n_features: int | None, field: str, names: Sequence[str]) -> list[Any]:
    """The feature list: ``n_features`` numbers, a list or an object keyed by ``names``.

    With ``n_features`` None (not known yet) any non-empty width passes.
    """
    row: list[Any] = x if type(x) is list else _feature_list(x, field, names)
    if not _NUMBER_TYPES.issuperset(map(type, row)):
        raise InvalidRecordError("wrong_type", f"{field!r} must hold only numbers")
    if len(row) != n_features:
        if n_features is not None:
            raise InvalidRecordError(
                "wrong_dimension", f"{len(row)} features, expected {n_features}"
            )
        if not row:
            raise InvalidRecordError("wrong_dimension", f"{field!r} is empty")
    return row


def class_index(n_classes: int, label_index: Mapping[str, int], field: str) -> Callable[[Any], int]:
    """The classification target rule: an index in ``[0, n_classes)``, or a configured name."""

    def index(y: Any) -> int:
        label: int = y if type(y) is int else _index_of(y, label_index, field)
        if not 0 <= label < n_classes:
            raise InvalidRecordError("unknown_label", f"label {label} outside [0, {n_classes})")
        return label

    return index


def regression_target(n_outputs: int, field: str) -> Callable[[Any], list[Any]]:
    """The regression target rule: ``n_outputs`` numbers finite as float32 (a scalar for one)."""

    def values(y: Any) -> list[Any]:
        if type(y) in _NUMBER_TYPES:
            row = [y]
        elif type(y) is list and _NUMBER_TYPES.issuperset(map(type, y)):
            row = y
        else:
            raise InvalidRecordError("wrong_type", f"{field!r} must be a number or list of numbers")
        if len(row) != n_outputs:
            raise InvalidRecordError("wrong_dimension", f"{len(row)} targets, expected {n_outputs}")
        if not fits_float32(row):
            raise InvalidRecordError("non_finite", f"{field!r} holds NaN or infinity")
        return row

    return values


def fits_float32(values: Sequence[Any]) -> bool:
    """Whether every number is finite once stored as float32."""
    low, high = -_FLOAT32_MAX, _FLOAT32_MAX
    for value in values:
        if not low < value < high:  # NaN fails too
            break
    else:
        return True  # the common case, without numpy
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(np.asarray(values, dtype=np.float32)).all())


def _size_error(value: bytes | None, max_bytes: int) -> InvalidRecordError:
    if not value:
        return InvalidRecordError("empty", "record has no value")
    return InvalidRecordError("oversized", f"{len(value)} bytes > limit {max_bytes}")


def _parse_python_json(value: bytes) -> Any:
    # orjson refuses NaN/Infinity literals that Python's json writes; parse them to say so.
    try:
        # Integers beyond 64 bits become floats (inf when huge), so range checks stay simple.
        return json.loads(value, parse_int=float)
    except (ValueError, RecursionError) as error:
        raise InvalidRecordError("not_json", f"not valid JSON: {str(error)[:200]}") from None


def _feature_list(x: Any, field: str, names: Sequence[str]) -> list[Any]:
    if x is None:
        raise InvalidRecordError("missing_x", f"no {field!r} field")
    if not isinstance(x, dict):
        raise InvalidRecordError("wrong_type", f"{field!r} must be a list or an object")
    if not names:
        raise InvalidRecordError("wrong_type", "named features need event.feature_names configured")
    try:
        return [x[name] for name in names]
    except KeyError as missing:
        raise InvalidRecordError(
            "missing_feature", f"feature {missing.args[0]!r} is missing"
        ) from None


def _index_of(y: Any, label_index: Mapping[str, int], field: str) -> int:
    """A class given by name, or as an integral float (``2.0``); else the wrong type."""
    if isinstance(y, str):
        if y not in label_index:
            raise InvalidRecordError("unknown_label", f"label {y[:64]!r} is not configured")
        return label_index[y]
    if type(y) is float:
        if math.isinf(y):
            raise InvalidRecordError("unknown_label", "label is out of any class range")
        if y.is_integer():
            return int(y)
    raise InvalidRecordError("wrong_type", f"{field!r} must be a class index or name")
