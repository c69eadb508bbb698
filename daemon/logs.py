"""Logging set-up: readable lines for people, JSON lines for log pipelines."""

from __future__ import annotations

import json
import logging
import sys
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


def configure_logging(level: str, *, json_lines: bool) -> None:
    """Send driftd's logs to stderr in the chosen format (replaces earlier handlers)."""
    handler = logging.StreamHandler(sys.stderr)
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
    # kafka-python is chatty at INFO about every (re)connection.
    logging.getLogger("kafka").setLevel(logging.WARNING)
