"""Range-parallel keyset reads (issue 16): a rowversion entity read in row-version ranges at once.

Each test runs the real CLI against the demo server with ``max_concurrent_requests = 4`` and checks
the invariant after the run: every live source row is a live table row with the same values, and
the checkpoint never passes a row the table lacks. The reasoning is in docs/correctness.md,
"Range-parallel reads".
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from demo_apismith import RV_BASE, DemoServer, DemoState
from tests.helpers import (
    DEMO_TOKEN,
    TOKEN_ENV,
    Cli,
    PageRequests,
    items_api,
    items_checkpoint,
    items_source,
    items_table,
    query,
)

ROWS = 400
PAGE = 10


@pytest.fixture
def server() -> Iterator[DemoServer]:
    with DemoServer(DemoState({}, token=DEMO_TOKEN)) as s:
        yield s


def _setup(cli: Cli, server: DemoServer, *, ties: bool = False, rows: int = ROWS) -> DemoState:
    """``rows`` rows, one row version each (or, with ``ties``, groups of 15 sharing one: wider than a page)."""
    st = server.state
    st.set_api("items", items_api("rowversion"))
    if ties:
        for start in range(0, rows, 15):
            st.put_rows("items", [{"id": i, "val": f"v{i}"} for i in range(start, min(start + 15, rows))])
    else:
        for i in range(rows):
            st.put_rows("items", [{"id": i, "val": f"v{i}"}])
    cli.config.write_text(
        f"[sync]\nretry_backoff_seconds = 0\npage_size = {PAGE}\nbatch_rows = {PAGE}\n\n"
        f'[connectors.erp]\nbase_url = "{server.url}"\ntoken_env = "{TOKEN_ENV}"\nmax_concurrent_requests = 4\n'
        'parallel_reads = "always"\n',
        encoding="utf-8",
    )
    assert cli("discover").exit_code == 0
    return st


def _sync(cli: Cli) -> dict[str, Any]:
    r = cli("sync", "erp.items", "--json")
    assert r.exit_code == 0, r.stderr
    run: dict[str, Any] = json.loads(r.stdout)[0]
    assert run["status"] == "success", run
    return run


@pytest.mark.parametrize("ties", [False, True])
def test_a_first_load_is_read_in_ranges_at_once_and_loses_nothing(
    cli: Cli, server: DemoServer, db_url: str, ties: bool
) -> None:
    """Boundaries are sampled (``page_size=1`` requests), several ranges are read at once, and the table
    holds every row once; with tie groups wider than a page cut by the range boundaries too."""
    st = _setup(cli, server, ties=ties)
    requests: list[dict[str, str]] = []
    st.before_page = lambda slug, page, params: requests.append(params)
    _sync(cli)
    st.before_page = None
    assert items_table(db_url) == items_source(st)
    assert query(db_url, "SELECT count(*) FROM erp.items") == [(ROWS,)]
    assert items_checkpoint(db_url) == str(st.rv)
    samples = [p for p in requests if p.get("page_size") == "1"]
    assert len(samples) >= 3, requests
    assert st.peak_in_flight > 1
    # Nothing new: the next run reads the checkpoint's own version again and nothing else.
    requests.clear()
    st.before_page = lambda slug, page, params: requests.append(params)
    run = _sync(cli)
    st.before_page = None
    assert len(requests) <= 2, requests
    assert (run["records_inserted"], run["records_updated"]) == (0, 0)


def test_rows_changed_during_the_read_end_in_their_newest_version(cli: Cli, server: DemoServer, db_url: str) -> None:
    """Rows of every range are updated (and one deleted) while the ranges are read: each change gives the
    row a version above all others, so the open range reads it; whichever version of a row arrives last,
    the newest is the one kept."""
    st = _setup(cli, server)
    changes = {5: [3, 150, 390], 12: [3, 200, 5], 20: [151, 399]}

    def change(n: int) -> None:
        for i in changes[n]:
            st.put_rows("items", [{"id": i, "val": f"changed-{n}-{i}"}])
        if n == 20:
            st.delete("items", keys=[(77,)])

    st.before_page = PageRequests(on={n: functools.partial(change, n) for n in changes})
    _sync(cli)
    st.before_page = None
    assert items_table(db_url) == items_source(st)
    assert items_checkpoint(db_url) == str(st.rv)


def test_a_row_that_leaves_a_lower_range_after_the_open_range_ended_is_read_by_this_run(
    cli: Cli, server: DemoServer, db_url: str
) -> None:
    """The lowest range is held while the open range reads to the end; then a row of the lowest range,
    not read yet, changes and so moves above everything the open range read. The open range reads again
    once every other range has finished, so this run ends with the row's new value (a sequential read,
    which reads the top last, would have too). Few enough rows that the open range is within the ranges
    handed out ahead of the held one."""
    rows = 200
    st = _setup(cli, server, rows=rows)
    top_asked = threading.Event()
    second = str(RV_BASE + PAGE - 1)  # the lowest range's second page is asked for above this

    def hook(slug: str, page: int, params: dict[str, str]) -> None:
        gt = params.get("rowversion_gt")
        if params.get("page_size") == str(PAGE) and gt is not None and int(gt) >= RV_BASE + rows - PAGE:
            top_asked.set()  # the open range's last page
        if gt == second and params.get("page_size") == str(PAGE):
            assert top_asked.wait(20)
            time.sleep(0.3)  # that page is answered
            st.put_rows("items", [{"id": 30, "val": "moved"}])

    st.before_page = hook
    _sync(cli)
    st.before_page = None
    assert items_table(db_url)[30] == "moved"
    assert items_table(db_url) == items_source(st)
    assert items_checkpoint(db_url) == str(st.rv)


def test_a_source_out_of_row_version_order_falls_back_to_one_ordered_read(
    cli: Cli, server: DemoServer, db_url: str
) -> None:
    """The first page is in row-version order, the pages of the ranges are not: the split read stops, and
    the whole entity is read by the sequential keyset read with its own remedies (read by number, twice)."""
    st = _setup(cli, server)
    real = st.page_body

    def page_body(slug: str, params: dict[str, str]) -> dict[str, Any] | None:
        body = real(slug, params)
        if body is not None and params.get("rowversion_gt") is not None and len(body["rows"]) > 2:
            body["rows"][0], body["rows"][1] = body["rows"][1], body["rows"][0]
        return body

    st.page_body = page_body  # type: ignore[method-assign]
    run = _sync(cli)
    assert items_table(db_url) == items_source(st)
    assert any("could not be split by row version" in w for w in run["warnings"]), run["warnings"]


def test_an_old_version_that_arrives_after_the_new_one_is_not_written(
    cli: Cli, server: DemoServer, db_url: str
) -> None:
    """The lowest range's second page is read with row 12 in it; the row then changes, and that page takes
    a second to arrive while the open range reads the row's new version and passes it on first. The old
    version merged after it must not overwrite it (the merge of a range-parallel run compares versions)."""
    rows = 200
    st = _setup(cli, server, rows=rows)
    updated = threading.Event()
    second = str(RV_BASE + PAGE - 1)
    real = st.page_body

    def hold_top(slug: str, page: int, params: dict[str, str]) -> None:
        gt = params.get("rowversion_gt")
        if params.get("page_size") == str(PAGE) and gt is not None and int(gt) >= RV_BASE + rows - 2 * PAGE:
            assert updated.wait(20)  # the open range reads the top only after the change

    def page_body(slug: str, params: dict[str, str]) -> dict[str, Any] | None:
        body = real(slug, params)
        if params.get("rowversion_gt") == second and params.get("page_size") == str(PAGE) and not updated.is_set():
            assert body is not None
            assert any(str(r["data"]["id"]) == "12" for r in body["rows"]), body["rows"][:2]
            st.put_rows("items", [{"id": 12, "val": "new"}])
            updated.set()
            time.sleep(1.0)  # the old version arrives late
        return body

    st.before_page = hold_top
    st.page_body = page_body  # type: ignore[method-assign]
    _sync(cli)
    assert items_table(db_url)[12] == "new"
    assert items_table(db_url) == items_source(st)


def test_a_read_too_small_to_split_counts_every_page_it_fetched(cli: Cli, server: DemoServer, db_url: str) -> None:
    """With four requests allowed, a read of a few pages is not split (the first page shows it is small) and
    is read in order from that first page on: the run records every page it asked for, the first included."""
    st = _setup(cli, server, rows=25)
    requests: list[dict[str, str]] = []
    st.before_page = lambda slug, page, params: requests.append(params)
    _sync(cli)
    st.before_page = None
    assert not [p for p in requests if p.get("page_size") == "1"]  # not split
    assert query(db_url, "SELECT pages FROM bridge.sync_runs") == [(len(requests),)]
