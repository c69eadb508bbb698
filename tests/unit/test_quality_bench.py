"""The quality bench's machinery: sources per regime, baselines, figures and targets.

These tests check that the bench measures what it says; they never assert that driftd meets the
targets (that is what ``driftd bench --section quality`` reports).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from river.datasets import synth

from driftd.records import Record, TopicPartition
from driftd.tools.quality_baselines import RunningStandardizer, torch_mlp
from driftd.tools.quality_bench import measure_quality, measure_stream
from driftd.tools.quality_sources import LearnerPacedSource, PacedSource, make_source
from driftd.tools.quality_streams import from_river
from driftd.tools.quality_targets import print_targets, quality_targets

TP = TopicPartition("quality", 0)


def _records(n: int) -> list[Record]:
    return [Record("quality", 0, k, b"{}") for k in range(n)]


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_paced_source_releases_events_by_the_clock_and_reports_the_waiting_ones() -> None:
    clock = FakeClock()
    source = PacedSource(_records(100), rate=10.0, monotonic=clock.monotonic, sleep=clock.sleep)
    assert source.lag() == {TP: 0}
    assert [r.offset for r in source.poll(5, 1.0)] == [0]  # only the first has arrived
    assert [r.offset for r in source.poll(5, 1.0)] == [1]  # waited 0.1 s for the next
    assert clock.slept == [pytest.approx(0.1)]
    clock.now += 0.95  # events 2..10 arrived meanwhile
    assert source.lag() == {TP: 9}
    assert [r.offset for r in source.poll(4, 1.0)] == [2, 3, 4, 5]
    assert source.lag() == {TP: 5}
    assert len(source.poll(50, 0.0)) == 5
    assert source.poll(5, 0.01) == []  # nothing arrived within the timeout
    assert clock.slept[-1] == pytest.approx(0.01)
    clock.now += 100.0
    assert len(source.poll(1_000, 0.0)) == 100 - 11
    assert source.lag() == {TP: 0}


def test_learner_paced_source_never_lags_and_backlog_lags_by_all_that_remain() -> None:
    learner = make_source("learner", _records(10))
    backlog = make_source("backlog", _records(10))
    assert isinstance(learner, LearnerPacedSource)
    assert len(learner.poll(4, 0.0)) == len(backlog.poll(4, 0.0)) == 4
    assert learner.lag() == {TP: 0}
    assert backlog.lag() == {TP: 6}
    with pytest.raises(ValueError, match="unknown regime"):
        make_source("bursty", _records(1))


def test_running_standardizer_matches_the_batch_statistics() -> None:
    data = torch.from_numpy(np.random.default_rng(0).normal(5.0, 3.0, size=(100, 4)))
    scaler = RunningStandardizer(4)
    for start in range(0, 100, 32):
        scaler.update(data[start : start + 32].float())
    np.testing.assert_allclose(scaler.mean.numpy(), data.mean(dim=0).numpy(), rtol=1e-5)
    np.testing.assert_allclose((scaler.m2 / 99).sqrt().numpy(), data.std(dim=0).numpy(), rtol=1e-5)


def _easy(n_events: int = 1_200, seed: int = 0) -> Any:
    source = synth.Hyperplane(seed=seed, n_features=4, noise_percentage=0.0)
    return from_river("easy", "a fixed hyperplane", [("fixed", source.take(n_events))],
                      n_classes=2)  # fmt: skip


def test_the_plain_loop_predicts_each_batch_before_learning_it() -> None:
    stream = _easy(n_events=64)
    run = torch_mlp(stream, seed=3)
    with torch.random.fork_rng(devices=[]):  # the untrained model the loop starts from
        torch.manual_seed(3)
        model = torch.nn.Sequential(
            torch.nn.Linear(4, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(),
            torch.nn.Linear(64, 2),
        )  # fmt: skip
    first = model(torch.from_numpy(stream.features[:32])).argmax(dim=1).numpy()
    np.testing.assert_array_equal(run.correct[:32], first == stream.labels[:32])


def test_baselines_and_driftd_score_above_chance_on_an_easy_stream() -> None:
    stream = _easy()
    figures = measure_stream(
        stream, seed=0, learners=("river_linear", "river_arf", "torch_mlp", "driftd")
    )
    majority = np.bincount(stream.labels).max() / stream.n_events
    for name in ("river_linear", "river_arf", "torch_mlp"):
        assert figures[name]["accuracy"] > majority + 0.15, (name, figures[name])
    driftd = figures["driftd"]
    assert 0.0 <= driftd["accuracy"] <= 1.0
    assert driftd["false_alarms"] <= driftd["detections"]
    assert driftd["steps"] >= 1
    assert driftd["events_per_s"] > 0


def test_quick_bench_collects_every_learner_and_the_targets_evaluate() -> None:
    results = measure_quality(quick=True, seeds=(0,), only=("stagger_recurring",))
    entry = results["streams"]["stagger_recurring"]
    assert set(entry["learners"]) == {
        "river_linear", "river_arf", "torch_mlp", "driftd", "driftd_off", "driftd_paced",
        "driftd_backlog",
    }  # fmt: skip
    for runs in entry["learners"].values():
        assert len(runs["accuracy"]) == 1
        assert runs["mean"] == runs["accuracy"][0]
    checks = quality_targets(results, reference={"quality_backlog_accuracy": {"quick": {
        "stagger_recurring": 0.5}}})  # fmt: skip
    targets = {check["target"].split(":")[0] for check in checks}
    assert {"learner-paced >= torch_mlp", "learner-paced >= river_linear",
            "backlog >= today's defaults"} <= targets  # fmt: skip
    for check in checks:  # recurring: n/a where adaptation off loses nothing
        allowed = (True, False, None) if check["target"].startswith("recurring") else (True, False)
        assert check["met"] in allowed, check


def _results(**means: float) -> dict[str, Any]:
    learners = {
        name: {"mean": value, "accuracy": [value], "lost": [[300]], "false_alarms": [0],
               "detections": [1], "delays": [[10]]}
        for name, value in means.items()
    }  # fmt: skip
    learners["driftd_off"]["lost"] = [[700]]
    return {"quick": False, "rate": 2_000.0, "streams": {"s": {
        "learners": learners, "recurring": [1_000], "segments": [1_000],
        "quiet_events": 25_000}}}  # fmt: skip


def test_targets_pass_and_miss_by_the_stated_margins(capsys: pytest.CaptureFixture[str]) -> None:
    reference = {"quality_backlog_accuracy": {"full": {"s": 0.70}}, "commit": "abc"}
    results = _results(river_linear=0.80, river_arf=0.85, torch_mlp=0.78, driftd=0.80,
                       driftd_off=0.79, driftd_paced=0.81, driftd_backlog=0.70)  # fmt: skip
    met = {c["target"]: c["met"] for c in quality_targets(results, reference)}
    assert met["learner-paced >= torch_mlp"] is True
    assert met["learner-paced >= river_linear"] is True
    assert met["paced 2,000/s: <= 5 points under the best baseline"] is True  # 4 under ARF
    assert met["paced: within 2 points of the best baseline on average"] is False
    assert met["<= 1 false alarm per 25,000 quiet events"] is True
    assert met["recurring at 1,000: back >= 2x faster than adaptation off"] is True  # 300 vs 700
    assert met["backlog >= today's defaults"] is True
    results = _results(river_linear=0.81, river_arf=0.87, torch_mlp=0.78, driftd=0.80,
                       driftd_off=0.79, driftd_paced=0.81, driftd_backlog=0.69)  # fmt: skip
    results["streams"]["s"]["learners"]["driftd"]["false_alarms"] = [2]
    results["streams"]["s"]["learners"]["driftd_off"]["lost"] = [[500]]
    checks = quality_targets(results, reference)
    met = {c["target"]: c["met"] for c in checks}
    assert met["learner-paced >= river_linear"] is False
    assert met["paced 2,000/s: <= 5 points under the best baseline"] is False  # 6 under
    assert met["<= 1 false alarm per 25,000 quiet events"] is False
    assert met["recurring at 1,000: back >= 2x faster than adaptation off"] is False
    assert met["backlog >= today's defaults"] is False
    assert print_targets(checks) == 6
    results["streams"]["s"]["learners"]["driftd_off"]["lost"] = [[0]]
    met = {c["target"]: c["met"] for c in quality_targets(results, reference)}
    assert met["recurring at 1,000: back >= 2x faster than adaptation off"] is None
    assert capsys.readouterr().out.count("MISS") == 6
