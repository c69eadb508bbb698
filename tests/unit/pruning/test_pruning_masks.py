"""MaskSet: masks that stay zero through training, selection by scores, safetensors round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from driftd.pruning import MaskSet, magnitude_scores, masks_from_scores, prunable_weights
from tests.unit.pruning.builders import FakeLearner, build, inputs, labels, mlp_config


def half_magnitude_masks(model: torch.nn.Module) -> MaskSet:
    weights = prunable_weights(model)
    return masks_from_scores(
        magnitude_scores(model), {"shared": 0.5, "head": 0.5},
        groups={w.name: w.part for w in weights},
    )  # fmt: skip


@pytest.mark.parametrize("enforce", [True, False])
def test_masked_weights_stay_zero_through_50_adam_steps_only_when_enforced(enforce: bool) -> None:
    config = mlp_config()
    learner = FakeLearner(build(config), lr=0.05)
    masks = half_magnitude_masks(learner.model)
    masks.apply(learner.model)
    x, y = inputs(config, 64), labels(config, 64)
    for _ in range(50):
        learner.step(x, y)
        if enforce:
            masks.enforce(learner.model, learner.optimizer)
    params = dict(learner.model.named_parameters())
    leaked = sum(int((params[n][~m] != 0).sum()) for n, m in masks.masks.items())
    if enforce:
        assert leaked == 0
        for name, mask in masks.masks.items():  # Adam's moments of masked entries are zero too
            state = learner.optimizer.state[params[name]]
            assert not state["exp_avg"][~mask].any()
            assert not state["exp_avg_sq"][~mask].any()
            assert params[name][mask].ne(0).all()  # kept weights still learn
    else:
        assert leaked > 0  # Adam moves masked weights: the test above can fail


def test_magnitude_masks_remove_exactly_the_smallest_weights() -> None:
    weight = torch.tensor([[0.1, -3.0, 0.2, 4.0], [-0.05, 2.0, -1.0, 0.3]])
    masks = masks_from_scores(
        {"w": weight.abs()}, {"shared": 0.5}, groups={"w": "shared"}, scope="layer"
    )
    assert masks.masks["w"].tolist() == [[False, True, False, True], [False, True, True, False]]
    assert masks.sparsity() == 0.5


def test_global_scope_ranks_all_layers_of_a_part_together() -> None:
    scores = {"a": torch.tensor([1.0, 2.0, 3.0, 4.0]), "b": torch.tensor([10.0, 20.0])}
    groups = {"a": "shared", "b": "shared"}
    global_masks = masks_from_scores(scores, {"shared": 0.5}, groups=groups, scope="global")
    assert global_masks.masks["a"].tolist() == [False, False, False, True]
    assert global_masks.masks["b"].tolist() == [True, True]
    layer_masks = masks_from_scores(scores, {"shared": 0.5}, groups=groups, scope="layer")
    assert layer_masks.masks["a"].tolist() == [False, False, True, True]
    assert layer_masks.masks["b"].tolist() == [False, True]


def test_pruning_is_monotone_and_output_rows_keep_their_best_weight() -> None:
    scores = {"out": torch.tensor([[5.0, 1.0], [0.1, 0.2]])}
    current = MaskSet({"out": torch.tensor([[True, False], [True, True]])})
    masks = masks_from_scores(
        scores, {"head": 0.75}, groups={"out": "head"}, current=current, keep_one_per_row=["out"]
    )
    # 75% would cut the whole second row: its best entry survives; the pruned entry stays pruned
    assert masks.masks["out"].tolist() == [[True, False], [False, True]]


def test_mask_set_round_trips_through_safetensors(tmp_path: Path) -> None:
    model = build(mlp_config())
    masks = half_magnitude_masks(model)
    path = tmp_path / "masks.safetensors"
    save_file(masks.to_tensors() | {"unrelated": torch.zeros(2)}, str(path))
    loaded = MaskSet.from_tensors(load_file(str(path)))
    assert set(loaded.masks) == set(masks.masks) == {w.name for w in prunable_weights(model)}
    for name, mask in masks.masks.items():
        assert loaded.masks[name].dtype == torch.bool
        assert torch.equal(loaded.masks[name], mask)
    assert loaded.pruned == masks.pruned > 0


def test_combined_prunes_what_either_set_prunes() -> None:
    a = MaskSet({"w": torch.tensor([True, False, True])})
    b = MaskSet({"w": torch.tensor([True, True, False]), "v": torch.tensor([False])})
    both = a.combined(b)
    assert both.masks["w"].tolist() == [True, False, False]
    assert both.masks["v"].tolist() == [False]
    assert (both.pruned, both.total) == (3, 4)
