"""Attacks on the range-parallel keyset read of rowversion entities (syncflow.ranges).

Each test drives the real CLI against the demo APISmith with several concurrent requests and checks
the invariant: after a run that ends ``success`` every live source row is a live table row with the
same values (and no row deleted at the source is live in the table), and the checkpoint never passes
a row the table lacks. Each test here failed on the first version of the split read (fixed since).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from typing import Any

import pytest

from demo_apismith import RV_BASE, DemoServer, DemoState, Handler
from tests.helpers import (
    DEMO_TOKEN,
    TOKEN_ENV,
    Cli,
    items_api,
    items_checkpoint,
    items_source,
    items_table,
    spawn,
)

PAGE = 10


@pytest.fixture
def server() -> Iterator[DemoServer]:
    with DemoServer(DemoState({}, token=DEMO_TOKEN)) as s:
        yield s


def _config(cli: Cli, server: DemoServer, *, page: int = PAGE, workers: int = 4, extra: str = "") -> None:
    cli.config.write_text(
        f"[sync]\nretry_backoff_seconds = 0\npage_size = {page}\nbatch_rows = {page}\n{extra}\n"
        f'[connectors.erp]\nbase_url = "{server.url}"\ntoken_env = "{TOKEN_ENV}"\n'
        f'max_concurrent_requests = {workers}\nparallel_reads = "always"\n',
        encoding="utf-8",
    )


def _setup(cli: Cli, server: DemoServer, rows: int = 400, *, page: int = PAGE, workers: int = 4) -> DemoState:
    """``rows`` rows ``id``/``val``, one row version each (row i carries RV_BASE + i + 1)."""
    st = server.state
    st.set_api("items", items_api("rowversion"))
    for i in range(rows):
        st.put_rows("items", [{"id": i, "val": f"v{i}"}])
    _config(cli, server, page=page, workers=workers)
    assert cli("discover").exit_code == 0
    return st


def _run(cli: Cli, *args: str) -> dict[str, Any]:
    r = cli("sync", "erp.items", "--json", *args)
    assert r.stdout.strip(), r.stderr
    run: dict[str, Any] = json.loads(r.stdout)[0]
    return run


def _late_old_page(st: DemoState, change: Any, *, top: int, second: str, victim: int = 12) -> threading.Event:
    """Range 0's second page (``rowversion_gt=second``) is computed with row ``victim`` in it; then
    ``change()`` runs, 30 other rows are rewritten after it (so the open range passes the change on and
    merges a few batches more), and the page arrives only once the open range has read well past it."""
    changed = threading.Event()
    past = threading.Event()
    real = st.page_body
    mark: list[int] = []

    def hold_top(slug: str, page: int, params: dict[str, str]) -> None:
        gt = params.get("rowversion_gt")
        if params.get("page_size") == str(PAGE) and gt is not None and int(gt) >= top:
            assert changed.wait(20)
            if int(gt) >= mark[0] + 15:
                past.set()

    def page_body(slug: str, params: dict[str, str]) -> dict[str, Any] | None:
        body = real(slug, params)
        if params.get("rowversion_gt") == second and params.get("page_size") == str(PAGE) and not changed.is_set():
            assert body is not None
            assert any(r["data"]["id"] == victim for r in body["rows"]), body["rows"][:2]
            change()
            mark.append(st.rv)
            for i in range(100, 130):
                st.put_rows("items", [{"id": i, "val": f"w{i}"}])
            changed.set()
            assert past.wait(20)
            time.sleep(0.5)  # the open range's batches after the change are merged: the old version is late
        return body

    st.before_page = hold_top
    st.page_body = page_body  # type: ignore[method-assign]
    return changed


def test_a_row_deleted_during_a_first_load_is_not_left_live(cli: Cli, server: DemoServer, db_url: str) -> None:
    """Row 12 is deleted (tombstone) after range 0's page with its live version was computed; the open
    range reads and merges the tombstone first. The late live version must not resurrect the row."""
    rows = 200
    st = _setup(cli, server, rows)
    changed = _late_old_page(
        st, lambda: st.delete("items", keys=[(12,)]), top=RV_BASE + rows - 2 * PAGE, second=str(RV_BASE + PAGE - 1)
    )
    run = _run(cli)
    assert changed.is_set()
    assert run["status"] == "success", run
    assert 12 not in items_source(st)
    assert 12 not in items_table(db_url), "row 12 was deleted at the source (tombstone read) but is live in the table"
    assert items_table(db_url) == items_source(st)


def test_a_row_inserted_and_deleted_during_an_incremental_read_is_not_left_live(
    cli: Cli, server: DemoServer, db_url: str
) -> None:
    rows = 200
    st = _setup(cli, server, rows)
    assert _run(cli)["status"] == "success"
    # A second batch of rows the table does not have yet, read by an incremental run.
    for i in range(rows, 2 * rows):
        st.put_rows("items", [{"id": i, "val": f"v{i}"}])
    base = RV_BASE + rows  # the incremental read asks for rowversion_gt = base - 1 first, then base + 8
    victim = rows + 12
    changed = _late_old_page(
        st,
        lambda: st.delete("items", keys=[(victim,)]),
        top=base + rows - 2 * PAGE,
        second=str(base + PAGE - 2),
        victim=victim,
    )
    run = _run(cli)
    assert changed.is_set()
    assert run["status"] == "success", run
    assert victim not in items_table(db_url), "a row deleted at the source during the read is live in the table"
    assert items_table(db_url) == items_source(st)


def _by_key_pages(st: DemoState) -> None:
    """The server orders the rows of a query by key and sorts only each page by row version."""

    def page_body(slug: str, params: dict[str, str]) -> dict[str, Any] | None:
        with st.lock:
            ent = st.entities[slug]
            gt = int(params["rowversion_gt"]) if "rowversion_gt" in params else None
            page, size = int(params.get("page", "1")), int(params.get("page_size", "10"))
            found = sorted((k[0], rv) for k, rv in ent.versions.items() if k in ent.rows and (gt is None or rv > gt))
            chunk = sorted(found[(page - 1) * size : page * size], key=lambda e: e[1])
            rows = [{"oracle_keys": {"ID": k}, "row_version": str(rv), "data": dict(ent.rows[(k,)])} for k, rv in chunk]
            return {
                "rows": rows,
                "page": page,
                "page_size": size,
                "total": len(found),
                "has_more": page * size < len(found),
            }

    st.page_body = page_body  # type: ignore[method-assign]


def test_a_source_ordered_by_key_with_version_sorted_pages_loses_no_row(
    cli: Cli, server: DemoServer, db_url: str
) -> None:
    """Rows 10..404 carry increasing versions, rows 0..9 the ten highest: every query's first page (by
    key) is rows 0..9, in version order. A sequential keyset read sees the total drop on its second
    query and reads by number; every range of the split read ends on its first page instead."""
    st = server.state
    st.set_api("items", items_api("rowversion"))
    for i in [*range(10, 405), *range(10)]:
        st.put_rows("items", [{"id": i, "val": f"v{i}"}])
    _config(cli, server)
    assert cli("discover").exit_code == 0
    _by_key_pages(st)
    run = _run(cli)
    table = items_table(db_url)
    assert run["status"] != "success" or table == items_source(st), (
        f"run ended success with {len(table)} of {len(items_source(st))} rows; checkpoint {items_checkpoint(db_url)}"
    )


def test_a_source_that_ignores_the_page_parameter_ends_the_run(cli: Cli, server: DemoServer, db_url: str) -> None:
    """A proxy that drops the query string: the sequential read fails at once ("it ignores the 'page'
    parameter"); the split read must end too (fail, or fall back), not ask the same sample forever."""
    st = _setup(cli, server, 400)
    st.ignore_page = True
    samples = [0]

    def count(slug: str, page: int, params: dict[str, str]) -> None:
        samples[0] += params.get("page_size") == "1"

    st.before_page = count
    proc = spawn(cli, "sync", "erp.items", "--json")
    try:
        out, _err = proc.communicate(timeout=10)
    except Exception:
        proc.kill()
        proc.communicate(timeout=10)
        pytest.fail(f"the run did not end within 10 s; it asked {samples[0]} page_size=1 samples")
    assert proc.returncode != 0 or json.loads(out)[0]["status"] != "success" or items_table(db_url) == items_source(st)


@contextmanager
def _min_page_size_server(state: DemoState, minimum: int) -> Iterator[str]:
    """The demo APISmith answering 400 to a data request with a page_size below ``minimum`` (as APIs that
    validate their paging parameters do); yields its URL."""

    class Strict(Handler):
        def do_GET(self) -> None:
            size = self._route()[1].get("page_size")
            if self.path.startswith("/api/v1/data/") and size is not None and int(size) < minimum:
                body = json.dumps({"detail": f"page_size must be at least {minimum}"}).encode()
                self.send_response(400)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            super().do_GET()

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def __init__(self) -> None:
            super().__init__(("127.0.0.1", 0), Strict)
            self.state, self.prefix, self.verbose = state, "", False

    httpd = Server()
    thread = threading.Thread(target=httpd.serve_forever, name="strict-apismith", daemon=True)
    thread.start()
    try:
        host, port = httpd.server_address[:2]
        yield f"http://{host!s}:{port}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_source_that_refuses_page_size_one_is_still_read(cli: Cli, server: DemoServer, db_url: str) -> None:
    st = _setup(cli, server, 400)
    with _min_page_size_server(st, 5) as url:
        cli.config.write_text(cli.config.read_text().replace(server.url, url), encoding="utf-8")
        run = _run(cli)
    assert run["status"] == "success", f"the sequential read would succeed; the split read: {run['error_message']}"
    assert items_table(db_url) == items_source(st)


def _second_granular(cli: Cli, server: DemoServer, *, workers: int) -> tuple[DemoState, int]:
    """Rows 0..89 carry one version each (RV_BASE + 1 ..), rows 90..159 were written in one second: they
    share V = RV_BASE + 91, the newest version, and a boundary sample lands in them (ranges
    (.., V] and (V, open)). Returns the state and V."""
    st = server.state
    st.set_api("items", items_api("rowversion"))
    for i in range(90):
        st.put_rows("items", [{"id": i, "val": f"v{i}"}])
    st.put_rows("items", [{"id": i, "val": f"v{i}"} for i in range(90, 160)])
    _config(cli, server, workers=workers)
    assert cli("discover").exit_code == 0
    return st, st.rv


def test_a_row_changed_within_the_newest_second_is_not_lost(cli: Cli, server: DemoServer, db_url: str) -> None:
    """Range 0's second page is held while the other ranges finish. Still within V's second, row 20 (on
    range 0's third page) changes and so gets version V; the clock ticks and row 1000 is written at V + 1.
    A sequential read reads row 20 at V when it gets there, and its checkpoint covers it; the split read
    has read (.., V] already and reads only above V again."""
    st, v = _second_granular(cli, server, workers=4)
    held = str(RV_BASE + PAGE - 1)
    done = threading.Event()

    def hook(slug: str, page: int, params: dict[str, str]) -> None:
        if params.get("rowversion_gt") == held and params.get("page_size") == str(PAGE) and not done.is_set():
            time.sleep(1.0)  # the other ranges are read meanwhile
            st.put_rows("items", [{"id": 20, "val": "changed"}], version=v)
            st.put_rows("items", [{"id": 1000, "val": "new"}], version=v + 1)
            done.set()

    st.before_page = hook
    run = _run(cli)
    assert done.is_set()
    assert run["status"] == "success", run
    cp = items_checkpoint(db_url)
    st.before_page = None
    assert _run(cli)["status"] == "success"  # the next incremental run reads above the checkpoint's second
    table = items_table(db_url)
    assert table.get(20) == "changed", (
        f"row 20 (version {v}) is {table.get(20)!r} in the table after two successful runs; the first one's"
        f" checkpoint was {cp}"
    )
    assert table == items_source(st)


def test_the_same_change_within_the_newest_second_read_sequentially(cli: Cli, server: DemoServer, db_url: str) -> None:
    """Control for the test above: one request at a time reads row 20 at V."""
    st, v = _second_granular(cli, server, workers=1)
    held = str(RV_BASE + PAGE - 1)
    done = threading.Event()

    def hook(slug: str, page: int, params: dict[str, str]) -> None:
        if params.get("rowversion_gt") == held and params.get("page_size") == str(PAGE) and not done.is_set():
            st.put_rows("items", [{"id": 20, "val": "changed"}], version=v)
            st.put_rows("items", [{"id": 1000, "val": "new"}], version=v + 1)
            done.set()

    st.before_page = hook
    run = _run(cli)
    assert done.is_set()
    assert run["status"] == "success", run
    assert items_table(db_url) == items_source(st)
