"""Logging for the CLI: readable text, or one JSON object per line for log shippers.

Everything goes to stderr so stdout stays parseable. Records carry fields
(event, connector, entity, run_id, status, counts) through ``extra``; the
JSON formatter emits them, the text formatter prints the message. No code
path puts a token in a record.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

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
    def format(self, record: logging.LogRecord) -> str:
        prefix = {logging.WARNING: "warning: ", logging.ERROR: "error: ", logging.CRITICAL: "error: "}
        return prefix.get(record.levelno, "") + record.getMessage()


def setup(fmt: str = "text", level: str = "info") -> None:
    """(Re)configure the ``syncflow`` logger for this invocation, writing to the current stderr."""
    logger = logging.getLogger(LOGGER)
    for h in list(logger.handlers):
        logger.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
