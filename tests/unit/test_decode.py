"""JsonDecoder: every record is either decoded into tensors or rejected with a stable reason."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftd.decode import DecodedBatch, JsonDecoder
from driftd.records import Record

MAX_BYTES = 1_024
HUGE_INT = "1" + "0" * 400  # a JSON integer literal beyond float64's range


def record(value: bytes | None, offset: int = 0, timestamp_ms: int | None = None) -> Record:
    return Record(
        topic="events", partition=0, offset=offset, value=value, timestamp_ms=timestamp_ms
    )


def event(**fields: Any) -> bytes:
    """An event as Python's json writes it (NaN and Infinity become bare literals)."""
    return json.dumps(fields).encode()


def records(*values: bytes | None) -> list[Record]:
    return [record(value, offset=offset) for offset, value in enumerate(values)]


def classifier(**options: Any) -> JsonDecoder:
    config: dict[str, Any] = {
        "task": "classification",
        "n_features": 3,
        "n_classes": 3,
        "n_outputs": 1,
        "max_record_bytes": MAX_BYTES,
    }
    config.update(options)
    return JsonDecoder(**config)


def regressor(**options: Any) -> JsonDecoder:
    return classifier(task="regression", **options)


def reasons(batch: DecodedBatch) -> dict[int, str]:
    """Offset -> rejection reason."""
    return {rejection.record.offset: rejection.reason for rejection in batch.rejections}


def assert_only_rejection(batch: DecodedBatch, reason: str) -> None:
    assert len(batch) == 0
    assert [rejection.reason for rejection in batch.rejections] == [reason]


# --- rejection reasons -------------------------------------------------------------------------

REJECTED = [
    pytest.param(b"", "empty", id="empty-bytes"),
    pytest.param(None, "empty", id="none-value"),
    pytest.param(b"{not json", "not_json", id="broken-json"),
    pytest.param(b"\xff\xfe\x00garbage", "not_json", id="binary"),
    pytest.param(b'{"x": [1, 2, 3]', "not_json", id="truncated"),
    pytest.param(event(x=[math.nan, 1.0, 2.0]), "non_finite", id="python-json-NaN-literal"),
    pytest.param(event(x=[math.inf, 1.0, 2.0]), "non_finite", id="python-json-Infinity"),
    pytest.param(event(x=[1.0, -math.inf, 2.0]), "non_finite", id="python-json-minus-Infinity"),
    pytest.param(b'{"x": [1e999, 0, 0]}', "non_finite", id="1e999-overflows-float64"),
    pytest.param(b'{"x": [1e39, 0, 0]}', "non_finite", id="1e39-overflows-float32"),
    pytest.param(b"[1, 2, 3]", "not_object", id="list"),
    pytest.param(b'"x"', "not_object", id="string"),
    pytest.param(b"42", "not_object", id="number"),
    pytest.param(b"null", "not_object", id="null"),
    pytest.param(b'{"y": 1}', "missing_x", id="no-x"),
    pytest.param(b'{"x": null, "y": 1}', "missing_x", id="x-null"),
    pytest.param(b'{"x": ["1", "2", "3"]}', "wrong_type", id="x-of-strings"),
    pytest.param(b'{"x": [true, false, true]}', "wrong_type", id="x-of-booleans"),
    pytest.param(b'{"x": [1, 0, true]}', "wrong_type", id="x-with-one-boolean"),
    pytest.param(b'{"x": [1, [2], 3]}', "wrong_type", id="x-nested-list"),
    pytest.param(b'{"x": [1, null, 3]}', "wrong_type", id="x-with-null"),
    pytest.param(b'{"x": "1,2,3"}', "wrong_type", id="x-string"),
    pytest.param(b'{"x": 5}', "wrong_type", id="x-scalar"),
    pytest.param(b'{"x": {"a": 1, "b": 2, "c": 3}}', "wrong_type", id="named-x-unconfigured"),
    pytest.param(b'{"x": [1, 2]}', "wrong_dimension", id="too-few-features"),
    pytest.param(b'{"x": [1, 2, 3, 4]}', "wrong_dimension", id="too-many-features"),
    pytest.param(b'{"x": []}', "wrong_dimension", id="no-features"),
    pytest.param(b'{"x": [1, 2, 3], "y": 3}', "unknown_label", id="label-equals-n-classes"),
    pytest.param(b'{"x": [1, 2, 3], "y": -1}', "unknown_label", id="negative-label"),
    pytest.param(b'{"x": [1, 2, 3], "y": 7.0}', "unknown_label", id="integral-float-too-big"),
    pytest.param(b'{"x": [1, 2, 3], "y": "cat"}', "unknown_label", id="name-without-labels"),
    pytest.param(b'{"x": [1, 2, 3], "y": 1.5}', "wrong_type", id="fractional-label"),
    pytest.param(b'{"x": [1, 2, 3], "y": true}', "wrong_type", id="boolean-label"),
    pytest.param(b'{"x": [1, 2, 3], "y": [1]}', "wrong_type", id="list-label"),
    pytest.param(b'{"x": [1, 2, 3], "ts": "yesterday"}', "wrong_type", id="ts-string"),
    pytest.param(b'{"x": [1, 2, 3], "ts": true}', "wrong_type", id="ts-boolean"),
    pytest.param(event(x=[1, 2, 3], ts=math.nan), "wrong_type", id="ts-NaN"),
    pytest.param(b'{"x": [1, 2, 3], "domain": 5}', "wrong_type", id="domain-number"),
    pytest.param(b'{"x": [1, 2, 3], "domain": ["a"]}', "wrong_type", id="domain-list"),
    pytest.param(b"{" + b" " * MAX_BYTES + b"}", "oversized", id="oversized"),
]


@pytest.mark.parametrize(("value", "reason"), REJECTED)
def test_bad_record_is_rejected_with_its_reason(value: bytes | None, reason: str) -> None:
    decoder = classifier()
    bad = record(value, offset=7)
    batch = decoder.decode_many([bad])
    assert len(batch) == 0
    assert batch.x.shape == (0, 3)
    assert batch.y.shape == (0,)
    assert len(batch.rejections) == 1
    rejection = batch.rejections[0]
    assert rejection.record is bad
    assert rejection.reason == reason
    assert rejection.detail


# Dead-letter headers and logs carry these words: they change only on purpose.
DETAILS = [
    pytest.param({}, b"", "empty", "record has no value", id="empty"),
    pytest.param({}, b"{" + b" " * MAX_BYTES + b"}", "oversized",
                 f"{MAX_BYTES + 2} bytes > limit {MAX_BYTES}", id="oversized"),
    pytest.param({}, b"{not json", "not_json", "not valid JSON: Expecting property name enclosed "
                 "in double quotes: line 1 column 2 (char 1)", id="not-json"),
    pytest.param({}, b"[1, 2, 3]", "not_object", "expected a JSON object, got list", id="list"),
    pytest.param({}, b'{"y": 1}', "missing_x", "no 'x' field", id="no-x"),
    pytest.param({}, b'{"x": "1,2,3"}', "wrong_type", "'x' must be a list or an object",
                 id="x-string"),
    pytest.param({}, b'{"x": [1, "2", 3]}', "wrong_type", "'x' must hold only numbers",
                 id="x-with-string"),
    pytest.param({}, b'{"x": {"a": 1}}', "wrong_type",
                 "named features need event.feature_names configured", id="named-unconfigured"),
    pytest.param({"feature_names": ["a", "b", "c"]}, b'{"x": {"a": 1, "c": 3}}',
                 "missing_feature", "feature 'b' is missing", id="named-missing"),
    pytest.param({}, b'{"x": [1, 2]}', "wrong_dimension", "2 features, expected 3", id="width"),
    pytest.param({"n_features": None}, b'{"x": []}', "wrong_dimension", "'x' is empty",
                 id="first-empty"),
    pytest.param({"n_features": None}, b'{"x": [NaN, 1]}', "non_finite",
                 "features hold NaN or infinity", id="first-non-finite"),
    pytest.param({}, b'{"x": [1e39, 0, 0]}', "non_finite", "features hold NaN or infinity",
                 id="non-finite"),
    pytest.param({}, b'{"x": [1, 2, 3], "y": 3}', "unknown_label", "label 3 outside [0, 3)",
                 id="label-range"),
    pytest.param({}, b'{"x": [1, 2, 3], "y": "cat"}', "unknown_label",
                 "label 'cat' is not configured", id="label-name"),
    pytest.param({}, b'{"x": [1, 2, 3], "y": 1e999}', "unknown_label",
                 "label is out of any class range", id="label-infinite"),
    pytest.param({}, b'{"x": [1, 2, 3], "y": 1.5}', "wrong_type",
                 "'y' must be a class index or name", id="label-fraction"),
    pytest.param({}, b'{"x": [1, 2, 3], "ts": "now"}', "wrong_type",
                 "'ts' must be epoch seconds or null", id="ts"),
    pytest.param({}, b'{"x": [1, 2, 3], "domain": 5}', "wrong_type",
                 "'domain' must be a string or null", id="domain"),
    pytest.param({"task": "regression", "n_outputs": 2}, b'{"x": [1, 2, 3], "y": "1"}',
                 "wrong_type", "'y' must be a number or list of numbers", id="target-type"),
    pytest.param({"task": "regression", "n_outputs": 2}, b'{"x": [1, 2, 3], "y": [1]}',
                 "wrong_dimension", "1 targets, expected 2", id="target-width"),
    pytest.param({"task": "regression", "n_outputs": 2}, b'{"x": [1, 2, 3], "y": [1, 1e39]}',
                 "non_finite", "'y' holds NaN or infinity", id="target-non-finite"),
]  # fmt: skip


@pytest.mark.parametrize(("options", "value", "reason", "detail"), DETAILS)
def test_rejection_detail_is_stable(
    options: dict[str, Any], value: bytes, reason: str, detail: str
) -> None:
    batch = classifier(**options).decode_many([record(value)])
    assert [(r.reason, r.detail) for r in batch.rejections] == [(reason, detail)]


def test_python_json_nan_literal_is_not_a_parse_error() -> None:
    value = event(x=[1.0, math.nan, 2.0])
    assert b"NaN" in value  # what Python's json writes by default
    assert_only_rejection(classifier().decode_many([record(value)]), "non_finite")


def test_non_finite_class_label_is_rejected() -> None:
    for value, reason in (
        (event(x=[1, 2, 3], y=math.nan), "wrong_type"),
        (b'{"x": [1, 2, 3], "y": 1e999}', "unknown_label"),
    ):
        batch = classifier().decode_many([record(value)])
        assert len(batch) == 0
        assert [rejection.reason for rejection in batch.rejections] == [reason]


def test_oversized_is_checked_before_parsing_and_the_limit_is_inclusive() -> None:
    body = b'{"x": [1, 2, 3]}'
    at_limit = body[:-1] + b" " * (MAX_BYTES - len(body)) + b"}"
    assert len(at_limit) == MAX_BYTES
    over = at_limit[:-1] + b" }"
    batch = classifier().decode_many(records(at_limit, over))
    assert [r.offset for r in batch.records] == [0]
    assert reasons(batch) == {1: "oversized"}
    assert str(MAX_BYTES) in batch.rejections[0].detail


def test_oversized_wins_over_not_json() -> None:
    batch = classifier().decode_many([record(b"\xff" * (MAX_BYTES + 1))])
    assert_only_rejection(batch, "oversized")


# --- good records ------------------------------------------------------------------------------


def test_good_records_are_kept_in_order_with_exact_tensors() -> None:
    values = [
        event(x=[0.5, -1, 2], y=2, domain="a", ts=10.0),
        b"not json",
        event(x=[1, 2, 3], y=0),
        event(x=[1, 2], y=0),
        event(x=[3.25, 0, -0.125], y=1.0, domain="b", id="e-4"),
        event(x=[1, 2, 3], y=9),
        event(x=[7, 8, 9]),
    ]
    batch = classifier().decode_many(records(*values))
    assert [r.offset for r in batch.records] == [0, 2, 4, 6]
    assert reasons(batch) == {1: "not_json", 3: "wrong_dimension", 5: "unknown_label"}
    assert len(batch) == 4
    assert batch.x.dtype == torch.float32
    assert batch.x.shape == (4, 3)
    assert torch.equal(
        batch.x,
        torch.tensor(
            [[0.5, -1.0, 2.0], [1.0, 2.0, 3.0], [3.25, 0.0, -0.125], [7.0, 8.0, 9.0]],
            dtype=torch.float32,
        ),
    )
    assert batch.y.dtype == torch.int64
    assert batch.y.tolist() == [2, 0, 1, 0]
    assert batch.labelled.dtype == torch.bool
    assert batch.labelled.tolist() == [True, True, True, False]
    assert list(batch.domains) == ["a", None, "b", None]


def test_features_are_rounded_to_float32() -> None:
    batch = classifier().decode_many([record(event(x=[0.1, 1 / 3, 2**40 + 1]))])
    assert batch.x.tolist() == [
        [float(np.float32(0.1)), float(np.float32(1 / 3)), float(np.float32(2**40 + 1))]
    ]


def test_records_are_kept_by_identity() -> None:
    good = record(event(x=[1, 2, 3], y=1), offset=3)
    assert classifier().decode_many([good]).records[0] is good


def test_events_without_y_are_predicted_but_not_learned() -> None:
    values = [
        event(x=[1, 2, 3], y=1),
        event(x=[1, 2, 3]),
        event(x=[1, 2, 3], y=None),
        event(x=[1, 2, 3], y=2),
    ]
    batch = classifier().decode_many(records(*values))
    assert batch.labelled.tolist() == [True, False, False, True]
    assert batch.y.tolist() == [1, 0, 0, 2]


def test_empty_batch_has_empty_tensors_of_the_right_shape() -> None:
    batch = classifier().decode_many([])
    assert len(batch) == 0
    assert batch.x.shape == (0, 3)
    assert batch.x.dtype == torch.float32
    assert batch.y.shape == (0,)
    assert batch.y.dtype == torch.int64
    assert batch.labelled.shape == (0,)
    assert batch.timestamps.shape == (0,)
    assert list(batch.rejections) == []


def test_timestamps_come_from_ts_else_the_record_else_nan() -> None:
    batch = classifier().decode_many(
        [
            record(event(x=[1, 2, 3], ts=1_700_000_000.5), offset=0, timestamp_ms=5),
            record(event(x=[1, 2, 3], ts=1_700_000_001), offset=1),
            record(event(x=[1, 2, 3]), offset=2, timestamp_ms=1_700_000_002_250),
            record(event(x=[1, 2, 3], ts=None), offset=3, timestamp_ms=0),
            record(event(x=[1, 2, 3]), offset=4),
        ]
    )
    assert batch.timestamps.dtype == np.float64
    assert batch.timestamps[:4].tolist() == [
        1_700_000_000.5,
        1_700_000_001.0,
        1_700_000_002.25,
        0.0,
    ]
    assert math.isnan(batch.timestamps[4])


def test_domains_are_kept_per_event() -> None:
    values = [
        event(x=[1, 2, 3], domain="night"),
        event(x=[1, 2, 3], domain=None),
        event(x=[1, 2, 3]),
        event(x=[1, 2, 3], domain=""),
    ]
    assert list(classifier().decode_many(records(*values)).domains) == ["night", None, None, ""]


def test_field_names_are_configurable() -> None:
    decoder = classifier(
        x_field="features", y_field="label", ts_field="time", domain_field="site", id_field="key"
    )
    value = event(features=[1, 2, 3], label=2, time=12.5, site="eu", x="ignored", y="ignored")
    batch = decoder.decode_many([record(value)])
    assert batch.x.tolist() == [[1.0, 2.0, 3.0]]
    assert batch.y.tolist() == [2]
    assert batch.timestamps.tolist() == [12.5]
    assert list(batch.domains) == ["eu"]
    assert reasons(decoder.decode_many([record(event(x=[1, 2, 3]))])) == {0: "missing_x"}


# --- the feature dimension ---------------------------------------------------------------------


def test_first_valid_event_fixes_the_dimension() -> None:
    decoder = classifier(n_features=None)
    assert decoder.n_features is None
    batch = decoder.decode_many(records(event(x=[1, 2]), event(x=[1, 2, 3]), event(x=[3, 4])))
    assert decoder.n_features == 2
    assert batch.x.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    assert reasons(batch) == {1: "wrong_dimension"}
    later = decoder.decode_many(records(event(x=[1, 2, 3]), event(x=[5, 6])))
    assert reasons(later) == {0: "wrong_dimension"}
    assert later.x.tolist() == [[5.0, 6.0]]


@pytest.mark.parametrize(
    "first",
    [
        pytest.param(b'{"x": ["a", "b", "c", "d"]}', id="x-of-strings"),
        pytest.param(b'{"x": [1, 2, 3, 4], "y": 99}', id="bad-label"),
        pytest.param(b'{"x": [1, 2, 3, 4], "ts": "now"}', id="bad-ts"),
        pytest.param(b'{"x": [1, 2, 3, 4], "domain": 1}', id="bad-domain"),
        pytest.param(b'{"x": []}', id="empty-x"),
    ],
)
def test_an_invalid_first_event_does_not_fix_the_dimension(first: bytes) -> None:
    decoder = classifier(n_features=None)
    batch = decoder.decode_many(records(first, event(x=[1, 2], y=1)))
    assert decoder.n_features == 2
    assert [r.offset for r in batch.records] == [1]
    assert batch.x.tolist() == [[1.0, 2.0]]


def test_a_first_event_with_non_finite_features_does_not_fix_the_dimension() -> None:
    decoder = classifier(n_features=None)
    batch = decoder.decode_many(records(event(x=[math.nan, 1, 2]), event(x=[1, 2], y=1)))
    assert reasons(batch) == {0: "non_finite"}
    assert decoder.n_features == 2
    assert batch.x.tolist() == [[1.0, 2.0]]


def test_no_valid_event_leaves_the_dimension_open() -> None:
    decoder = classifier(n_features=None)
    batch = decoder.decode_many(records(b"nope", b'{"x": []}'))
    assert decoder.n_features is None
    assert batch.x.shape == (0, 0)
    assert decoder.decode_many([record(event(x=[1, 2, 3, 4, 5]))]).x.shape == (1, 5)
    assert decoder.n_features == 5


# --- named features and labels -----------------------------------------------------------------


def test_named_features_follow_the_configured_order() -> None:
    decoder = classifier(n_features=None, feature_names=("a", "b", "c"))
    assert decoder.n_features == 3
    values = [
        event(x={"c": 3, "a": 1, "b": 2}),
        event(x={"b": -1.5, "c": 0, "a": 9, "unused": 100}),
        event(x=[4, 5, 6]),
    ]
    batch = decoder.decode_many(records(*values))
    assert batch.x.tolist() == [[1.0, 2.0, 3.0], [9.0, -1.5, 0.0], [4.0, 5.0, 6.0]]


def test_a_missing_named_feature_is_rejected_by_name() -> None:
    decoder = classifier(n_features=None, feature_names=("a", "b", "c"))
    batch = decoder.decode_many([record(event(x={"a": 1, "c": 3}))])
    assert_only_rejection(batch, "missing_feature")
    assert "'b'" in batch.rejections[0].detail


def test_named_feature_values_must_be_numbers() -> None:
    decoder = classifier(n_features=None, feature_names=("a", "b"))
    batch = decoder.decode_many(records(event(x={"a": 1, "b": "2"}), event(x={"a": 1, "b": True})))
    assert reasons(batch) == {0: "wrong_type", 1: "wrong_type"}


def test_feature_names_must_agree_with_n_features() -> None:
    with pytest.raises(ValueError, match="n_features=2"):
        classifier(n_features=2, feature_names=("a", "b", "c"))


def test_string_labels_map_to_their_index() -> None:
    decoder = classifier(n_classes=10, labels=("cat", "dog", "bird"))
    assert decoder.n_classes == 3
    values = [
        event(x=[1, 2, 3], y="dog"),
        event(x=[1, 2, 3], y="bird"),
        event(x=[1, 2, 3], y=0),
        event(x=[1, 2, 3], y="fish"),
        event(x=[1, 2, 3], y=3),
        event(x=[1, 2, 3], y="Dog"),
    ]
    batch = decoder.decode_many(records(*values))
    assert batch.y.tolist() == [1, 2, 0]
    assert reasons(batch) == {3: "unknown_label", 4: "unknown_label", 5: "unknown_label"}


# --- regression --------------------------------------------------------------------------------


def test_regression_scalar_and_list_targets() -> None:
    values = [event(x=[1, 2, 3], y=2.5), event(x=[1, 2, 3], y=[-1]), event(x=[1, 2, 3])]
    batch = regressor().decode_many(records(*values))
    assert batch.y.dtype == torch.float32
    assert batch.y.shape == (3, 1)
    assert batch.y.tolist() == [[2.5], [-1.0], [0.0]]
    assert batch.labelled.tolist() == [True, True, False]


def test_regression_with_several_outputs() -> None:
    decoder = regressor(n_outputs=2)
    values = [
        event(x=[1, 2, 3], y=[1, 2.5]),
        event(x=[1, 2, 3], y=1.0),
        event(x=[1, 2, 3], y=[1, 2, 3]),
        event(x=[1, 2, 3]),
    ]
    batch = decoder.decode_many(records(*values))
    assert batch.y.shape == (2, 2)
    assert batch.y.tolist() == [[1.0, 2.5], [0.0, 0.0]]
    assert reasons(batch) == {1: "wrong_dimension", 2: "wrong_dimension"}


def test_empty_regression_batch_has_target_columns() -> None:
    assert regressor(n_outputs=4).decode_many([]).y.shape == (0, 4)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        pytest.param(event(x=[1, 2, 3], y=math.nan), "non_finite", id="NaN"),
        pytest.param(event(x=[1, 2, 3], y=[math.inf]), "non_finite", id="Infinity-in-list"),
        pytest.param(b'{"x": [1, 2, 3], "y": 1e999}', "non_finite", id="1e999"),
        pytest.param(b'{"x": [1, 2, 3], "y": "2.5"}', "wrong_type", id="string"),
        pytest.param(b'{"x": [1, 2, 3], "y": [true]}', "wrong_type", id="boolean"),
        pytest.param(b'{"x": [1, 2, 3], "y": {"v": 1}}', "wrong_type", id="object"),
        pytest.param(b'{"x": [1, 2, 3], "y": []}', "wrong_dimension", id="empty-list"),
    ],
)
def test_bad_regression_target_is_rejected(value: bytes, reason: str) -> None:
    assert_only_rejection(regressor().decode_many([record(value)]), reason)


def test_regression_target_overflowing_float32_is_rejected() -> None:
    batch = regressor().decode_many([record(b'{"x": [1, 2, 3], "y": 1e39}')])
    assert_only_rejection(batch, "non_finite")


# --- integers beyond float64 -------------------------------------------------------------------


def test_huge_integer_feature_is_rejected_without_losing_the_batch() -> None:
    values = [event(x=[1, 2, 3], y=1), ('{"x": [' + HUGE_INT + ", 0, 0]}").encode()]
    batch = classifier().decode_many(records(*values))
    assert [r.offset for r in batch.records] == [0]
    assert reasons(batch) == {1: "non_finite"}  # as for 1e999


def test_huge_integer_regression_target_is_rejected_without_losing_the_batch() -> None:
    values = [event(x=[1, 2, 3], y=1), ('{"x": [1, 2, 3], "y": ' + HUGE_INT + "}").encode()]
    batch = regressor().decode_many(records(*values))
    assert [r.offset for r in batch.records] == [0]
    assert reasons(batch) == {1: "non_finite"}  # as for 1e999


def test_huge_integer_timestamp_is_rejected_without_losing_the_batch() -> None:
    values = [event(x=[1, 2, 3], y=1), ('{"x": [1, 2, 3], "ts": ' + HUGE_INT + "}").encode()]
    batch = classifier().decode_many(records(*values))
    assert [r.offset for r in batch.records] == [0]
    assert reasons(batch) == {1: "wrong_type"}  # as for a NaN ts


def test_huge_integer_class_label_is_an_unknown_label() -> None:
    value = ('{"x": [1, 2, 3], "y": ' + HUGE_INT + "}").encode()
    assert_only_rejection(classifier().decode_many([record(value)]), "unknown_label")


# --- deep nesting ------------------------------------------------------------------------------

DEPTH = 100_000


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"[" * DEPTH + b"]" * DEPTH, id="lists"),
        pytest.param(b'{"a": ' * DEPTH + b"1" + b"}" * DEPTH, id="objects"),
        pytest.param(b'{"x": ' + b"[" * DEPTH + b"]" * DEPTH + b"}", id="x-lists"),
    ],
)
def test_deeply_nested_json_is_rejected_not_a_crash(value: bytes) -> None:
    decoder = classifier(max_record_bytes=len(value))
    good = event(x=[1, 2, 3], y=1)
    batch = decoder.decode_many(records(good, value))
    assert [r.offset for r in batch.records] == [0]
    assert reasons(batch) == {1: "not_json"}


def test_moderately_nested_x_is_the_wrong_type() -> None:
    value = b'{"x": ' + b"[" * 500 + b"]" * 500 + b"}"
    assert_only_rejection(classifier().decode_many([record(value)]), "wrong_type")


# --- properties --------------------------------------------------------------------------------

# Any integer and any float, NaN and infinities included: none may escape as an exception.
numbers = st.integers() | st.floats()
json_scalars = st.none() | st.booleans() | numbers | st.text(max_size=10)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=5), children, max_size=5)
    ),
    max_leaves=20,
)
# Anything goes in each field: mostly rejected, exercising every check.
event_like = st.fixed_dictionaries(
    {},
    optional={
        "x": st.lists(numbers, max_size=5)
        | st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), numbers)
        | json_values,
        "y": st.none() | st.integers(-2, 4) | st.sampled_from(["cat", "dog", "fish"]) | json_values,
        "ts": st.none() | numbers | json_values,
        "domain": st.none() | st.text(max_size=5) | json_values,
        "id": json_values,
    },
)
# Nearly valid events, so that many are kept and the kept rows get checked.
plausible_events = st.fixed_dictionaries(
    {
        "x": st.lists(numbers, min_size=2, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), numbers, min_size=2)
    },
    optional={
        "y": st.none()
        | st.integers(-1, 3)
        | st.sampled_from(["cat", "dog", "fish"])
        | st.lists(numbers, min_size=1, max_size=2)
        | numbers,
        "ts": st.none() | numbers,
        "domain": st.none() | st.text(max_size=5),
    },
)
decoders = st.sampled_from(
    [
        {"n_features": None},
        {"n_features": 3},
        {"n_features": None, "feature_names": ("a", "b", "c")},
        {"n_features": None, "labels": ("cat", "dog")},
        {"task": "regression", "n_features": None, "n_outputs": 1},
        {"task": "regression", "n_features": 2, "n_outputs": 2},
    ]
)


def check_partition(
    decoder: JsonDecoder, batch: DecodedBatch, given_records: Sequence[Record]
) -> None:
    """Every record is kept or rejected exactly once, and the tensors agree with each other."""
    kept = [r.offset for r in batch.records]
    rejected = [rejection.record.offset for rejection in batch.rejections]
    assert sorted(kept + rejected) == list(range(len(given_records)))
    assert kept == sorted(kept)
    assert all(
        rejection.record is given_records[rejection.record.offset] for rejection in batch.rejections
    )
    n = len(batch)
    width = decoder.n_features or 0
    assert batch.x.shape == (n, width)
    assert batch.x.dtype == torch.float32
    assert bool(torch.isfinite(batch.x).all())
    assert batch.labelled.shape == (n,)
    assert batch.timestamps.shape == (n,)
    assert len(batch.domains) == n
    if decoder.task == "classification":
        assert batch.y.shape == (n,)
        assert bool(((batch.y >= 0) & (batch.y < decoder.n_classes)).all())
    else:
        assert batch.y.shape == (n, decoder.n_outputs)
        assert bool(torch.isfinite(batch.y).all())
    known = {"empty", "oversized", "not_json", "not_object", "missing_x", "wrong_type"}
    known |= {"wrong_dimension", "missing_feature", "non_finite", "unknown_label"}
    assert {rejection.reason for rejection in batch.rejections} <= known


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values=st.lists(st.none() | st.binary(max_size=64), max_size=20), options=decoders)
def test_arbitrary_bytes_never_raise_and_each_record_lands_once(
    values: list[bytes | None], options: dict[str, Any]
) -> None:
    decoder = classifier(max_record_bytes=48, **options)
    given_records = records(*values)
    check_partition(decoder, decoder.decode_many(given_records), given_records)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    documents=st.lists(plausible_events | event_like | json_values, max_size=12),
    options=decoders,
)
def test_arbitrary_json_never_raises_and_kept_rows_equal_the_event(
    documents: list[Any], options: dict[str, Any]
) -> None:
    decoder = classifier(**{"max_record_bytes": 10_000, **options})
    given_records = records(*(json.dumps(document).encode() for document in documents))
    batch = decoder.decode_many(given_records)
    check_partition(decoder, batch, given_records)
    for row, kept in zip(batch.x.tolist(), batch.records, strict=True):
        features = documents[kept.offset]["x"]
        if isinstance(features, dict):
            features = [features[name] for name in decoder.feature_names]
        assert row == [float(np.float32(value)) for value in features]
