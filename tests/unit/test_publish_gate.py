"""The quality gate's pure decision and its no-change baseline, on crafted numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from driftd.serving.publish_gate import (
    LabelWindow,
    PublishedReference,
    PublishGate,
    PublishPolicy,
    decide,
)

POLICY = PublishPolicy(enabled=True, margin=0.1, baseline=True, baseline_margin=0.0)


@pytest.mark.parametrize(
    ("loss", "baseline", "reference", "published", "reason"),
    [
        (0.5, 1.0, None, True, "passed"),  # nothing published yet, beats the baseline
        (1.2, 1.0, None, False, "below_baseline"),
        (0.5, None, None, True, "passed"),  # baseline unknown: not checked
        (0.54, 1.0, PublishedReference(3, 0.5), True, "passed"),  # 8 % worse: within 10 %
        (0.55, 1.0, PublishedReference(3, 0.5), True, "passed"),  # exactly the margin
        (0.56, 1.0, PublishedReference(3, 0.5), False, "regressed"),  # 12 % worse
        (0.3, 1.0, PublishedReference(3, 0.5), True, "passed"),  # better
        (0.56, 0.5, PublishedReference(3, 0.5), False, "below_baseline"),  # baseline first
        (0.56, 1.0, PublishedReference(3, None), True, "passed"),  # reference unscored
        (None, 1.0, None, True, "first"),  # nothing to judge, nothing served: publish
        (None, 1.0, PublishedReference(3, 0.5), False, "unscored"),
        (math.nan, 1.0, None, False, "non_finite"),
        (math.inf, None, PublishedReference(3, 0.5), False, "non_finite"),
    ],
)
def test_decision_on_crafted_metrics(
    loss: float | None,
    baseline: float | None,
    reference: PublishedReference | None,
    published: bool,
    reason: str,
) -> None:
    decision = decide(POLICY, loss=loss, baseline_loss=baseline, reference=reference)
    assert (decision.published, decision.reason) == (published, reason)
    assert decision.as_manifest() == {
        "published": published,
        "reason": reason,
        "loss": loss,
        "baseline_loss": baseline,
        "reference_version": None if reference is None else reference.version,
        "reference_loss": None if reference is None else reference.loss,
    }


def test_disabled_gate_publishes_anything() -> None:
    decision = decide(
        PublishPolicy(enabled=False),
        loss=math.nan,
        baseline_loss=0.1,
        reference=PublishedReference(1, 0.01),
    )
    assert (decision.published, decision.reason) == (True, "gate_disabled")


def test_baseline_check_can_be_turned_off_and_given_slack() -> None:
    off = PublishPolicy(baseline=False)
    assert decide(off, loss=2.0, baseline_loss=1.0, reference=None).reason == "first"
    slack = PublishPolicy(baseline_margin=0.25)
    assert decide(slack, loss=1.2, baseline_loss=1.0, reference=None).published
    assert not decide(slack, loss=1.3, baseline_loss=1.0, reference=None).published


def test_negative_reference_losses_use_the_margin_of_their_magnitude() -> None:
    policy = PublishPolicy(margin=0.1, baseline=False)
    reference = PublishedReference(1, -1.0)
    assert decide(policy, loss=-0.95, baseline_loss=None, reference=reference).published
    assert not decide(policy, loss=-0.85, baseline_loss=None, reference=reference).published


def _classes(window: LabelWindow, labels: list[int], labelled: list[bool] | None = None) -> None:
    mask = torch.tensor(labelled if labelled is not None else [True] * len(labels))
    window.update(torch.tensor(labels, dtype=torch.int64), mask)


def test_classification_baseline_is_the_entropy_of_recent_class_frequencies() -> None:
    window = LabelWindow(100, task="classification", loss="cross_entropy")
    assert window.baseline_loss() is None
    assert window.baseline_accuracy() is None
    _classes(window, [0, 0, 1, 9], labelled=[True, True, True, False])  # unlabelled row ignored
    _classes(window, [0, 2, 0, 0, 0])
    # 8 labelled events: six 0s, one 1, one 2
    counts = np.array([6, 1, 1], dtype=float)
    p = counts / counts.sum()
    assert window.count == 8
    assert window.baseline_loss() == pytest.approx(float(-(p * np.log(p)).sum()))
    assert window.baseline_accuracy() == pytest.approx(6 / 8)


def test_a_single_class_window_has_a_zero_baseline() -> None:
    window = LabelWindow(10, task="classification", loss="cross_entropy")
    _classes(window, [2, 2, 2])
    assert window.baseline_loss() == 0.0
    assert window.baseline_accuracy() == 1.0


def test_window_forgets_old_batches_like_the_prequential_window() -> None:
    window = LabelWindow(4, task="classification", loss="cross_entropy")
    _classes(window, [0, 0, 0, 0])
    _classes(window, [1, 1])
    _classes(window, [1, 1])
    # the all-zero batch is dropped once the newer ones fill the window
    assert window.count == 4
    assert window.baseline_loss() == 0.0
    assert window.baseline_accuracy() == 1.0


def test_regression_baseline_is_the_loss_of_predicting_the_recent_mean() -> None:
    y = torch.tensor([[1.0], [3.0], [5.0], [7.0]])
    mse = LabelWindow(100, task="regression", loss="mse")
    mse.update(y, torch.ones(4, dtype=torch.bool))
    assert mse.baseline_loss() == pytest.approx(5.0)  # variance of 1, 3, 5, 7
    assert mse.baseline_accuracy() is None
    huber = LabelWindow(100, task="regression", loss="huber", huber_delta=2.0)
    huber.update(y, torch.ones(4, dtype=torch.bool))
    # deviations 3, 1, 1, 3: huber(3) = 2 * (3 - 1) = 4, huber(1) = 0.5
    assert huber.baseline_loss() == pytest.approx((4 + 0.5 + 0.5 + 4) / 4)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_label_window_state_round_trips_through_json(task: str) -> None:
    import json

    loss = "cross_entropy" if task == "classification" else "mse"
    window = LabelWindow(50, task=task, loss=loss)  # type: ignore[arg-type]
    generator = torch.Generator().manual_seed(1)
    for _ in range(5):
        if task == "classification":
            y = torch.randint(0, 4, (8,), generator=generator)
        else:
            y = torch.randn(8, 2, generator=generator)
        window.update(y, torch.ones(8, dtype=torch.bool))
    copy = LabelWindow(50, task=task, loss=loss)  # type: ignore[arg-type]
    copy.load_state_dict(json.loads(json.dumps(window.state_dict())))
    assert copy.count == window.count == 40
    assert copy.baseline_loss() == pytest.approx(window.baseline_loss())


def test_gate_remembers_what_it_published() -> None:
    window = LabelWindow(100, task="classification", loss="cross_entropy")
    gate = PublishGate(PublishPolicy(margin=0.0), window)
    _classes(window, [0, 1, 0, 1])  # baseline ln 2 ~ 0.69
    first = gate.decide(0.5)
    assert (first.published, first.reason) == (True, "passed")
    gate.published(1, 0.5)
    assert gate.decide(0.6).reason == "regressed"
    assert gate.decide(0.8).reason == "below_baseline"
    assert gate.decide(0.4).published
    restored = PublishGate(PublishPolicy(), LabelWindow(100, task="classification",
                                                        loss="cross_entropy"))  # fmt: skip
    restored.load_state_dict(gate.state_dict())
    assert restored.labels.baseline_loss() == pytest.approx(math.log(2))


def test_a_drift_forgets_the_published_loss_so_serving_can_follow_the_stream() -> None:
    window = LabelWindow(100, task="classification", loss="cross_entropy")
    gate = PublishGate(PublishPolicy(margin=0.0), window)
    _classes(window, [0, 1, 0, 1])  # baseline ln 2 ~ 0.69
    gate.published(4, 0.1)  # learned on an easy concept
    assert gate.decide(0.5).reason == "regressed"  # a harder concept now
    gate.drifted()
    after = gate.decide(0.5)
    assert (after.published, after.reason, after.reference_version) == (True, "passed", 4)
    assert gate.decide(0.8).reason == "below_baseline", "the baseline still guards"
