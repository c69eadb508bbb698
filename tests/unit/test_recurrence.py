"""Recognising a recurring domain: paired loss test, change point, input fingerprints."""

from __future__ import annotations

import pytest
import torch

from driftd.adaptation.recurrence import (
    InputStats,
    change_point,
    clearly_better,
    early_choice,
    input_choice,
)


def test_clearly_better_needs_the_gain_beyond_z_standard_errors() -> None:
    generator = torch.Generator().manual_seed(0)
    baseline = torch.rand(40, generator=generator)
    assert clearly_better(baseline + 1.0, baseline, z=2.33), "a constant gain of 1: sd 0"
    noise = torch.randn(40, generator=generator)
    assert not clearly_better(baseline + noise, baseline, z=2.33), "a gain of 0 on average"
    assert not clearly_better(baseline, baseline + 1.0, z=2.33), "worse is never better"
    # mean gain 0.5, sd ~1.0: t ~ 0.5 / (1 / sqrt(n)) crosses 2.33 between n = 16 and 32
    gains = 0.5 + torch.randn(64, generator=generator)
    assert not clearly_better(baseline[:8] + gains[:8], baseline[:8], z=2.33)
    assert clearly_better(
        torch.cat([baseline, baseline])[:64] + gains, baseline.repeat(2)[:64], z=2.33
    )
    assert not clearly_better(torch.ones(1), torch.zeros(1), z=2.33), "one event is no evidence"


def test_change_point_finds_where_the_loss_rose() -> None:
    generator = torch.Generator().manual_seed(1)
    losses = torch.cat(
        [torch.rand(200, generator=generator) * 0.2, 1.0 + torch.rand(40, generator=generator)]
    )
    assert change_point(losses) == 200
    assert change_point(torch.rand(3, generator=generator), min_after=4) == 0
    flat = torch.full((50,), 0.3)
    assert 1 <= change_point(flat) <= 48, "any split of a flat series is allowed, none crashes"


def _stats(mean: float, n: int = 200, seed: int = 0, features: int = 8) -> InputStats:
    stats = InputStats()
    x = mean + torch.randn(n, features, generator=torch.Generator().manual_seed(seed))
    for part in x.split(32):
        stats.update(part)
    return stats


def test_input_fingerprints_measure_standardized_distance() -> None:
    near, other_sample, far = _stats(0.0, seed=1), _stats(0.0, seed=2), _stats(2.0, seed=3)
    same = near.distance(other_sample)
    assert same is not None
    assert same < 0.2, "two samples of one distribution"
    apart = near.distance(far)
    assert apart is not None
    assert 1.7 < apart < 2.3, "means 2 standard deviations apart"
    assert InputStats().distance(near) is None
    merged = near.merged(far)
    assert merged.count == 400
    assert merged.total is not None
    assert torch.allclose(merged.total / 400, torch.full((8,), 1.0, dtype=torch.float64), atol=0.15)
    tensors, meta = merged.state_dict()
    assert meta == {"count": 400}
    restored = InputStats.from_state(tensors, meta)
    assert restored.distance(near) == merged.distance(near)


def test_early_choice_switches_only_to_a_fitting_clearly_better_head() -> None:
    generator = torch.Generator().manual_seed(2)
    small = torch.rand(48, generator=generator) * 0.1
    losses = {"was": small + 1.0, "good": small, "unfit": small * 0.5}

    def fits(name: str, score: float) -> bool:
        return name != "unfit"

    assert early_choice(losses, baseline="was", fits=fits, z=2.33) == "good"
    assert early_choice(losses, baseline="good", fits=fits, z=2.33) is None, "was is worse"
    assert early_choice({"was": small}, baseline="was", fits=fits, z=2.33) is None
    assert early_choice(losses, baseline="gone", fits=fits, z=2.33) is None


@pytest.mark.parametrize(
    ("recent_mean", "expected"), [(0.0, "a"), (2.0, None), (5.0, None)]
)  # fmt: skip
def test_input_choice_picks_a_stored_domain_nearer_than_the_current_one(
    recent_mean: float, expected: str | None
) -> None:
    fingerprints = {"a": _stats(0.0, seed=4), "b": _stats(2.0, seed=5)}
    recent = _stats(recent_mean, n=64, seed=6)
    best, distances = input_choice(recent, fingerprints, baseline="b", max_distance=0.5)
    assert best == expected
    assert set(distances) == {"a", "b"}
