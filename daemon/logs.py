"""Logging set-up: readable lines for people, JSON lines for log pipelines."""

from __future__ import annotations

import json
import logging
import math
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Attributes every LogRecord has; anything else was passed with ``extra=`` and is structured.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as a JSON line."""
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class ClientLogSummary(logging.Filter):
    """A Kafka client's warnings and errors, summarised into driftd's own rate-limited line.

    While a broker is down kafka-python logs a few lines a second. The first one passes at once,
    rewritten as a ``driftd.kafka`` line (``event=kafka_client_errors``); later ones are only
    counted, and the next one after ``every_s`` passes with the count of those suppressed.
    They pass as warnings: kafka-python logs at ERROR what it recovers from itself (a socket
    closed under a read, a refused connection: it reconnects), and driftd logs its own errors
    for what it cannot recover from. Lines below WARNING and other loggers' lines pass unchanged.

    Args:
        every_s: Least seconds between two summary lines.
        logger: The client's logger name (its children included).
        clock: Monotonic seconds (injected by tests).
    """

    def __init__(
        self,
        every_s: float = 30.0,
        *,
        logger: str = "kafka",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.every_s = every_s
        self._prefix = logger
        self._clock = clock
        self._lock = threading.Lock()
        self._last = -math.inf
        self._suppressed = 0
        self.total = 0  #: client warnings and errors seen, reported or not

    def filter(self, record: logging.LogRecord) -> bool:
        """Pass ``record`` (rewritten when it is the client's) or drop it, counted."""
        name = record.name
        if record.levelno < logging.WARNING or not (
            name == self._prefix or name.startswith(self._prefix + ".")
        ):
            return True
        with self._lock:
            self.total += 1
            now = self._clock()
            if now - self._last < self.every_s:
                self._suppressed += 1
                return False
            suppressed, self._suppressed, self._last = self._suppressed, 0, now
        message = record.getMessage()
        record.msg = "Kafka client (%s): %s [%d similar lines suppressed; at most one every %.0f s]"
        record.args = (name, message, suppressed, self.every_s)
        record.name = "driftd.kafka"
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.event = "kafka_client_errors"
        record.suppressed = suppressed
        return True


def configure_logging(level: str, *, json_lines: bool) -> None:
    """Send driftd's logs to stderr in the chosen format (replaces earlier handlers).

    The Kafka client's own warnings and errors are summarised (:class:`ClientLogSummary`).
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ClientLogSummary())
    if json_lines:
        handler.setFormatter(JsonLinesFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    handler.setLevel(level)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("driftd").setLevel(level)


def add_json_log_file(path: Path, level: str = "INFO") -> logging.Handler:
    """Also write driftd's logs from ``level`` up to ``path`` as JSON lines (``driftd report``).

    The console keeps its own level. Returns the handler (remove and close it when done).
    """
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(JsonLinesFormatter())
    handler.setLevel(level)
    driftd = logging.getLogger("driftd")
    driftd.addHandler(handler)
    driftd.setLevel(min(driftd.getEffectiveLevel(), handler.level))
    return handler


@contextmanager
def driftd_log_level(level: int) -> Iterator[None]:
    """Set driftd's log level for the ``with`` block, then restore it (in-process benches)."""
    logger = logging.getLogger("driftd")
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)
