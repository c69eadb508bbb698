"""The cubic schedule of Zhu & Gupta and the choice of units to keep."""

from __future__ import annotations

import pytest
import torch

from driftd.pruning import SparsitySchedule, cubic_sparsity, select_units


def test_cubic_schedule_exact_values() -> None:
    values = [cubic_sparsity(k, initial=0.0, target=0.8, n_events=4) for k in range(6)]
    # s_k = 0.8 * (1 - (1 - k/4)^3): 0, 0.8*37/64, 0.8*7/8, 0.8*63/64, 0.8, then it stays
    assert values == pytest.approx([0.0, 0.4625, 0.7, 0.7875, 0.8, 0.8])
    assert cubic_sparsity(1, initial=0.2, target=0.5, n_events=2) == pytest.approx(0.4625)
    assert cubic_sparsity(-3, initial=0.1, target=0.5, n_events=2) == pytest.approx(0.1)


def test_schedule_gives_each_part_its_own_target() -> None:
    schedule = SparsitySchedule(targets={"shared": 0.5, "head": 0.25}, n_events=2)
    assert schedule.at(0) == {"shared": 0.0, "head": 0.0}
    assert schedule.at(1) == pytest.approx({"shared": 0.4375, "head": 0.21875})
    assert schedule.at(2) == pytest.approx({"shared": 0.5, "head": 0.25})
    assert not schedule.finished(1)
    assert schedule.finished(2)


@pytest.mark.parametrize(
    "kwargs",
    [{"n_events": 0}, {"targets": {"shared": 1.0}}, {"targets": {"shared": 0.2}, "initial": 0.3}],
)
def test_schedule_rejects_impossible_settings(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"n_events|target"):
        SparsitySchedule(**kwargs)  # type: ignore[arg-type]


def test_layer_scope_keeps_the_best_units_of_each_layer() -> None:
    scores = {"a": torch.tensor([0.5, 3.0, 1.0, 2.0]), "b": torch.tensor([9.0, 1.0])}
    keep = select_units(
        scores, parts={"a": "shared", "b": "head"}, original_units={"a": 4, "b": 2},
        sparsities={"shared": 0.5, "head": 0.9},
    )  # fmt: skip
    assert keep["a"].tolist() == [1, 3]
    assert keep["b"].tolist() == [0]  # 90% of 2 would leave none: min_units keeps one


def test_quota_counts_from_the_original_width_and_never_grows() -> None:
    scores = {"a": torch.tensor([1.0, 2.0, 3.0])}  # already shrunk from 8 to 3 units
    parts, original = {"a": "shared"}, {"a": 8}
    assert select_units(scores, parts=parts, original_units=original, sparsities={"shared": 0.75})[
        "a"
    ].tolist() == [1, 2]
    assert select_units(scores, parts=parts, original_units=original, sparsities={"shared": 0.1})[
        "a"
    ].tolist() == [0, 1, 2]


def test_global_scope_lets_units_compete_across_layers_on_normalised_scores() -> None:
    scores = {
        "a": torch.tensor([1.0, 1.0, 1.0, 5.0]),  # one standout unit, the rest redundant
        "b": torch.tensor([10.0, 11.0, 9.0, 10.0]),  # all alike, on a larger scale
    }
    keep = select_units(
        scores, parts={"a": "shared", "b": "shared"}, original_units={"a": 4, "b": 4},
        sparsities={"shared": 0.5}, scope="global",
    )  # fmt: skip
    # normalised: a = [0.5, 0.5, 0.5, 2.5], b ~ [1, 1.1, 0.9, 1]: 4 units kept in all
    assert keep["a"].tolist() == [3]
    assert keep["b"].tolist() == [0, 1, 3]
