"""The pure pieces of a trainer group, on an in-process group of threads (tests/thread_group)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from driftd.distributed.replicas import (
    AllReducedGradients,
    average_replicas,
    merge_standardizers,
    model_digest,
)
from driftd.distributed.rounds import RoundAgreement, agree_round
from driftd.learning.standardize import RunningStandardizer
from driftd.settings.root import ConfigurationError, load_settings
from driftd.wiring.distributed import check_group_settings, launched_rank
from tests.fakes import tiny_learner
from tests.thread_group import ThreadGroup, ThreadRank


def test_input_statistics_merge_into_those_of_all_ranks_inputs() -> None:
    generator = torch.Generator().manual_seed(0)
    data = [
        torch.randn(300, 3, generator=generator) * 2 + 5,
        torch.randn(100, 3, generator=generator),
    ]

    def work(rank: ThreadRank) -> RunningStandardizer:
        standardizer = RunningStandardizer(3, horizon=10_000)
        standardizer.update(data[rank.rank])
        merge_standardizers(rank, standardizer)
        return standardizer

    merged = ThreadGroup(2).run(work)
    union = torch.cat(data).to(torch.float64)
    for standardizer in merged:
        assert float(standardizer.count) == 200  # the ranks' mean count: no history counted twice
        torch.testing.assert_close(standardizer.mean, union.mean(dim=0))
        variance = standardizer.m2 / standardizer.count
        torch.testing.assert_close(variance, union.var(dim=0, unbiased=False))
        torch.testing.assert_close(standardizer.shift, union.mean(dim=0).float())
    assert torch.equal(merged[0].scale, merged[1].scale)


def test_gradients_become_the_event_weighted_mean_of_the_ranks() -> None:
    grads = [torch.tensor([1.0, 2.0]), torch.tensor([5.0, -2.0])]
    weights = [3.0, 1.0]

    def work(rank: ThreadRank) -> tuple[torch.Tensor, tuple[float, float]]:
        param = torch.nn.Parameter(torch.zeros(2))
        param.grad = grads[rank.rank].clone()
        totals = AllReducedGradients(rank, time.monotonic)(
            [param], weights[rank.rank], 10.0 * (rank.rank + 1)
        )
        assert param.grad is not None
        return param.grad, totals

    for grad, totals in ThreadGroup(2).run(work):
        torch.testing.assert_close(grad, torch.tensor([2.0, 1.0]))  # (3*g0 + 1*g1) / 4
        assert totals == (4.0, 30.0)


def test_a_rank_without_events_takes_the_groups_step_and_lr_step() -> None:
    def work(rank: ThreadRank) -> tuple[str, int, int]:
        learner = tiny_learner(n_features=3)
        learner.gradient_sync = AllReducedGradients(rank, time.monotonic)
        learner.micro_batch = 4
        n = 10 if rank.rank == 0 else 0  # rank 1 has nothing this round
        x = torch.randn(n, 3, generator=torch.Generator().manual_seed(1))
        y = torch.arange(n) % 2
        report = learner.learn_many(x, y, torch.ones(n, dtype=torch.bool), parts=3)
        return model_digest(learner.model), learner.steps, report.n_learned

    (digest0, steps0, learned0), (digest1, steps1, learned1) = ThreadGroup(2).run(work)
    assert digest0 == digest1
    assert steps0 == steps1 == 1  # one step per call, counted by the group's events
    assert (learned0, learned1) == (10, 0)


def test_averaging_makes_the_replicas_one() -> None:
    def work(rank: ThreadRank) -> str:
        learner = tiny_learner(n_features=3)
        with torch.no_grad():
            for p in learner.model.parameters():
                p.add_(rank.rank)
        average_replicas(rank, learner.model)
        return model_digest(learner.model)

    digests = ThreadGroup(2).run(work)
    assert digests[0] == digests[1]


def test_ranks_agree_on_stop_snapshot_steps_and_the_busiest_rank() -> None:
    def work(rank: ThreadRank) -> RoundAgreement:
        return agree_round(
            rank, records=[64, 10, 0][rank.rank], stop=rank.rank == 2,
            snapshot_due=rank.rank == 1,  # only rank 0's schedule counts
            dirty=rank.rank == 1, step_size=16 if rank.rank == 0 else 99,
        )  # fmt: skip

    agreements = ThreadGroup(3).run(work)
    assert agreements[0] == agreements[1] == agreements[2]
    agreement = agreements[0]
    assert agreement.records == (64, 10, 0)
    assert agreement.stop
    assert agreement.dirty
    assert not agreement.snapshot_due
    assert agreement.step_size == 16
    assert agreement.parts(16) == 4
    assert agreement.parts(None) == 1
    assert RoundAgreement((0, 0), False, False, False, 0).parts(8) == 1


def test_the_launchers_variables_make_a_rank() -> None:
    assert launched_rank({}) is None
    assert launched_rank({"WORLD_SIZE": "1"}) is None
    rank = launched_rank({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"})
    assert rank is not None
    assert (rank.rank, rank.world_size, rank.local_rank) == (3, 4, 1)
    with pytest.raises(ConfigurationError, match="RANK"):
        launched_rank({"WORLD_SIZE": "2"})
    with pytest.raises(ConfigurationError, match=r"RANK=2 is outside 0\.\.1"):
        launched_rank({"WORLD_SIZE": "2", "RANK": "2"})
    with pytest.raises(ConfigurationError, match="WORLD_SIZE='two'"):
        launched_rank({"WORLD_SIZE": "two"})


@pytest.mark.parametrize(
    ("sections", "field"),
    [
        ({"distributed": {"sync": "average"}}, "distributed.sync"),
        (
            {
                "adaptation": {"enabled": False},
                "pruning": {"enabled": True},
                "distributed": {"sync": "average"},
            },
            "distributed.sync",
        ),
        (
            {"adaptation": {"enabled": False}, "distributed": {"sync": "average"}},
            "model.n_features",
        ),
        ({}, "model.n_features"),
    ],
)
def test_a_group_refuses_what_it_cannot_do_naming_the_field(
    sections: dict[str, dict[str, object]], field: str
) -> None:
    settings = load_settings(**sections)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=field.replace(".", r"\.")):
        check_group_settings(settings)


def test_allreduce_steps_at_the_fixed_micro_batch_on_every_rank(tmp_path: Path) -> None:
    from driftd.adapters.memory import InMemoryDeadLetterSink
    from driftd.adapters.memory_source import InMemoryRecordSource
    from driftd.app import build_trainer
    from driftd.loop import StopWhen
    from driftd.records import PartitionShare
    from tests.group_ranks import records, settings_for

    stream = records(96)  # 4 partitions: 2 per rank, 192 records each
    settings = settings_for(tmp_path, "allreduce").model_copy(
        update={"learner": settings_for(tmp_path, "allreduce").learner.model_copy(
            update={"micro_batch": 8})}
    )  # fmt: skip

    def work(rank: ThreadRank) -> tuple[int, str]:
        source = InMemoryRecordSource(stream, share=PartitionShare(rank.rank, 2))
        trainer = build_trainer(
            settings, source=source, group=rank, dead_letters=InMemoryDeadLetterSink(),
            serve_metrics=False,
        )  # fmt: skip
        learner = trainer.loop.state.learner
        assert learner is not None
        steps = [0]
        learner.after_step_hooks.append(lambda: steps.__setitem__(0, steps[0] + 1))
        trainer.loop.run(StopWhen(idle_seconds=0.3, max_seconds=60))
        trainer.close()
        return steps[0], model_digest(learner.model)

    (steps0, digest0), (steps1, digest1) = ThreadGroup(2).run(work)
    assert steps0 == steps1
    assert steps0 >= 384 // (2 * 8)  # every rank's 192 records in steps of 8, not one per poll
    assert digest0 == digest1
