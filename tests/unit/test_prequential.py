"""PrequentialWindow: mean loss and accuracy over roughly the last ``size`` events."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from driftd.learning.prequential import PrequentialWindow


def test_empty_window_has_no_means() -> None:
    window = PrequentialWindow(10)
    assert (window.count, window.loss, window.accuracy) == (0, None, None)


@pytest.mark.parametrize("size", [0, -1])
def test_size_must_be_positive(size: int) -> None:
    with pytest.raises(ValueError, match="size"):
        PrequentialWindow(size)


def test_means_are_exact_over_the_events_of_all_batches() -> None:
    window = PrequentialWindow(100)
    window.update(4, 2.0, 3)
    window.update(4, 6.0, 1)
    assert window.count == 8
    assert window.loss == 1.0
    assert window.accuracy == 0.5


def test_empty_batches_are_ignored() -> None:
    window = PrequentialWindow(5)
    window.update(2, 1.0, 2)
    window.update(0, 99.0, 0)
    window.update(-3, 99.0, 0)
    assert (window.count, window.loss, window.accuracy) == (2, 0.5, 1.0)
    assert window.state_dict()["batches"] == [[2, 1.0, 2]]


def test_old_batches_are_evicted_once_the_rest_covers_the_size() -> None:
    window = PrequentialWindow(10)
    window.update(4, 4.0, 4)  # loss 1.0, all correct
    window.update(4, 8.0, 0)  # loss 2.0
    window.update(4, 12.0, 0)  # loss 3.0
    # 12 events: dropping the first batch would leave 8 < 10, so all three stay.
    assert window.count == 12
    assert window.loss == 2.0
    assert window.accuracy == pytest.approx(4 / 12)
    window.update(4, 16.0, 4)  # loss 4.0
    # 16 events: dropping the first batch leaves 12 >= 10, so it goes.
    assert window.count == 12
    assert window.loss == 3.0
    assert window.accuracy == pytest.approx(4 / 12)
    assert window.state_dict()["batches"] == [[4, 8.0, 0], [4, 12.0, 0], [4, 16.0, 4]]


def test_a_batch_larger_than_the_window_is_kept_whole() -> None:
    window = PrequentialWindow(5)
    window.update(3, 3.0, 0)
    window.update(20, 10.0, 20)
    assert (window.count, window.loss, window.accuracy) == (20, 0.5, 1.0)
    window.update(4, 8.0, 0)  # 24 - 20 = 4 < 5: the big batch stays
    assert window.count == 24
    window.update(1, 1.0, 1)  # 25 - 20 = 5 >= 5: the big batch goes
    assert (window.count, window.loss, window.accuracy) == (5, 1.8, 0.2)


def test_steady_stream_keeps_about_size_events() -> None:
    window = PrequentialWindow(100)
    for _ in range(1_000):
        window.update(7, 7.0, 7)
        assert window.count < 100 + 7
    assert window.count >= 100
    assert window.loss == 1.0
    assert window.accuracy == 1.0


def test_clear_forgets_everything() -> None:
    window = PrequentialWindow(10)
    window.update(5, 5.0, 5)
    window.clear()
    assert (window.count, window.loss, window.accuracy) == (0, None, None)
    assert window.state_dict() == {"size": 10, "batches": []}
    window.update(2, 3.0, 1)
    assert (window.count, window.loss, window.accuracy) == (2, 1.5, 0.5)


def test_state_dict_round_trips_through_json() -> None:
    window = PrequentialWindow(10)
    for index in range(6):
        window.update(3, 0.5 * index, index % 4)
    state = json.loads(json.dumps(window.state_dict()))
    restored = PrequentialWindow(1)
    restored.update(1, 100.0, 0)  # stale content must be replaced, not merged
    restored.load_state_dict(state)
    assert restored.size == 10
    assert restored.state_dict() == window.state_dict()
    assert (restored.count, restored.loss, restored.accuracy) == (
        window.count,
        window.loss,
        window.accuracy,
    )
    restored.update(3, 3.0, 3)
    window.update(3, 3.0, 3)
    assert restored.state_dict() == window.state_dict()


batches = st.lists(
    st.integers(min_value=0, max_value=50).flatmap(
        lambda count: st.tuples(
            st.just(count),
            st.floats(min_value=0.0, max_value=100.0),
            st.integers(min_value=0, max_value=count),
        )
    ),
    max_size=80,
)


def expected_window(size: int, added: list[tuple[int, float, int]]) -> list[tuple[int, float, int]]:
    """The shortest suffix of the non-empty batches holding ``size`` events, else all of them."""
    kept = [batch for batch in added if batch[0] > 0]
    for start in range(len(kept) - 1, -1, -1):
        if sum(count for count, _, _ in kept[start:]) >= size:
            return kept[start:]
    return kept


@given(size=st.integers(min_value=1, max_value=200), added=batches)
def test_window_holds_the_shortest_suffix_covering_size(
    size: int, added: list[tuple[int, float, int]]
) -> None:
    window = PrequentialWindow(size)
    largest = 0
    for count, loss_sum, correct in added:
        window.update(count, loss_sum, correct)
        largest = max(largest, count)
        assert window.count <= size + largest - 1 or window.count == 0
    expected = expected_window(size, added)
    expected_count = sum(count for count, _, _ in expected)
    total = sum(count for count, _, _ in added)
    assert window.count == expected_count
    assert window.count >= min(size, total)
    if expected_count:
        assert window.accuracy == sum(correct for _, _, correct in expected) / expected_count
        assert 0.0 <= window.accuracy <= 1.0
        assert window.loss == pytest.approx(
            sum(loss for _, loss, _ in expected) / expected_count, rel=1e-9, abs=1e-9
        )
    else:
        assert (window.loss, window.accuracy) == (None, None)
    assert [tuple(batch) for batch in window.state_dict()["batches"]] == expected


@given(size=st.integers(min_value=1, max_value=200), added=batches)
def test_state_dict_round_trip_preserves_the_window(
    size: int, added: list[tuple[int, float, int]]
) -> None:
    window = PrequentialWindow(size)
    for batch in added:
        window.update(*batch)
    restored = PrequentialWindow(size + 1)
    restored.load_state_dict(json.loads(json.dumps(window.state_dict())))
    assert restored.state_dict() == window.state_dict()
    assert restored.count == window.count
    assert restored.accuracy == window.accuracy
    if window.loss is None:
        assert restored.loss is None
    else:
        assert restored.loss == pytest.approx(window.loss, rel=1e-9, abs=1e-9)
