"""The pending head decision: its evidence, and its snapshot form (old snapshots included)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from driftd.adaptation.pending_decision import PendingDecision


def test_a_concept_drift_re_anchors_a_covariate_decision_and_restarts_the_live_level() -> None:
    pending = PendingDecision(marker=10, start=4, from_domain="d0", trigger="covariate", events=7)
    pending.add_losses(torch.tensor([3.0, 5.0]))
    pending.anchor_concept(40, 30, torch.tensor([1.0, math.inf, 2.0]))
    assert pending == PendingDecision(
        marker=40, start=30, from_domain="d0", trigger="concept", loss_sum=3.0, count=2, events=7
    )
    assert pending.live_loss == 1.5


def test_state_keeps_the_snapshot_keys_and_round_trips() -> None:
    pending = PendingDecision(
        marker=3, start=1, from_domain="d2", trigger="covariate", loss_sum=0.5, count=2, events=9
    )
    saved = json.loads(json.dumps(pending.state_dict()))
    assert saved == {
        "marker": 3, "start": 1, "from": "d2", "loss_sum": 0.5, "count": 2,
        "trigger": "covariate", "events": 9,
    }  # fmt: skip
    assert PendingDecision.from_state(saved) == pending


def test_a_decision_saved_before_early_reuse_and_covariate_drifts_loads() -> None:
    old = {"marker": 12, "from": "d0", "loss_sum": 1.0, "count": 4}
    assert PendingDecision.from_state(old) == PendingDecision(
        marker=12, start=12, from_domain="d0", trigger="concept", loss_sum=1.0, count=4
    )


def test_an_unknown_trigger_is_refused() -> None:
    with pytest.raises(ValueError, match="trigger"):
        PendingDecision.from_state({"marker": 0, "from": "d0", "loss_sum": 0.0, "count": 0,
                                    "trigger": "panic"})  # fmt: skip
