"""``driftd bench --section distributed`` on tiny sizes: every configuration learns every event.

The bench measures; this checks that what it measures is whole (each run learned exactly the
events it was given, the 2-rank runs synced in their own mode) and that the figures derive from
the runs as the report says.
"""

from __future__ import annotations

from typing import Any

import pytest

from driftd.tools.distributed_bench import RankResult, bench_records, median_rate
from driftd.tools.distributed_bench_report import distributed_figures
from driftd.tools.timed_group import TimedGroup


def test_every_configuration_learns_all_its_events() -> None:
    figures = distributed_figures(events=1_200, heavy_events=200, repeats=1)

    rows = figures["rows"]
    shape = [(row["model"], row["ranks"], row["sync"]) for row in rows]
    assert shape == [
        (model, ranks, sync)
        for model in ("default", "heavy")
        for ranks, sync in ((1, None), (2, "average"), (2, "allreduce"))
    ]
    for row in rows:
        expected = 1_200 if row["model"] == "default" else 200
        assert row["learned"] == [expected]  # all events, each once, over the ranks
        assert row["events_per_s"] > 0
        if row["ranks"] == 1:
            assert (row["speedup"], row["sync_median_s"], row["collective_share"]) == (1, None, 0)
        else:
            assert row["syncs_per_rank"] >= 1  # at least the one before the final snapshot
            assert row["sync_median_s"] > 0
            assert 0 < row["collective_share"] < 1
    assert figures["widths"]["heavy"] == (1024, 1024)
    assert figures["nccl"]["ran"] is False or figures["nccl"]["learned"] == 200


def test_every_rank_makes_the_same_stream() -> None:
    assert bench_records(40) == bench_records(40)
    assert {record.partition for record in bench_records(40)} == {0, 1, 2, 3}


def _rank(learned: int, seconds: float) -> RankResult:
    return RankResult(learned, seconds, (), 0.0, None)


def test_group_rate_is_all_events_over_the_slowest_rank_median_over_runs() -> None:
    runs = [[_rank(100, 1.0), _rank(100, 2.0)], [_rank(100, 1.0), _rank(100, 1.0)],
            [_rank(50, 0.5), _rank(50, 0.25)]]  # fmt: skip

    assert median_rate(runs) == pytest.approx(200.0)  # of 100, 200 and 200


class _CountingGroup:
    rank, world_size = 0, 1

    def __init__(self) -> None:
        self.calls: list[str] = []

    def sum(self, values: Any) -> list[float]:
        self.calls.append("sum")
        return list(values)

    def __getattr__(self, name: str) -> Any:
        return lambda *args: self.calls.append(name)


def test_timed_group_forwards_every_collective_and_adds_up_its_time() -> None:
    inner = _CountingGroup()
    timed = TimedGroup(inner)  # type: ignore[arg-type]

    assert timed.sum([1.0, 2.0]) == [1.0, 2.0]
    timed.sum_(None)  # type: ignore[arg-type]
    timed.average_parameters([])
    timed.broadcast_([])
    timed.gather(1)
    timed.broadcast(2)
    timed.close()

    assert inner.calls == [
        "sum", "sum_", "average_parameters", "broadcast_", "gather", "broadcast", "close",
    ]  # fmt: skip
    assert (timed.rank, timed.world_size) == (0, 1)
    assert timed.seconds > 0
