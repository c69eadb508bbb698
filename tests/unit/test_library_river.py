"""river's own evaluation runs ``driftd.Learner`` unchanged, and agrees with ``learn_many``."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch
from river import datasets, evaluate, metrics

import driftd

OPTIONS: dict[str, Any] = {"model": {"seed": 3}}  # the defaults: 2 classes, micro_batch auto


def test_progressive_val_score_on_phishing_agrees_with_learn_many() -> None:
    dataset = list(datasets.Phishing())  # bundled with river: 1,250 events, bool labels
    evaluated = driftd.Learner(**OPTIONS)
    checkpoints = list(
        evaluate.iter_progressive_val_score(
            dataset, evaluated, metrics.Accuracy(), step=1, yield_predictions=True
        )
    )
    river_predictions = [checkpoint["Prediction"] for checkpoint in checkpoints]
    river_accuracy = checkpoints[-1]["Accuracy"].get()

    # The same events in the same order through the batch API, one event per call (a poll of
    # one, which is what learn_one is): predicted before learning, like river's predict_one.
    learner = driftd.Learner(**OPTIONS)
    rows = np.array([list(x.values()) for x, _ in dataset])
    labels = [y for _, y in dataset]
    predicted = [
        learner.learn_many(rows[i : i + 1], labels[i : i + 1])[0] for i in range(len(rows))
    ]

    # Event 0 differs in kind only: river asks before any label was seen (the untrained model
    # answers with a class index), learn_many scores it after the standardiser saw that event.
    assert predicted[1:] == river_predictions[1:]
    accuracy = np.mean(np.array(predicted) == np.array(labels))
    assert abs(accuracy - river_accuracy) <= 1 / len(dataset)
    assert river_accuracy > 0.85  # it learns: Phishing's majority class is 56%
    assert evaluated.model is not None
    assert learner.model is not None
    for name, tensor in evaluated.model.state_dict().items():
        assert torch.equal(tensor, learner.model.state_dict()[name]), name


def test_progressive_val_score_returns_the_metric_for_regression() -> None:
    dataset = list(itertools.islice(datasets.TrumpApproval(), 300))
    learner = driftd.Learner(model={"task": "regression", "seed": 1})

    mae = evaluate.progressive_val_score(dataset, learner, metrics.MAE())

    targets = np.array([y for _, y in dataset])
    assert isinstance(learner.predict_one(dataset[0][0]), float)
    # It learns the scale from nothing (targets ~40, outputs start near 0): far below |y|.
    assert 0 < mae.get() < np.abs(targets).mean() / 3
