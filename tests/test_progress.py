"""Issue 15 (4, 5): what a sync shows while it runs, on a terminal and under cron.

On a terminal: the real CLI in a pseudo-terminal, its output replayed on a small
screen emulator; the final screen must show rows done / announced total, one
frozen line per entity, and the summaries on their own lines after the bars.
Without a terminal: timestamped start, progress and summary lines.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import Cli

TIMESTAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d"
CSI = re.compile(r"\x1b\[(\??)(\d*(?:;\d*)*)([A-Za-z])")


def screen(raw: str) -> list[str]:  # noqa: C901 - a small VT100 emulator: one branch per escape sequence
    """The text a terminal shows after ``raw``: enough of VT100 for rich's live display."""
    lines: list[list[str]] = [[]]
    row = col = 0
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\x1b":
            m = CSI.match(raw, i)
            if m is None:
                i += 1
                continue
            i = m.end()
            n = int(m.group(2).split(";")[0] or 1) if m.group(2) else 1
            cmd = m.group(3)
            if m.group(1):
                continue  # cursor show/hide
            if cmd == "A":
                row = max(row - n, 0)
            elif cmd == "B":
                row += n
            elif cmd == "G":
                col = n - 1
            elif cmd == "K":
                mode = int(m.group(2) or 0)
                while len(lines) <= row:
                    lines.append([])
                lines[row] = [] if mode == 2 else lines[row][:col]
            continue
        i += 1
        if ch == "\r":
            col = 0
        elif ch == "\n":
            row += 1
            col = 0
        elif ch >= " ":
            while len(lines) <= row:
                lines.append([])
            line = lines[row]
            line.extend(" " * (col - len(line) + 1))
            line[col] = ch
            col += 1
    return ["".join(line).rstrip() for line in lines]


def run_in_pty(cli: Cli, *args: str, columns: int = 110, extra_env: dict[str, str] | None = None) -> tuple[int, str]:
    """``syncflow ARGS`` with stdout and stderr on a pseudo-terminal; returns (exit code, raw output)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {**os.environ, **cli.env, "COLUMNS": str(columns), "LINES": "40", "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    env.update(extra_env or {})
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncflow", "--config", str(cli.config), *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        close_fds=True,
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    code = proc.wait(timeout=30)
    return code, b"".join(chunks).decode("utf-8", "replace")


@pytest.fixture
def slow_synced(demo_cli: Cli, demo: Any) -> Iterator[Cli]:
    """Discovered, with pages of 10 rows that take a little while each."""
    assert demo_cli("discover").exit_code == 0
    demo_cli.config.write_text(
        demo_cli.config.read_text() + "\n[connectors.erp.entities.items]\npage_size = 10\n", encoding="utf-8"
    )

    def slow(slug: str, page: int, params: dict[str, str]) -> None:
        time.sleep(0.04)

    demo.state.before_page = slow
    yield demo_cli
    demo.state.before_page = None


def test_terminal_shows_rows_of_total_and_summaries_on_their_own_lines(slow_synced: Cli) -> None:
    code, raw = run_in_pty(slow_synced, "sync", "--all")
    assert code == 0, raw
    shown = [line for line in screen(raw) if line.strip()]
    expected = {"erp.items": 120, "erp.customers": 30, "erp.orders": 40}
    bars = {ref: [line for line in shown if line.startswith(ref + " ")] for ref in expected}
    for ref, n in expected.items():
        assert len(bars[ref]) == 1, (ref, shown)  # one line per entity, kept when it ends
        assert f"{n}/{n} rows" in bars[ref][0], shown
        assert "success" in bars[ref][0], shown
    summaries = [i for i, line in enumerate(shown) if line.startswith("success erp.")]
    assert len(summaries) == 3, shown  # each on its own line: nothing glued to a bar
    last_bar = max(shown.index(bars[ref][0]) for ref in expected)
    assert min(summaries) > last_bar, shown  # printed after the live display stopped
    assert "bytes" not in raw
    assert "/?" not in "\n".join(shown)


def test_terminal_bar_shows_rate_and_eta_while_running(slow_synced: Cli) -> None:
    code, raw = run_in_pty(slow_synced, "sync", "erp.items")
    assert code == 0, raw
    assert re.search(r"erp\.items .*\d+/120 rows .*rows/s .*ETA", raw), raw[-2000:]
    final = [line for line in screen(raw) if line.strip()]
    assert next(line for line in final if line.startswith("erp.items ")).count("120/120 rows") == 1
    assert final[-1].startswith("success erp.items: 120 fetched, 120 inserted")


def test_without_terminal_start_progress_and_summary_lines_are_timestamped(slow_synced: Cli) -> None:
    slow_synced.config.write_text(
        slow_synced.config.read_text().replace("[sync]\n", "[sync]\nprogress_interval_seconds = 0.1\n"),
        encoding="utf-8",
    )
    r = slow_synced("sync", "erp.items", "erp.customers")
    assert r.exit_code == 0, r.stderr
    lines = r.stderr.splitlines()
    assert lines, lines
    assert all(re.match(TIMESTAMP + " ", line) for line in lines), lines
    text = [line.split(" ", 1)[1] for line in lines]
    assert "started sync of erp.items" in text
    assert "started sync of erp.customers" in text
    progress = [t for t in text if re.fullmatch(r"erp\.items: \d+/120 rows \(\d+%\), \d+ rows/s, ETA \S+", t)]
    assert progress, text
    done = text.index(next(t for t in text if t.startswith("success erp.items: 120 fetched")))
    assert text.index(progress[0]) < done
    assert text.index("started sync of erp.items") < text.index(progress[0])


def test_progress_interval_is_a_sync_setting(tmp_path: Any) -> None:
    from syncflow.config import resolve

    path = tmp_path / "syncflow.toml"
    path.write_text("[sync]\nprogress_interval_seconds = 5\n", encoding="utf-8")
    assert resolve(cli_path=path, env={}).settings.sync.progress_interval_seconds == 5
    assert (
        resolve(
            cli_path=path, env={"SYNCFLOW_SYNC_PROGRESS_INTERVAL_SECONDS": "2"}
        ).settings.sync.progress_interval_seconds
        == 2
    )
    path.write_text("", encoding="utf-8")
    assert resolve(cli_path=path, env={}).settings.sync.progress_interval_seconds == 30


def test_no_color_and_the_no_color_option(slow_synced: Cli) -> None:
    colour = re.compile(r"\x1b\[[0-9;]*m")
    code, raw = run_in_pty(slow_synced, "sync", "erp.customers")
    assert code == 0
    assert colour.search(raw)
    code, raw = run_in_pty(slow_synced, "status", extra_env={"NO_COLOR": "1"})
    assert code == 0, raw
    assert "ok" in raw, raw
    assert not colour.search(raw), raw
    code, raw = run_in_pty(slow_synced, "status", "--no-color")
    assert code == 0, raw
    assert "ok" in raw, raw
    assert not colour.search(raw), raw


def test_json_logs_carry_run_started_and_run_progress(slow_synced: Cli) -> None:
    slow_synced.config.write_text(
        slow_synced.config.read_text().replace("[sync]\n", "[sync]\nprogress_interval_seconds = 0.1\n"),
        encoding="utf-8",
    )
    r = slow_synced("--log-format", "json", "sync", "erp.items")
    assert r.exit_code == 0, r.stderr
    events = [json.loads(line) for line in r.stderr.splitlines()]
    names = [e["event"] for e in events]
    assert names[0] == "run_started", names
    assert names[-1] == "run_finished", names
    assert "run_progress" in names, names
    progress = next(e for e in events if e["event"] == "run_progress" and e.get("counts"))
    assert progress["entity"] == "erp.items"
    assert progress["counts"]["total"] == 120
