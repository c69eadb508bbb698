"""The benchmark's pieces: the seeded 8x8 stream and a prequential run with a real learner."""

from __future__ import annotations

import torch

from driftd.pruning import Pruner, PruningController, PruningPolicy, SparsitySchedule
from driftd.tools.pruning_bench_runs import StepsOnlyClock, model_config, prequential_run
from driftd.tools.pruning_synthetic import digits_like_stream
from driftd.triggers import EveryNStepsOrTSeconds


def test_digits_like_stream_is_seeded_and_shaped() -> None:
    x, y = digits_like_stream(500, seed=3)
    again_x, again_y = digits_like_stream(500, seed=3)
    assert x.shape == (500, 64)
    assert set(y.tolist()) == set(range(10))
    assert torch.equal(x, again_x)
    assert torch.equal(y, again_y)
    assert not torch.equal(x, digits_like_stream(500, seed=4)[0])


def test_prequential_run_prunes_an_online_learner_structurally() -> None:
    x, y = digits_like_stream(3_000, seed=0)

    def make() -> Pruner:
        trigger = EveryNStepsOrTSeconds(every_steps=10, every_seconds=None, clock=StepsOnlyClock())
        controller = PruningController(
            trigger=trigger, n_events=2, tolerance=1.0, baseline_events=128, verify_events=128
        )
        policy = PruningPolicy(
            structured=True, criterion="taylor",
            schedule=SparsitySchedule(targets={"shared": 0.5}, n_events=2),
        )  # fmt: skip
        return Pruner(policy, controller, generator=torch.Generator().manual_seed(0))

    config = model_config("mlp", 64, 10)
    run = prequential_run(config, x, y, seed=0, evaluate_from=2_000, pruner_factory=make)
    assert run["outcomes"]["kept"] == 2
    assert run["model"].config["hidden"] == [32, 32]
    assert [event["widths"] for event in run["history"]] == [[36, 36], [32, 32]]
    assert run["accuracy"] > 0.5  # it still learns (10 classes: chance is 0.1)
