"""The throughput targets: PASS/MISS against the recorded reference, counted for the exit code."""

from __future__ import annotations

import pytest

from driftd.tools.bench import END_TO_END_TARGET, PEAK_RSS_SLACK, _throughput_targets
from driftd.tools.quality_targets import load_reference


def test_the_reference_is_shipped_with_a_peak_rss_and_every_streams_backlog_accuracy() -> None:
    reference = load_reference()
    assert reference["peak_rss_mib"] > 0
    assert len(reference["commit"]) == 40
    full = reference["quality_backlog_accuracy"]["full"]
    assert len(full) >= 7
    assert all(0.0 <= value <= 1.0 for value in full.values())


def test_throughput_targets_pass_and_miss_at_their_bounds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rss = load_reference()["peak_rss_mib"]
    assert _throughput_targets(END_TO_END_TARGET, rss * PEAK_RSS_SLACK) == 0
    assert capsys.readouterr().out.count("PASS") == 2
    assert _throughput_targets(END_TO_END_TARGET - 1, rss * PEAK_RSS_SLACK + 1) == 2
    assert capsys.readouterr().out.count("MISS") == 2
