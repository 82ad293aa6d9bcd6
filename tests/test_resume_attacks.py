"""Attacks on resumable first loads (issue 17 part 1), as a hostile operator or source would try.

Each test kills a real ``syncflow sync`` process part-way (like tests/test_resume.py), changes the
source, the configuration or the schema between the dead run and the next one, and then holds the
next run to the promise: after a run that ends ``success`` every live source row is a live table row
with identical typed values, no live source row is soft-deleted, and the checkpoint passes no row the
table lacks; a resume never duplicates or loses a row.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from demo_apismith import DemoServer, DemoState
from tests.helpers import DEMO_TOKEN, TOKEN_ENV, Cli, PageRequests, items_api, query, spawn, wait_for

ROWS = 400
PAGE = 20
KILL_AT = 13  # the data request that never gets an answer: ~60 % of the 20 pages


# -- rig --------------------------------------------------------------------------------------------


class NoHasMore(DemoState):
    """An APISmith that announces ``total`` but no ``has_more`` (the protocol makes both optional)."""

    def page_body(self, slug: str, params: dict[str, str]) -> dict[str, Any] | None:
        body = super().page_body(slug, params)
        if body is not None:
            body.pop("has_more", None)
        return body


@pytest.fixture
def server() -> Iterator[DemoServer]:
    state = DemoState({}, token=DEMO_TOKEN)
    with DemoServer(state) as s:
        yield s


def _config(cli: Cli, server: DemoServer, *, page: int = PAGE, batch: int = PAGE, extra: str = "") -> None:
    cli.config.write_text(
        f"[sync]\nretry_backoff_seconds = 0\npage_size = {page}\nbatch_rows = {batch}\n{extra}\n"
        f'[connectors.erp]\nbase_url = "{server.url}"\ntoken_env = "{TOKEN_ENV}"\n',
        encoding="utf-8",
    )


def _setup(cli: Cli, server: DemoServer, strategy: str, *, rows: int = ROWS, page: int = PAGE) -> DemoState:
    st = server.state
    st.set_api("items", items_api(strategy))
    if strategy == "rowversion":
        for i in range(rows):  # one row version each: keyset pages
            st.put_rows("items", [{"id": i, "val": f"v{i}"}])
    else:
        st.put_rows("items", [{"id": i, "val": f"v{i}"} for i in range(rows)])
    _config(cli, server, page=page)
    assert cli("discover").exit_code == 0
    return st


def _fetched(db_url: str) -> int:
    got = query(db_url, "SELECT max(records_fetched) FROM bridge.sync_runs WHERE status = 'running'")
    return int(got[0][0] or 0)


def _kill(
    cli: Cli,
    st: DemoState,
    db_url: str,
    *args: str,
    at: int = KILL_AT,
    ready: Callable[[], bool] | None = None,
    sig: int = signal.SIGKILL,
    on: dict[int, Callable[[], None]] | None = None,
    command: str = "sync",
) -> PageRequests:
    """Run ``syncflow <command> erp.items`` in a process and kill it while data request ``at`` is held."""
    pages = PageRequests(hold_at=at, on=on)
    st.before_page = pages
    proc = spawn(cli, command, *(args or ("erp.items",)))
    try:
        wait_for(pages.held.is_set, timeout=60)
        wait_for(ready or (lambda: _fetched(db_url) >= (at - 2) * PAGE), timeout=60)
        proc.send_signal(sig)
        if sig == signal.SIGKILL:
            proc.communicate(timeout=10)
        else:
            pages.release.set()
            proc.communicate(timeout=30)
    finally:
        pages.release.set()
        if proc.poll() is None:
            proc.kill()
    st.before_page = None
    return pages


def _sync(cli: Cli, *args: str, command: str = "sync") -> dict[str, Any]:
    r = cli(command, *(args or ("erp.items",)), "--json")
    assert r.stdout.strip(), r.stderr
    doc: dict[str, Any] = json.loads(r.stdout)[0]
    return doc


def _live(db_url: str) -> dict[int, str | None]:
    return dict(query(db_url, "SELECT id, val FROM erp.items WHERE NOT _bridge_deleted"))


def _source(st: DemoState) -> dict[int, str | None]:
    return {k[0]: row.get("val") for k, row in st.snapshot("items").items()}


def _all_rows(db_url: str) -> int:
    return int(query(db_url, "SELECT count(*) FROM erp.items")[0][0])


def _served_keys(st: DemoState) -> list[int]:
    """The keys of the live rows in the order the demo serves a by-number read."""
    with st.lock:
        return [k[0] for _, k in st.entities["items"].live()]


def _assert_promise(st: DemoState, db_url: str, run: dict[str, Any]) -> None:
    """A ``success`` run: every live source row is a live table row with the same value, none twice."""
    if run["status"] != "success":
        return
    source = _source(st)
    live = _live(db_url)
    missing = sorted(set(source) - set(live))
    stale = sorted(k for k in source if k in live and live[k] != source[k])
    bad = missing + stale
    assert not bad, (
        f"run ended success but {len(missing)} live source row(s) are missing ({missing[:10]}) and"
        f" {len(stale)} hold other values ({[(k, live[k], source[k]) for k in stale[:10]]}); run: {json.dumps(run)}"
    )
    dups = query(db_url, "SELECT id FROM erp.items GROUP BY id HAVING count(*) > 1")
    assert dups == []


def _checkpoint(db_url: str) -> str | None:
    cp = query(db_url, "SELECT last_rowversion FROM bridge.entities WHERE slug = 'items'")[0][0]
    return None if cp is None else str(cp)


def _assert_checkpoint_passes_no_missing_row(st: DemoState, db_url: str) -> None:
    cp = _checkpoint(db_url)
    if cp is None:
        return
    with st.lock:
        ent = st.entities["items"]
        below = {k[0] for k, rv in ent.versions.items() if rv <= int(cp)}
    live = set(_live(db_url))
    lacking = sorted(below - live)
    assert not lacking, f"checkpoint {cp} passes live source rows the table lacks: {lacking[:10]}"


# -- full / hash: what the resumed run trusts without reading it ---------------------------------------


@pytest.mark.parametrize("strategy", ["full", "hash"])
def test_a_row_updated_in_place_before_the_resume_point_gets_its_new_value(
    cli: Cli, server: DemoServer, db_url: str, strategy: str
) -> None:
    """An update that moves no row (same keys, same order, same total) between the dead run and the resume:
    the page before the resume point compares equal (its keys), so the pages before it are trusted. The row
    updated on page 1 then keeps the value the dead run read, hours earlier, in a run that ends ``success``
    (an uninterrupted read never leaves a value older than the run's own start)."""
    st = _setup(cli, server, strategy)
    _kill(cli, st, db_url)
    first = _served_keys(st)[0]
    with st.lock:  # an update in place, as a source ordering by key serves it: same page, same position
        st.entities["items"].rows[(first,)]["val"] = "changed"
    run = _sync(cli)
    assert run["status"] == "success", run
    assert run.get("resumed_from"), run  # the attack needs the resume to happen
    _assert_promise(st, db_url, run)


@pytest.mark.parametrize("strategy", ["full", "hash"])
def test_an_insert_and_a_delete_before_the_resume_point_keep_the_inserted_row(
    cli: Cli, server: DemoServer, db_url: str, strategy: str
) -> None:
    """A row inserted and another deleted, both before the resume point: the total is unchanged and the
    page before the resume point is identical, so the resumed run trusts pages it did not read. The
    inserted live row is missing after a run that ends ``success`` (docs/correctness.md calls this the
    residual risk of a read "over a longer gap"; the promise is still broken)."""
    st = _setup(cli, server, strategy)
    with st.lock:  # serve in the demo's (version, str(key)) order from the start: a source ordering by key
        st.entities["items"]._log_sorted = False
        st.entities["items"].invalidate()
    _kill(cli, st, db_url)
    order = _served_keys(st)
    with st.lock:
        ent = st.entities["items"]
        version = ent.versions[(order[0],)]  # every row of the first load shares one version
    # "1000000" sorts right after "100" in the demo's (version, str(key)) order: near the front.
    st.put_rows("items", [{"id": 1000000, "val": "new"}], version=version)
    with st.lock:
        st.entities["items"]._log_sorted = False  # let the demo put it in its place in the order
        st.entities["items"].invalidate()
    st.delete("items", keys=[(order[20],)])  # page 2: every row after it is back where it was
    after = _served_keys(st)
    assert after.index(1000000) < 2 * PAGE
    assert after[3 * PAGE :] == order[3 * PAGE :]  # from page 4 on, every row is where the dead run saw it
    run = _sync(cli)
    assert run.get("resumed_from"), run
    _assert_promise(st, db_url, run)


@pytest.mark.parametrize("policy", ["exclude", "hash"])
def test_a_column_policy_applied_and_lifted_between_the_runs_leaves_no_nulls(
    cli: Cli, server: DemoServer, db_url: str, policy: str
) -> None:
    """``exclude_columns`` (or ``hash_columns``) applied by ``discover`` and lifted again before the resume:
    discover cleared ``val`` in every row the dead run loaded, and the table form is the same again, so the
    resumed run trusts those rows. They keep NULL in a run that ends ``success``."""
    st = _setup(cli, server, "full")
    _kill(cli, st, db_url)
    key_env = "SYNCFLOW_TEST_HASH_KEY"
    hash_line = f'hash_key_env = "{key_env}"\n'
    entity = f'[connectors.erp.entities.items]\n{policy}_columns = ["val"]\n'
    cli.config.write_text(cli.config.read_text().replace("[connectors.erp]\n", "[connectors.erp]\n", 1) + entity)
    if policy == "hash":
        cli.config.write_text(cli.config.read_text().replace("[sync]\n", "[sync]\n" + hash_line, 1))
    env = {key_env: "k" * 32}
    r = cli("discover", env=env)
    assert r.exit_code == 0, r.stderr + r.stdout
    assert query(db_url, "SELECT count(*) FROM erp.items WHERE val IS NOT NULL") == [(0,)]
    cli.config.write_text(cli.config.read_text().replace(entity, ""))
    r = cli("discover", env=env)
    assert r.exit_code == 0, r.stderr + r.stdout
    r = cli("sync", "erp.items", "--json", env=env)
    run = json.loads(r.stdout)[0]
    assert run["status"] == "success", run
    nulls = query(db_url, "SELECT count(*) FROM erp.items WHERE val IS NULL")[0][0]
    assert nulls == 0, f"{nulls} rows lost their values; run: {json.dumps(run)}"
    _assert_promise(st, db_url, run)


# -- full / hash: a server that caps page_size ----------------------------------------------------------


def test_a_server_that_caps_page_size_and_sends_no_has_more_loads_the_rest(cli: Cli, db_url: str) -> None:
    """The server serves at most 20 rows a page whatever page_size asks (DemoState.max_page_size) and says
    ``total`` but not ``has_more``. An uninterrupted read is right (it counts the rows it got); the resumed
    read counts the pages before it as ``page_size`` rows each, decides after the check page that it read
    ``total`` rows, and ends ``success`` with 40 % of the rows never loaded."""
    st = NoHasMore({}, token=DEMO_TOKEN, max_page_size=PAGE)
    with DemoServer(st) as srv:
        st.set_api("items", items_api("full"))
        st.put_rows("items", [{"id": i, "val": f"v{i}"} for i in range(ROWS)])
        _config(cli, srv, page=2 * PAGE, batch=PAGE)
        assert cli("discover").exit_code == 0
        _kill(cli, st, db_url)
        assert _all_rows(db_url) < ROWS
        run = _sync(cli)
        assert run.get("resumed_from"), run
        assert run["status"] != "success" or _all_rows(db_url) == ROWS, (
            f"success with {_all_rows(db_url)} of {ROWS} rows: {json.dumps(run)}"
        )
        _assert_promise(st, db_url, run)


def test_a_server_that_caps_page_size_resumes(cli: Cli, db_url: str) -> None:
    """With ``has_more`` sent, the resumed read's assumed row count (pages before it x page_size) trips the
    "ignores the 'page' parameter" check when the server's cap is well below page_size: the resumed run
    fails with a protocol error about a source that is fine (and its failure then discards the progress)."""
    st = DemoState({}, token=DEMO_TOKEN, max_page_size=PAGE)
    with DemoServer(st) as srv:
        st.set_api("items", items_api("full"))
        st.put_rows("items", [{"id": i, "val": f"v{i}"} for i in range(ROWS)])
        _config(cli, srv, page=5 * PAGE, batch=PAGE)
        assert cli("discover").exit_code == 0
        _kill(cli, st, db_url)
        run = _sync(cli)
        assert run["status"] == "success", json.dumps(run)
        _assert_promise(st, db_url, run)


# -- chains: a run between the dead one and the resume ------------------------------------------------
