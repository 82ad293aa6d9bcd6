"""Logging for the CLI: readable text, or one JSON object per line for log shippers.

Everything goes to stderr so stdout stays parseable. Records carry fields
(event, connector, entity, run_id, status, counts) through ``extra``; the
JSON formatter emits them, the text formatter prints the message, after an
ISO 8601 timestamp with offset when stderr is not a terminal (cron, pods).
No code path puts a token in a record.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime, tzinfo
from typing import TextIO

FIELDS = ("event", "connector", "entity", "run_id", "status", "counts", "duration_seconds", "error", "warnings")
LOGGER = "syncflow"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "event": getattr(record, "event", None) or record.name,
            "message": record.getMessage(),
        }
        for key in FIELDS[1:]:
            value = getattr(record, key, None)
            if value is not None:
                data[key] = value
        return json.dumps(data, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``warning: ...`` / ``error: ...``; with ``timestamps``, each line starts with the time and its offset."""

    def __init__(self, *, timestamps: bool = False, tz: tzinfo = UTC) -> None:
        super().__init__()
        self.timestamps = timestamps
        self.tz = tz

    def format(self, record: logging.LogRecord) -> str:
        prefix = {logging.WARNING: "warning: ", logging.ERROR: "error: ", logging.CRITICAL: "error: "}
        text = prefix.get(record.levelno, "") + record.getMessage()
        if not self.timestamps:
            return text
        stamp = datetime.fromtimestamp(record.created, self.tz).isoformat(timespec="seconds")
        return "\n".join(f"{stamp} {line}" for line in text.split("\n"))


class QuietFilter(logging.Filter):
    """``--quiet``: warnings, errors and the records marked ``summary`` (each run's final line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or bool(getattr(record, "summary", False))


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time, so a live display that redirects it keeps lines whole."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def setup(
    fmt: str = "text", level: str = "info", *, timestamps: bool = False, tz: tzinfo = UTC, quiet: bool = False
) -> None:
    """(Re)configure the ``syncflow`` logger for this invocation, writing to stderr."""
    logger = logging.getLogger(LOGGER)
    for h in list(logger.handlers):
        logger.removeHandler(h)
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter(timestamps=timestamps, tz=tz))
    if quiet:
        handler.addFilter(QuietFilter())
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
