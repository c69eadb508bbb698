"""The Kafka client's warnings and errors become driftd's own rate-limited line."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from driftd.logs import ClientLogSummary
from tests.fakes import FakeClock


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def seen(clock: FakeClock) -> Iterator[list[logging.LogRecord]]:
    handler = _Collect()
    handler.addFilter(ClientLogSummary(30.0, logger="summary-test.kafka", clock=clock.monotonic))
    root = logging.getLogger("summary-test")
    root.addHandler(handler)
    root.propagate = False
    try:
        yield handler.records
    finally:
        root.removeHandler(handler)
        root.propagate = True


def _client_error(clock: FakeClock, message: str = "Connection failed: 111 ECONNREFUSED") -> None:
    logging.getLogger("summary-test.kafka.net.manager").error(message)
    clock.advance(0.7)  # kafka-python: ~1.5 lines a second while the broker is down


def test_the_first_client_error_shows_at_once_then_one_line_per_interval_with_the_count(
    clock: FakeClock, seen: list[logging.LogRecord]
) -> None:
    filters = [f for h in logging.getLogger("summary-test").handlers for f in h.filters]
    summary = filters[0]
    assert isinstance(summary, ClientLogSummary)
    for _ in range(100):  # 70 s of a broker outage
        _client_error(clock)
    assert len(seen) == 3  # at 0 s, ~30 s, ~60 s: not 100
    assert [getattr(r, "suppressed", None) for r in seen] == [0, 42, 42]
    assert all(r.name == "driftd.kafka" for r in seen)
    assert all(r.levelno == logging.WARNING for r in seen)  # the client recovers; driftd goes on
    assert all(getattr(r, "event", None) == "kafka_client_errors" for r in seen)
    assert "ECONNREFUSED" in seen[0].getMessage()
    assert "summary-test.kafka.net.manager" in seen[0].getMessage()
    assert summary.total == 100


def test_other_loggers_and_client_info_lines_pass_unchanged(
    seen: list[logging.LogRecord],
) -> None:
    logging.getLogger("summary-test.driftd.loop").warning("snapshot failed")
    logging.getLogger("summary-test").warning("a root line")
    assert [r.getMessage() for r in seen] == ["snapshot failed", "a root line"]


def test_a_logger_named_like_the_client_but_not_under_it_passes() -> None:
    summary = ClientLogSummary(30.0)
    record = logging.makeLogRecord({"name": "kafkaesque", "levelno": logging.ERROR, "msg": "x"})
    assert summary.filter(record)
    assert record.getMessage() == "x"
    client = logging.makeLogRecord({"name": "kafka.conn", "levelno": logging.ERROR, "msg": "y"})
    assert summary.filter(client)
    assert client.name == "driftd.kafka"
    again = logging.makeLogRecord({"name": "kafka", "levelno": logging.WARNING, "msg": "z"})
    assert not summary.filter(again)  # within the interval: counted, not shown
    assert summary.total == 2
