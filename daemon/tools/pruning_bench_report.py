"""``driftd bench --section pruning``: the pruning figures, readable."""

from __future__ import annotations

from typing import Any

from driftd.tools.pruning_bench import measure_pruning


def print_pruning(*, quick: bool) -> dict[str, Any]:
    """Measure and print sizes, FLOPs, accuracy and latency of dense, pruned and int8 models."""
    events = 8_000 if quick else 24_000
    figures = measure_pruning(events=events, latency_repeats=10 if quick else 30)
    print(
        f"pruning: 50% structured (trunk units), criterion {figures['criterion']}, "
        f"{events:,} events per stream; accuracy over the last quarter (stationary)"
    )
    print(
        f"  {'model / stream':<22}{'params':>16}{'FLOPs/event':>20}{'accuracy':>18}"
        f"{'delta':>9}{'int8 delta':>12}  outcomes"
    )
    for name in ("mlp_default_stream", "mlp_digits", "cnn_digits", "cnn_digits_wide"):
        case = figures[name]
        outcomes = ", ".join(f"{k} {v}" for k, v in case["outcomes"].items() if v) or "none"
        print(
            f"  {name:<22}{case['parameters_before']:>7,} -> {case['parameters_after']:<6,}"
            f"{case['flops_before']:>9,} -> {case['flops_after']:<8,}"
            f"{case['accuracy_dense']:>8.3f} -> {case['accuracy_pruned']:.3f}"
            f"{case['accuracy_delta_points']:>+8.2f}p"
            f"{100 * case['int8']['accuracy_delta']:>+11.2f}p  {outcomes}"
        )
    criteria = figures["criteria_mlp_digits"]
    print("  criteria (mlp_digits, accuracy): " + ", ".join(
        f"{name} {value:.3f}" for name, value in criteria.items()))  # fmt: skip
    aggressive = figures["aggressive"]
    print(
        f"  too aggressive (target {aggressive['target']:.0%}): outcomes {aggressive['outcomes']}; "
        f"accuracy dense {aggressive['accuracy_dense']:.3f}, verified+recovery "
        f"{aggressive['accuracy_verified']:.3f} (widths {aggressive['widths_verified']}), "
        f"kept blindly {aggressive['accuracy_blind']:.3f} (widths {aggressive['widths_blind']})"
    )
    latency = figures["latency"]
    print(
        f"  inference, MLP {latency['hidden']} batch {latency['batch']}, "
        f"{latency['threads']} thread(s), median ms/batch:"
    )
    for name, ms in latency["ms_per_batch"].items():
        speedup = latency["speedup"].get(name)
        ratio = "" if speedup is None else f"  ({speedup:.2f}x faster than dense)"
        print(f"    {name:<20}{ms:>8.3f} ms{ratio}")
    return figures
