"""Resumable first loads (issue 17 part 1): a load killed part-way continues where its committed progress ends.

Each test kills a real ``syncflow sync`` process (SIGKILL, as the OOM killer or a lost node would)
at about 60 % of a first load, then runs ``sync`` again and counts the data pages it asks for:
at most 45 % of the pages again before the table is complete, no row lost, no row twice (a
``full``/``hash`` entity then reads the whole entity once, see docs/correctness.md).
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from demo_apismith import RV_BASE, DemoServer, DemoState
from syncflow.pages import IDLE_SECONDS
from tests.helpers import DEMO_TOKEN, TOKEN_ENV, Cli, PageRequests, items_api, query, spawn, wait_for

ROWS = 1000
PAGE = 20
KILL_AT = 31  # the data request that never gets an answer: ~60 % of the 50 pages of a by-number read
KEYSET_KILL_AT = 33  # ~60 % of the 53 pages of a keyset read (a keyset page moves on by PAGE - 1 rows)


@pytest.fixture
def server() -> Iterator[DemoServer]:
    state = DemoState({}, token=DEMO_TOKEN)
    with DemoServer(state) as s:
        yield s


def _setup(cli: Cli, server: DemoServer, strategy: str, *, concurrency: int = 4) -> DemoState:
    st = server.state
    st.set_api("items", items_api(strategy))
    if strategy == "rowversion":
        for i in range(ROWS):  # one row version each: keyset pages, no tie filling a page
            st.put_rows("items", [{"id": i, "val": f"v{i}"}])
    else:
        st.put_rows("items", [{"id": i, "val": f"v{i}"} for i in range(ROWS)])
    cli.config.write_text(
        f"[sync]\nretry_backoff_seconds = 0\npage_size = {PAGE}\nbatch_rows = {PAGE}\n\n"
        f'[connectors.erp]\nbase_url = "{server.url}"\ntoken_env = "{TOKEN_ENV}"\n'
        f'max_concurrent_requests = {concurrency}\nparallel_reads = "always"\n',
        encoding="utf-8",
    )
    assert cli("discover").exit_code == 0
    return st


def _kill_at_sixty_percent(
    cli: Cli, st: DemoState, db_url: str, kill_at: int = KILL_AT, *, per_page: int = PAGE
) -> PageRequests:
    pages = PageRequests(hold_at=kill_at)
    st.before_page = pages
    proc = spawn(cli, "sync", "erp.items")
    try:
        # The loader merges and commits every page before the one held back; then the process dies.
        wait_for(
            lambda: query(db_url, "SELECT records_fetched FROM bridge.sync_runs") >= [((kill_at - 2) * per_page,)],
            timeout=60,
        )
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
    finally:
        pages.release.set()
        if proc.poll() is None:
            proc.kill()
    st.before_page = None
    return pages


def _settled(db_url: str) -> int:
    """The rows the run has committed, once they and its resume record held for longer than the loader
    waits on a silent source before it commits what it has (pages.IDLE_SECONDS; else 0)."""
    sql = "SELECT records_fetched, resume::text FROM bridge.sync_runs"
    before = query(db_url, sql)
    time.sleep(IDLE_SECONDS + 1)
    after = query(db_url, sql)
    return int(after[0][0]) if after == before and after else 0


def _live(db_url: str) -> dict[int, str]:
    return dict(query(db_url, "SELECT id, val FROM erp.items WHERE NOT _bridge_deleted"))


@pytest.mark.parametrize("strategy", ["rowversion", "full", "hash"])
def test_a_killed_first_load_resumes_where_its_committed_progress_ends(
    cli: Cli, server: DemoServer, db_url: str, strategy: str
) -> None:
    # One request at a time: the rowversion read is the sequential keyset read (the next test splits it).
    st = _setup(cli, server, strategy, concurrency=1 if strategy == "rowversion" else 4)
    kill_at = KEYSET_KILL_AT if strategy == "rowversion" else KILL_AT
    # A keyset page moves on by PAGE - 1 rows (its last row is asked for again, for ties).
    per_page = PAGE - 1 if strategy == "rowversion" else PAGE
    _kill_at_sixty_percent(cli, st, db_url, kill_at, per_page=per_page)
    stored = query(db_url, "SELECT count(*) FROM erp.items")[0][0]
    assert stored >= (kill_at - 2) * per_page  # the committed batches survived the kill

    again = PageRequests()
    st.before_page = again
    r = cli("sync", "erp.items", "--json")
    st.before_page = None
    assert r.exit_code == 0, r.stderr
    run = json.loads(r.stdout)[0]
    assert run["status"] == "success", run
    assert _live(db_url) == {i: f"v{i}" for i in range(ROWS)}
    assert query(db_url, "SELECT count(*) FROM erp.items") == [(ROWS,)]  # no row twice, none soft-deleted

    # The reference: a whole read of the same data, page by page.
    whole = PageRequests()
    st.before_page = whole
    assert cli("full-refresh", "erp.items").exit_code == 0
    st.before_page = None
    assert 0.55 * whole.count <= kill_at <= 0.65 * whole.count  # the kill really was at about 60 %
    if strategy == "rowversion":
        assert again.count <= 0.45 * whole.count, (again.count, whole.count, stored, run["warnings"])
    else:
        # The pages after the resume point, then one complete read that decides what is live and current
        # (the pages the dead run read may have changed since): the table was complete after the first part.
        resumed_part = again.numbers[: again.numbers.index(1)]
        assert resumed_part[0] > 1
        assert len(resumed_part) <= 0.45 * whole.count, (again.numbers, whole.count)
        assert again.count - len(resumed_part) <= whole.count + 1, again.numbers

    # The record says where it resumed, and `runs` shows it.
    first_uid = query(db_url, "SELECT uid::text FROM bridge.sync_runs ORDER BY started_at LIMIT 1")[0][0]
    assert run["resumed_from"] == first_uid
    assert run["resumed_at_rows"] >= (kill_at - 2) * per_page
    shown = cli("runs", "show", run["uid"])
    assert f"resumed from run {first_uid[:8]}" in shown.stdout, shown.stdout
    listed = cli("runs", "erp.items")
    assert "resumed" in listed.stdout, listed.stdout


def test_a_killed_range_parallel_first_load_resumes_without_its_finished_ranges(
    cli: Cli, server: DemoServer, db_url: str
) -> None:
    """Four workers read row-version ranges at once. The lowest range's third page never gets an answer
    while the other ranges finish; then the process dies. The checkpoint stays below the held range and
    the finished ranges above it are recorded with it: the next run reads the rest of the held range
    (and whatever was never read), not the finished ranges — at most 45 % of the pages of a whole read."""
    st = _setup(cli, server, "rowversion")
    whole = PageRequests()  # the reference: a whole range-parallel read of the same data
    st.before_page = whole
    assert cli("sync", "erp.items").exit_code == 0
    st.before_page = None
    with psycopg.connect(db_url) as conn:
        conn.execute("TRUNCATE erp.items")
        conn.execute("DELETE FROM bridge.sync_runs")
        conn.execute("UPDATE bridge.entities SET last_rowversion = NULL")
    # Row i carries version RV_BASE + i + 1; a keyset page of 20 rows moves the cursor by 19 (to the
    # version below its last row's): the second page is asked for above RV_BASE + 19, the third above + 38.
    second, third = str(RV_BASE + PAGE - 1), str(RV_BASE + 2 * (PAGE - 1))
    release = threading.Event()

    def hold(slug: str, page: int, params: dict[str, str]) -> None:
        if params.get("rowversion_gt") == third and params.get("page_size") == str(PAGE):
            release.wait(60)

    st.before_page = hold
    proc = spawn(cli, "sync", "erp.items")
    try:
        # Every range but the held one is read: what the run committed stops growing.
        wait_for(lambda: _settled(db_url) >= ROWS // 2, timeout=60)
        assert "done" in query(db_url, "SELECT resume FROM bridge.sync_runs")[0][0]
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
    finally:
        release.set()
        if proc.poll() is None:
            proc.kill()
    st.before_page = None
    # The checkpoint: the cursor of the last page the lowest range passed on.
    assert query(db_url, "SELECT last_rowversion FROM bridge.entities")[0][0] == second
    stored = query(db_url, "SELECT count(*) FROM erp.items")[0][0]
    assert stored >= ROWS // 2  # the finished ranges' batches survived the kill

    again = PageRequests()
    st.before_page = again
    r = cli("sync", "erp.items", "--json")
    st.before_page = None
    assert r.exit_code == 0, r.stderr
    run = json.loads(r.stdout)[0]
    assert run["status"] == "success", run
    assert run["resumed_from"] is not None
    assert _live(db_url) == {i: f"v{i}" for i in range(ROWS)}
    assert query(db_url, "SELECT count(*) FROM erp.items") == [(ROWS,)]
    assert again.count <= 0.45 * whole.count, (again.count, whole.count, stored)
    # Every row was read (by the dead run or this one): the checkpoint is the highest row version.
    assert query(db_url, "SELECT last_rowversion FROM bridge.entities")[0][0] == str(st.rv)


@pytest.mark.parametrize("strategy", ["rowversion", "full"])
def test_a_stalled_read_commits_what_it_has(cli: Cli, server: DemoServer, db_url: str, strategy: str) -> None:
    """With the default batch of 25,000 rows, a 1,000-row load whose eleventh page never gets an answer
    commits the ten pages it has once the source has been silent for a second, with its resume record:
    a kill then loses nothing that was read."""
    st = _setup(cli, server, strategy, concurrency=1)
    cli.config.write_text(cli.config.read_text().replace(f"batch_rows = {PAGE}\n", ""), encoding="utf-8")
    pages = PageRequests(hold_at=11)
    st.before_page = pages
    proc = spawn(cli, "sync", "erp.items")
    try:
        wait_for(lambda: query(db_url, "SELECT count(*) FROM erp.items")[0][0] > 0, timeout=20)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
    finally:
        pages.release.set()
        if proc.poll() is None:
            proc.kill()
    st.before_page = None
    stored = query(db_url, "SELECT count(*) FROM erp.items")[0][0]
    per_page = PAGE - 1 if strategy == "rowversion" else PAGE
    assert stored >= 9 * per_page, stored  # the pages before the held one (one or two may still be in flight)
    assert query(db_url, "SELECT resume IS NOT NULL FROM bridge.sync_runs") == [(True,)]


@pytest.mark.parametrize("strategy", ["full", "hash"])
def test_a_source_that_moved_between_the_runs_is_read_again_before_success(
    cli: Cli, server: DemoServer, db_url: str, strategy: str
) -> None:
    """Rows deleted before the resume point shift the rest towards the front: a resumed read alone would
    skip rows across the resume point. The complete read after it finds them, and the delete step then
    soft-deletes the rows gone, before the run may end ``success``."""
    st = _setup(cli, server, strategy)
    _kill_at_sixty_percent(cli, st, db_url)
    st.delete("items", keys=[(1,), (2,), (3,)])  # on page 1, long committed
    r = cli("sync", "erp.items", "--json")
    assert r.exit_code == 0, r.stderr
    run = json.loads(r.stdout)[0]
    assert run["status"] == "success", run
    assert _live(db_url) == {i: f"v{i}" for i in range(ROWS) if i not in (1, 2, 3)}, json.dumps(run)
    assert run["records_deleted"] == 3


def test_a_column_added_between_the_runs_starts_the_load_over(cli: Cli, server: DemoServer, db_url: str) -> None:
    """Rows loaded before the kill lack a column discovery added since: resuming would leave it empty there."""
    st = _setup(cli, server, "full")
    _kill_at_sixty_percent(cli, st, db_url)
    api = items_api("full")
    api["columns"].append({"name": "QTY", "output_alias": "qty", "data_type": "NUMBER(9)"})
    st.set_api("items", api)
    st.put_rows("items", [{"id": i, "val": f"v{i}", "qty": i} for i in range(ROWS)])
    assert cli("discover").exit_code == 0
    r = cli("sync", "erp.items", "--json")
    assert r.exit_code == 0, r.stderr
    run = json.loads(r.stdout)[0]
    assert run.get("resumed_from") is None
    assert query(db_url, "SELECT count(*) FROM erp.items WHERE qty IS NULL") == [(0,)]


def test_full_refresh_does_not_resume(cli: Cli, server: DemoServer, db_url: str) -> None:
    """``full-refresh`` reads everything again, as it says: a dead run's progress is not used."""
    st = _setup(cli, server, "hash")
    _kill_at_sixty_percent(cli, st, db_url)
    again = PageRequests()
    st.before_page = again
    r = cli("full-refresh", "erp.items", "--json")
    st.before_page = None
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)[0].get("resumed_from") is None
    assert again.count >= ROWS // PAGE
    assert _live(db_url) == {i: f"v{i}" for i in range(ROWS)}


def test_a_batch_commits_its_rows_with_its_progress(cli: Cli, server: DemoServer, db_url: str) -> None:
    """A batch's rows, its progress and its resume record commit together: else a kill between the two left
    rows the record did not know of (the resumed run met them again and read the whole entity twice more).

    The test holds the run's row locked while the first batch merges: its rows must stay invisible until
    the run may record them.
    """
    st = _setup(cli, server, "full")
    gate = threading.Event()

    def hold_first_page(slug: str, page: int, params: dict[str, str]) -> None:
        if slug == "items" and page == 1:
            gate.wait(30)

    st.before_page = hold_first_page
    proc = spawn(cli, "sync", "erp.items")
    try:
        wait_for(lambda: query(db_url, "SELECT count(*) FROM bridge.sync_runs WHERE status = 'running'") == [(1,)])
        with psycopg.connect(db_url) as locker:
            locker.execute("SELECT 1 FROM bridge.sync_runs FOR UPDATE")
            gate.set()
            # The first batch merges, then waits for the run's row to record its progress.
            wait_for(
                lambda: (
                    query(
                        db_url,
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query ILIKE '%%sync_runs%%'",
                    )
                    != [(0,)]
                )
            )
            assert query(db_url, "SELECT count(*) FROM erp.items") == [(0,)]
            locker.rollback()
        proc.communicate(timeout=60)
    finally:
        gate.set()
        if proc.poll() is None:
            proc.kill()
    st.before_page = None
    assert proc.returncode == 0
    assert query(db_url, "SELECT count(*) FROM erp.items") == [(ROWS,)]
