"""Output for people and scripts: the consoles, tables that fit, times in one format, JSON.

The rich consoles :data:`out` (stdout) and :data:`err` (stderr) are made on first use: a command that
prints nothing through them, such as a ``sync --all`` with nothing due (one log line), does not import
rich's console (issue 16: every cron invocation pays its imports).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from syncflow.errors import (
    UsageError,
)

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    out: Console  # made by __getattr__
    err: Console

log = logging.getLogger("syncflow.cli")

# How this invocation's consoles look (see style): applied to a console when it is made. Piped output
# (cron logs, CI) gets wide tables instead of rich's 80-column default.
_look: dict[str, Any] = {"width": None if sys.stdout.isatty() or "COLUMNS" in os.environ else 160, "no_color": False}
_made: dict[str, Console] = {}
_making = threading.Lock()


def _apply_look(name: str, console: Console) -> None:
    if name == "out":
        if _look["width"] is None:
            console._width = None  # the terminal's own width
        else:
            console.width = _look["width"]
    if _look["no_color"]:
        console.no_color = True
        console._color_system = None  # no styles either


def style(*, no_color: bool) -> None:
    """This invocation's width and colours (the global options, $COLUMNS, $NO_COLOR): set on the consoles
    made already, and on the others when they are made."""
    columns = os.environ.get("COLUMNS", "")
    # A pipe (cron logs, CI) gets wide tables instead of rich's 80-column default; $COLUMNS wins.
    _look["width"] = int(columns) if columns.isdigit() else None if sys.stdout.isatty() else 160
    _look["no_color"] = no_color or bool(os.environ.get("NO_COLOR"))
    for name, console in list(_made.items()):
        _apply_look(name, console)


def _console(name: str) -> Console:
    """The console ``out`` or ``err``, made the first time it is asked for."""
    with _making:
        console = _made.get(name)
        if console is None:
            from rich.console import Console

            if name == "out":
                console = Console(highlight=False, width=_look["width"])
            else:
                console = Console(stderr=True, highlight=False, soft_wrap=True)
            _apply_look(name, console)
            _made[name] = console
        return console


def __getattr__(name: str) -> Any:
    """``out`` and ``err``: the consoles, made on first use."""
    if name in ("out", "err"):
        return _console(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def parse_zone(name: str) -> tzinfo | None:
    """``utc``, ``local`` (None: the machine's zone) or an IANA name such as Europe/Paris."""
    if name.strip().lower() in ("utc", "z", ""):
        return UTC
    if name.strip().lower() == "local":
        time.tzset()  # $TZ as it is now
        return None
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(
            f"--tz {name!r}: not a time zone; give utc, local or an IANA name such as Europe/Paris"
        ) from None


def as_zone(value: datetime | str | None, zone: tzinfo | None) -> datetime | None:
    """A time from the database (a datetime or its ISO text, any session zone) in the chosen zone."""
    if value is None:
        return None
    when = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(zone)


def show_time(value: datetime | str | None, zone: tzinfo | None, *, precise: bool = False) -> str | None:
    """One format everywhere: ISO 8601 with the offset, to the second (``precise``: as stored)."""
    when = as_zone(value, zone)
    if when is None:
        return None
    return when.isoformat() if precise else when.isoformat(timespec="seconds")


def zoned(data: dict[str, Any], zone: tzinfo | None, *keys: str) -> dict[str, Any]:
    """``data`` with the times under ``keys`` in the chosen zone, at full precision (for --json)."""
    return {**data, **{k: show_time(data.get(k), zone, precise=True) for k in keys if k in data}}


def note(*objects: Any) -> None:
    """An informational message on stderr; --quiet drops it (warnings and errors always show)."""
    if not QUIET.is_set():
        _console("err").print(*objects)


QUIET = threading.Event()


@dataclass(frozen=True)
class Col:
    """A table column: ``drop`` 0 is never dropped nor cut (names, statuses, times); higher ones are
    dropped first when the console is narrow; ``wrap`` columns may fold onto several lines instead."""

    header: str
    drop: int = 0
    wrap: bool = False


def fit_table(title: str, cols: list[Col], rows: list[list[str]], *, caption: str | None = None) -> Table:
    """A table that fits the console: it drops the least important columns, then folds the wrappable
    ones; the others (entity names, statuses, times) are never truncated."""
    from rich.table import Table
    from rich.text import Text

    def natural(i: int) -> int:
        cells = [cols[i].header, *(r[i] for r in rows)]
        return max(Text.from_markup(line).cell_len for c in cells for line in (c.split("\n") or [""]))

    def least(i: int) -> int:
        return min(natural(i), 12) if cols[i].wrap else natural(i)

    keep = list(range(len(cols)))
    width = _console("out").width
    while sum(least(i) + 3 for i in keep) + 1 > width:
        droppable = [i for i in keep if cols[i].drop > 0]
        if not droppable:
            break
        keep.remove(max(droppable, key=lambda i: (cols[i].drop, i)))
    table = Table(title=title, caption=caption if width >= 60 else None)
    for i in keep:
        c = cols[i]
        if c.wrap:
            table.add_column(c.header, overflow="fold", min_width=least(i))
        else:
            table.add_column(c.header, no_wrap=True, min_width=natural(i))
    for r in rows:
        table.add_row(*(r[i] for i in keep))
    return table


def emit_json(data: Any) -> None:
    """JSON on stdout, nothing else, for scripts."""
    sys.stdout.write(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")


def plain(value: Any) -> str:
    """A value as words for text output: never Python's None/True/False."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(plain(v) for v in value) or "-"
    if isinstance(value, dict):
        return json.dumps(value, default=str, ensure_ascii=False)
    return str(value)
