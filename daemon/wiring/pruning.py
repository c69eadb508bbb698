"""Settings in, pruning stage out: the pruner's policy and controller from ``pruning``."""

from __future__ import annotations

from collections.abc import Callable

import torch

from driftd.adaptation.policy import Adaptation
from driftd.learning.learner import OnlineLearner
from driftd.ports import Clock
from driftd.pruning import Pruner, PruningController
from driftd.pruning.policy import PruningPolicy
from driftd.pruning.schedule import SparsitySchedule
from driftd.pruning.shrink import ShrinkResult
from driftd.pruning.stage import PruningStage
from driftd.pruning.stored_heads import StoredHeadsFollower
from driftd.settings.pruning import PruningSettings
from driftd.settings.root import Settings
from driftd.triggers import EveryNStepsOrTSeconds


def pruning_builder(
    settings: Settings, clock: Clock
) -> Callable[[OnlineLearner, Adaptation | None], PruningStage | None]:
    """A function building the pruning stage of a new learner (stored heads follow its shape)."""

    def build(learner: OnlineLearner, adaptation: Adaptation | None) -> PruningStage | None:
        stored = adaptation.domain_store if adaptation is not None else None
        follower = StoredHeadsFollower(stored) if stored is not None else None
        return make_pruning_stage(
            settings.pruning, learner, task=settings.model.task, seed=settings.model.seed,
            clock=clock, on_reshape=follower, on_settle=follower.settle if follower else None,
        )  # fmt: skip

    return build


def pruning_policy(settings: PruningSettings, *, task: str) -> PruningPolicy:
    """The pruner's policy from the ``pruning`` settings."""
    targets = {"shared": settings.target_sparsity, "head": settings.head_target_sparsity}
    return PruningPolicy(
        structured=settings.structured,
        criterion=settings.criterion,
        scope=settings.scope,
        schedule=SparsitySchedule(targets=targets, n_events=settings.n_events),
        recovery=settings.recovery,
        restore_fraction=settings.restore_fraction,
        fine_tune_epochs=settings.fine_tune_epochs,
        fine_tune_batch_size=settings.fine_tune_batch_size,
        distill_weight=settings.distill_weight,
        temperature=settings.temperature,
        penalty_strength=settings.penalty_strength,
        min_units=settings.min_units,
        task=task,
    )


def make_pruning_stage(
    settings: PruningSettings,
    learner: OnlineLearner,
    *,
    task: str,
    seed: int,
    clock: Clock,
    on_reshape: Callable[[ShrinkResult | None], None] | None = None,
    on_settle: Callable[[], None] | None = None,
) -> PruningStage | None:
    """The stage the settings describe for ``learner``, or None when pruning is off."""
    if not settings.enabled:
        return None
    controller = PruningController(
        trigger=EveryNStepsOrTSeconds(
            every_steps=settings.every_steps, every_seconds=settings.every_seconds, clock=clock
        ),
        n_events=settings.n_events,
        tolerance=settings.tolerance,
        abs_tolerance=settings.abs_tolerance,
        baseline_events=settings.baseline_events,
        verify_events=settings.verify_events,
        max_recoveries=settings.max_recoveries,
        max_consecutive_rollbacks=settings.max_consecutive_rollbacks,
    )
    generator = torch.Generator().manual_seed(seed + 2)
    pruner = Pruner(
        pruning_policy(settings, task=task), controller, generator=generator, on_reshape=on_reshape
    )
    return PruningStage(
        pruner, learner, replay_events=settings.replay_events, generator=generator,
        on_settle=on_settle,
    )  # fmt: skip
