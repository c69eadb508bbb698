"""Pruner: prune, fine-tune, verify on a live model, with crafted verification losses."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from driftd.pruning import (
    Pruner,
    PruningPolicy,
    prunable_weights,
    slice_head_state,
    unit_layers,
)
from tests.unit.pruning.builders import (
    FakeLearner,
    build,
    inputs,
    labels,
    make_pruner,
    mlp_config,
)

CONFIG = mlp_config(hidden=[16, 12], head_hidden=[8])
X, Y = inputs(CONFIG, 128, seed=11), labels(CONFIG, 128, seed=12)


def replay() -> tuple[torch.Tensor, torch.Tensor]:
    return X, Y


def warmed_up(pruner: Pruner) -> FakeLearner:
    """A learner that took 5 steps, its losses feeding the pruner's baseline (loss 1.0)."""
    learner = FakeLearner(build(CONFIG))
    for seed in range(5):
        learner.step(inputs(CONFIG, 32, seed=seed), labels(CONFIG, 32, seed=seed))
        pruner.after_step(learner.model, learner.optimizer)
        pruner.observe(learner, 32.0, 32, replay)
    assert pruner.due(5)
    return learner


def verify(pruner: Pruner, learner: FakeLearner, mean_loss: float) -> str:
    """Feed 64 events of the given loss; return the final verdict's action."""
    pruner.observe(learner, mean_loss * 32, 32, replay)
    return pruner.observe(learner, mean_loss * 32, 32, replay).action


def weights_of(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_unstructured_prune_reaches_the_schedule_and_is_kept() -> None:
    pruner = make_pruner()
    learner = warmed_up(pruner)
    report = pruner.prune(5, learner, replay)
    assert report is not None
    assert report.targets == pytest.approx({"shared": 0.4375, "head": 0.4375})
    assert report.fine_tune_loss is not None
    assert math.isfinite(report.fine_tune_loss)
    names = [w.name for w in prunable_weights(learner.model)]
    assert set(pruner.masks.masks) == set(names)
    params = dict(learner.model.named_parameters())
    for name in names:
        zeros = float((params[name] == 0).float().mean())
        assert zeros == pytest.approx(0.4375, abs=0.03)  # rounded to whole weights
    assert pruner.controller.busy
    assert verify(pruner, learner, 1.05) == "keep"
    learner.step(X, Y)  # training goes on; the masks hold
    pruner.after_step(learner.model, learner.optimizer)
    assert all(not params[n][~m].any() for n, m in pruner.masks.masks.items())


def test_rollback_restores_the_exact_unpruned_weights_optimizer_and_masks() -> None:
    pruner = make_pruner()
    learner = warmed_up(pruner)
    before = weights_of(learner.model)
    optimizer_before = copy.deepcopy(learner.optimizer.state_dict())
    assert pruner.prune(5, learner, replay) is not None
    assert verify(pruner, learner, 3.0) == "recover"
    assert verify(pruner, learner, 3.0) == "rollback"
    for key, value in weights_of(learner.model).items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    state = learner.optimizer.state_dict()["state"]
    for index, entry in optimizer_before["state"].items():
        torch.testing.assert_close(state[index]["exp_avg"], entry["exp_avg"], rtol=0, atol=0)
    assert pruner.masks.pruned == 0
    assert pruner.controller.counts["rolled_back"] == 1


def test_greedy_recovery_restores_half_the_pruned_weights_most_important_first() -> None:
    pruner = make_pruner()
    learner = warmed_up(pruner)
    assert pruner.prune(5, learner, replay) is not None
    unpruned = pruner._pending.model
    pruned_before = {n: ~m.clone() for n, m in pruner.masks.masks.items()}
    assert verify(pruner, learner, 3.0) == "recover"
    restored = {n: pruned_before[n] & pruner.masks.masks[n] for n in pruned_before}
    n_pruned = sum(int(m.sum()) for m in pruned_before.values())
    assert sum(int(m.sum()) for m in restored.values()) == math.ceil(0.5 * n_pruned)
    # the most important pruned weight (largest normalised magnitude) came back first
    name = "shared.0.weight"
    magnitudes = dict(unpruned.named_parameters())[name].detach().abs()
    normalised = magnitudes / magnitudes.mean()
    best = normalised.masked_fill(~pruned_before[name], -1).argmax()
    assert restored[name].flatten()[best]
    assert verify(pruner, learner, 1.0) == "keep"
    assert pruner.controller.counts["recovered"] == 1


def test_random_recovery_is_seeded() -> None:
    restored = []
    for _ in range(2):
        pruner = make_pruner(recovery="random")
        learner = warmed_up(pruner)
        pruner.prune(5, learner, replay)
        verify(pruner, learner, 3.0)
        restored.append({n: m.clone() for n, m in pruner.masks.masks.items()})
    assert all(torch.equal(restored[0][n], restored[1][n]) for n in restored[0])


@pytest.mark.parametrize("criterion", ["magnitude", "taylor", "output_error", "entropy", "sparse"])
def test_structured_prune_shrinks_the_live_model_and_rollback_restores_it(criterion: str) -> None:
    pruner = make_pruner(structured=True, criterion=criterion, distill_weight=0.5)
    learner = warmed_up(pruner)
    original = learner.model
    before = weights_of(original)
    report = pruner.prune(5, learner, replay)
    assert report is not None
    assert learner.model is not original
    widths = [layer.n_units for layer in unit_layers(learner.model)]
    assert widths == [9, 7, 4]  # round(16, 12, 8 * (1 - 0.4375)), half to even
    assert learner.model.config["hidden"] == [9, 7]
    assert report.removed == 7 + 5 + 4
    assert learner.optimizer.param_groups[0]["params"][0] is learner.model.shared[0].weight
    learner.step(X, Y)  # the sliced optimizer trains the smaller model
    assert verify(pruner, learner, 3.0) == "recover"
    widths = [layer.n_units for layer in unit_layers(learner.model)]
    assert sum(widths) == 9 + 7 + 4 + math.ceil(0.5 * 16)
    assert verify(pruner, learner, 3.0) == "rollback"
    assert [layer.n_units for layer in unit_layers(learner.model)] == [16, 12, 8]
    for key, value in weights_of(learner.model).items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    learner.step(X, Y)  # and the optimizer follows the restored model


def test_structured_keep_then_second_event_reaches_the_target() -> None:
    pruner = make_pruner(structured=True)
    learner = warmed_up(pruner)
    pruner.prune(5, learner, replay)
    assert verify(pruner, learner, 1.0) == "keep"
    for _ in range(2):
        pruner.observe(learner, 32.0, 32, replay)  # the next baseline
    assert pruner.due(10)
    report = pruner.prune(10, learner, replay)
    assert report is not None
    assert [layer.n_units for layer in unit_layers(learner.model)] == [8, 6, 4]
    assert verify(pruner, learner, 1.0) == "keep"
    assert pruner.controller.phase == "done"


def test_penalty_only_for_the_sparse_criterion() -> None:
    model = build(CONFIG)
    assert make_pruner().penalty(model) is None
    unstructured = make_pruner(criterion="sparse", penalty_strength=0.5).penalty(model)
    structured = make_pruner(criterion="sparse", structured=True).penalty(model)
    assert unstructured is not None
    assert float(unstructured.detach()) > 0
    assert structured is not None
    assert float(structured.detach()) > 0


def test_state_round_trips_through_safetensors_and_json(tmp_path: Path) -> None:
    pruner = make_pruner(criterion="taylor")
    learner = warmed_up(pruner)
    pruner.prune(5, learner, replay)
    assert verify(pruner, learner, 1.0) == "keep"
    learner.step(X, Y)
    pruner.after_step(learner.model, learner.optimizer)
    tensors, meta = pruner.state_dict()
    save_file(tensors, str(tmp_path / "training.safetensors"))
    restored = make_pruner(criterion="taylor")
    restored.load_state_dict(
        load_file(str(tmp_path / "training.safetensors")), json.loads(json.dumps(meta))
    )
    assert restored.controller.state_dict() == pruner.controller.state_dict()
    assert restored.masks.pruned == pruner.masks.pruned > 0
    assert restored.taylor is not None
    assert pruner.taylor is not None
    assert restored.taylor.steps == pruner.taylor.steps == 1
    for name, score in pruner.taylor.weight_scores().items():
        torch.testing.assert_close(restored.taylor.weight_scores()[name], score)


def test_policy_rejects_entropy_without_structure() -> None:
    with pytest.raises(ValueError, match="structured"):
        PruningPolicy(criterion="entropy")


def test_summary_and_shrink_mapping_after_a_kept_structured_event() -> None:
    pruner = make_pruner(structured=True)
    learner = warmed_up(pruner)
    unpruned_head = {k: v.clone() for k, v in learner.model.head.state_dict().items()}
    pruner.prune(5, learner, replay)
    assert verify(pruner, learner, 1.0) == "keep"
    summary = pruner.summary(learner.model)
    assert summary["units"] == {"shared.0": 9, "shared.2": 7, "head.0": 4}
    assert summary["unit_sparsity"] == pytest.approx({"shared": 1 - 16 / 28, "head": 0.5})
    assert summary["parameters"] == sum(p.numel() for p in learner.model.parameters())
    assert summary["flops_per_event"]["dense"] == 2 * (10 * 9 + 9 * 7 + 7 * 4 + 4 * 3)
    assert (summary["schedule_event"], summary["phase"]) == (1, "idle")
    json.dumps(summary)
    assert pruner.shrink is not None  # slices a stored head shaped like the unpruned one
    sliced = slice_head_state(unpruned_head, pruner.shrink)
    assert {k: v.shape for k, v in sliced.items()} == {
        k: v.shape for k, v in learner.model.head.state_dict().items()
    }
