"""A stop request is honoured while the source is slow to answer a page.

The fetch runs in a thread ahead of the loader; a SIGTERM must not wait for a
blocked request to come back (a CronJob has 30 s before SIGKILL).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import Cli, query, spawn


@pytest.fixture
def stalled(demo: Any) -> Iterator[threading.Event]:
    """After the first page, every data page of items waits 25 s (or until the test ends)."""
    release = threading.Event()
    served: list[int] = []

    def stall(slug: str, page: int, params: dict[str, str]) -> None:
        if slug == "items":
            served.append(page)
            if len(served) > 1:
                release.wait(25)

    demo.state.before_page = stall
    yield release
    release.set()
    demo.state.before_page = None


def test_sigterm_during_a_slow_page_exits_within_seconds(
    demo_cli: Cli, demo: Any, db_url: str, stalled: threading.Event
) -> None:
    demo.state.insert("items", 200)
    demo_cli.config.write_text(demo_cli.config.read_text() + "\n[connectors.erp.entities.items]\npage_size = 20\n")
    assert demo_cli("discover").exit_code == 0
    proc = spawn(demo_cli, "sync", "erp.items")
    deadline = time.monotonic() + 20
    while query(db_url, "SELECT count(*) FROM bridge.sync_runs WHERE status = 'running'") != [(1,)]:
        assert time.monotonic() < deadline, "the sync never started"
        time.sleep(0.05)
    time.sleep(1.0)  # now blocked on the stalled second page
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, errtext = proc.communicate(timeout=30)
    elapsed = time.monotonic() - started
    assert proc.returncode == 143, errtext
    assert elapsed < 10, f"took {elapsed:.1f} s to stop"
    assert query(db_url, "SELECT status FROM bridge.sync_runs") == [("cancelled",)]
    assert query(db_url, "SELECT last_rowversion FROM bridge.entities WHERE slug = 'items'") == [(None,)]
