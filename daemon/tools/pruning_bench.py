"""Evidence for pruning: sizes, FLOPs, prequential accuracy and inference latency, measured.

:func:`measure_pruning` runs each model twice over the same seeded stream, prequentially (test
then train, batch by batch): once dense, once with the :class:`~driftd.pruning.pruner.Pruner`
pruning it structurally towards 50% of the trunk's units (cubic schedule, fine-tuning on a replay
window, verification against the unpruned model on the same events). Accuracy is compared on
the final, stationary stretch, after the schedule has finished. Latency is timed on a model large
enough for compute to dominate. A too-aggressive target shows the recovery path at work.
"""

from __future__ import annotations

import copy
import statistics
import time
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from driftd.learning.models import build_model, count_parameters
from driftd.pruning.criteria import unit_magnitude_scores
from driftd.pruning.flops import flops_per_event
from driftd.pruning.layers import unit_layers
from driftd.pruning.policy import CRITERIA, Criterion
from driftd.pruning.quantize import int8_accuracy_delta, quantize_int8
from driftd.pruning.schedule import select_units
from driftd.pruning.shrink import shrink_model
from driftd.tools.pruning_bench_runs import model_config, prequential_run, pruner_factory
from driftd.tools.pruning_synthetic import digits_like_stream
from driftd.tools.streams import DriftingStream


def _case(
    config: dict[str, Any], x: Tensor, y: Tensor, *, seed: int, evaluate_from: int,
    criterion: Criterion,
) -> dict[str, Any]:  # fmt: skip
    started = time.perf_counter()
    dense = prequential_run(config, x, y, seed=seed, evaluate_from=evaluate_from)
    dense_seconds = time.perf_counter() - started
    factory = pruner_factory(0.5, tolerance=0.05, seed=seed, criterion=criterion)
    pruned = prequential_run(
        config, x, y, seed=seed, evaluate_from=evaluate_from, pruner_factory=factory
    )
    wx, wy = pruned["window"]
    model = pruned["model"]
    return {
        "parameters_before": count_parameters(dense["model"]),
        "parameters_after": count_parameters(model),
        "flops_before": flops_per_event(dense["model"])["dense"],
        "flops_after": flops_per_event(model)["dense"],
        "accuracy_dense": dense["accuracy"],
        "accuracy_pruned": pruned["accuracy"],
        "accuracy_delta_points": 100 * (pruned["accuracy"] - dense["accuracy"]),
        "widths_after": [layer.n_units for layer in unit_layers(model)],
        "outcomes": pruned["outcomes"],
        "int8": int8_accuracy_delta(model, quantize_int8(model), wx, wy),
        "seconds_dense_run": dense_seconds,
        "seconds_pruned_run": time.perf_counter() - started - dense_seconds,
    }


def _criteria(
    config: dict[str, Any], x: Tensor, y: Tensor, *, seed: int, evaluate_from: int
) -> dict[str, Any]:
    """Prequential accuracy after 50% structured pruning, per criterion, on the same stream."""
    result: dict[str, Any] = {}
    for criterion in CRITERIA:
        factory = pruner_factory(0.5, tolerance=0.05, seed=seed, criterion=criterion)
        run = prequential_run(
            config, x, y, seed=seed, evaluate_from=evaluate_from, pruner_factory=factory
        )
        result[criterion] = run["accuracy"]
    return result


def _aggressive(x: Tensor, y: Tensor, *, seed: int, evaluate_from: int) -> dict[str, Any]:
    """A 0.95 target: with verification and recovery, and kept blindly (no verification)."""
    config = model_config("mlp", x.shape[1], int(y.max()) + 1)
    runs = {}
    for name, tolerance in (("verified", 0.05), ("blind", 1e9)):
        factory = pruner_factory(0.95, tolerance=tolerance, seed=seed, events=2)
        runs[name] = prequential_run(
            config, x, y, seed=seed, evaluate_from=evaluate_from, pruner_factory=factory
        )
    dense = prequential_run(config, x, y, seed=seed, evaluate_from=evaluate_from)
    return {
        "target": 0.95,
        "outcomes": runs["verified"]["outcomes"],
        "history": runs["verified"]["history"],
        "accuracy_dense": dense["accuracy"],
        "accuracy_verified": runs["verified"]["accuracy"],
        "accuracy_blind": runs["blind"]["accuracy"],
        "widths_verified": [la.n_units for la in unit_layers(runs["verified"]["model"])],
        "widths_blind": [la.n_units for la in unit_layers(runs["blind"]["model"])],
    }


def _median_ms(model: nn.Module, x: Tensor, repeats: int, inner: int = 10) -> float:
    with torch.inference_mode():
        for _ in range(inner):
            model(x)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(inner):
                model(x)
            times.append((time.perf_counter() - start) / inner)
    return 1e3 * statistics.median(times)


def _latency(*, seed: int, repeats: int, hidden: list[int]) -> dict[str, Any]:
    config = model_config("mlp", 64, 10, hidden=hidden)
    dense = build_model(config, torch.Generator().manual_seed(seed)).eval()
    scores = unit_magnitude_scores(dense, [la.name for la in unit_layers(dense)])
    layers = unit_layers(dense)
    keep = select_units(
        scores, parts={la.name: la.part for la in layers},
        original_units={la.name: la.n_units for la in layers}, sparsities={"shared": 0.5},
    )  # fmt: skip
    pruned = shrink_model(dense, keep).model.eval()
    x = torch.randn(256, 64, generator=torch.Generator().manual_seed(seed))
    models = {"dense": dense, "structured_50": pruned, "int8": quantize_int8(dense)}
    models["int8_structured_50"] = quantize_int8(pruned)
    with warnings.catch_warnings():  # deprecated in torch 2.13; timed for reference only
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic

        models["torch_ao_int8"] = quantize_dynamic(  # type: ignore[no-untyped-call]
            copy.deepcopy(dense), {nn.Linear}, dtype=torch.qint8
        )
    ms = {name: _median_ms(model, x, repeats) for name, model in models.items()}
    return {
        "hidden": hidden, "batch": 256, "threads": torch.get_num_threads(),
        "ms_per_batch": ms,
        "speedup": {name: ms["dense"] / value for name, value in ms.items() if name != "dense"},
        "parameters": {name: count_parameters(models[name]) for name in ("dense", "structured_50")},
    }  # fmt: skip


def measure_pruning(
    *,
    seed: int = 0,
    events: int = 24_000,
    criterion: Criterion = "magnitude",
    latency_repeats: int = 30,
) -> dict[str, Any]:
    """Run every measurement; returns JSON-ready figures (see the module docstring).

    Args:
        seed: Seeds the streams, the models and the pruners.
        events: Events per stream; accuracy is compared over the last quarter.
        criterion: Importance criterion of the main runs (the daemon's default,
            ``pruning.criterion``; every criterion is compared on ``mlp_digits``).
        latency_repeats: Timed repetitions (of 10 batches each) per model.
    """
    evaluate_from = events * 3 // 4
    stream = DriftingStream(n_events=events, change_every=events, seed=7 + seed)  # stationary
    rows = list(stream.events())
    mlp_x = torch.tensor(np.array([r["x"] for r in rows]), dtype=torch.float32)
    mlp_y = torch.tensor([int(r["y"]) for r in rows])  # type: ignore[call-overload]
    digits_x, digits_y = digits_like_stream(events, seed=seed)
    cnn = model_config(
        "cnn", 64, 10, input_shape=[1, 8, 8], channels=[16, 32]
    )  # the default widths
    cases = {
        "mlp_default_stream": (
            model_config("mlp", stream.n_features, stream.n_classes),
            mlp_x,
            mlp_y,
        ),
        "mlp_digits": (model_config("mlp", 64, 10), digits_x, digits_y),
        "cnn_digits": (cnn, digits_x, digits_y),
        "cnn_digits_wide": (cnn | {"channels": [32, 64]}, digits_x, digits_y),
    }
    result: dict[str, Any] = {"events": events, "evaluated_from": evaluate_from, "seed": seed}
    result["criterion"] = criterion
    for name, (config, x, y) in cases.items():
        result[name] = _case(
            config, x, y, seed=seed, evaluate_from=evaluate_from, criterion=criterion
        )
    result["criteria_mlp_digits"] = _criteria(
        cases["mlp_digits"][0], digits_x, digits_y, seed=seed, evaluate_from=evaluate_from
    )
    result["aggressive"] = _aggressive(digits_x, digits_y, seed=seed, evaluate_from=evaluate_from)
    result["latency"] = _latency(seed=seed, repeats=latency_repeats, hidden=[512, 512])
    return result


def main() -> None:
    """Print the measure_pruning figures, JSON (``python -m driftd.tools.pruning_bench``)."""
    import json

    print(json.dumps(measure_pruning(), indent=1, default=float))


if __name__ == "__main__":
    main()
