"""The serving measurements run end to end on small sizes (they measure; this checks they work)."""

from __future__ import annotations

from driftd.tools.serving_bench import measure_inference_worker, measure_serving


def test_measure_serving_sees_every_publish_and_fails_no_prediction() -> None:
    result = measure_serving(
        publishes=5, poll_interval_s=0.02, hidden=(8,), throughput_seconds=0.05
    )
    assert (result["publishes"], result["not_visible"], result["failed_predictions"]) == (5, 0, 0)
    assert (result["reloads"], result["refused"]) == (5, 0)
    assert 0 < result["publish_to_prediction_p50_s"] <= result["publish_to_prediction_p99_s"] < 10
    assert result["blocked_during_a_reload"] <= result["blocked_predictions"]
    assert result["predictions_under_reload"] > 0
    assert result["rows_per_s"] > 0
    assert result["calls_per_s_batch_1"] > 0


def test_measure_inference_worker_without_a_broker() -> None:
    result = measure_inference_worker(events=2_000, batch_size=128)
    assert (result["events"], result["predictions"], result["broker"]) == (2_000, 2_000, False)
    assert result["events_per_s"] > 0
