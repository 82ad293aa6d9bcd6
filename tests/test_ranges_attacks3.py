"""Second-round attacks on the range-parallel keyset read of rowversion entities (syncflow.ranges).

Each test drives the real CLI against the demo APISmith with several requests in flight and holds the
run to the invariant: after a run that ends ``success`` every live source row is a live table row with
the same values, no row deleted at the source is live in the table, and the checkpoint never passes a
row the table lacks. The hex, ISO and full-refresh fallback cases failed on the version they attacked (fixed since).
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from demo_apismith import RV_BASE, DemoServer, DemoState
from tests.helpers import (
    DEMO_TOKEN,
    TOKEN_ENV,
    Cli,
    items_api,
    items_checkpoint,
    items_source,
    items_table,
    query,
    spawn,
    wait_for,
)

PAGE = 10


@pytest.fixture
def server() -> Iterator[DemoServer]:
    with DemoServer(DemoState({}, token=DEMO_TOKEN)) as s:
        yield s


def _config(
    cli: Cli, server: DemoServer, *, page: int = PAGE, batch: int = PAGE, workers: int = 4, extra: str = ""
) -> None:
    cli.config.write_text(
        f"[sync]\nretry_backoff_seconds = 0\npage_size = {page}\nbatch_rows = {batch}\n{extra}\n"
        f'[connectors.erp]\nbase_url = "{server.url}"\ntoken_env = "{TOKEN_ENV}"\n'
        f'max_concurrent_requests = {workers}\nparallel_reads = "always"\n',
        encoding="utf-8",
    )


def _setup(
    cli: Cli, server: DemoServer, rows: int = 200, *, page: int = PAGE, batch: int = PAGE, workers: int = 4
) -> DemoState:
    """``rows`` rows ``id``/``val``, one row version each (row i carries RV_BASE + i + 1)."""
    st = server.state
    st.set_api("items", items_api("rowversion"))
    for i in range(rows):
        st.put_rows("items", [{"id": i, "val": f"v{i}"}])
    _config(cli, server, page=page, batch=batch, workers=workers)
    assert cli("discover").exit_code == 0
    return st


def _run(cli: Cli, *args: str, command: str = "sync") -> dict[str, Any]:
    r = cli(command, "erp.items", "--json", *args)
    assert r.stdout.strip(), r.stderr
    run: dict[str, Any] = json.loads(r.stdout)[0]
    return run


# -- row versions that are not decimal digit strings ----------------------------------------------------


def _versions_as(st: DemoState, encode: Callable[[int], str], decode: Callable[[str], int]) -> None:
    """The demo serves its row versions through ``encode`` and reads ``rowversion_gt`` through ``decode``
    (the order stays the demo's: ``encode`` must be monotonic in the source's string/number order)."""
    real = st.page_body

    def page_body(slug: str, params: dict[str, str]) -> dict[str, Any] | None:
        params = dict(params)
        if "rowversion_gt" in params:
            params["rowversion_gt"] = str(decode(params["rowversion_gt"]))
        body = real(slug, params)
        if body is not None:
            for row in body["rows"]:
                row["row_version"] = encode(int(row["row_version"]))
        return body

    st.page_body = page_body  # type: ignore[method-assign]


HEX0 = 0x1000


def _hex(rv: int) -> str:
    """Fixed-width lowercase hex (an encoding of SQL Server's rowversion): some are all digits."""
    return f"{rv - RV_BASE + HEX0:016x}"


def _unhex(text: str) -> int:
    return int(text, 16) - HEX0 + RV_BASE


def test_hex_versions_a_batch_with_both_versions_of_a_row_keeps_the_newest(
    cli: Cli, server: DemoServer, db_url: str
) -> None:
    """Hex row versions of one width order as strings (and compare_rowversions says so). Row 17 carries
    0000000000001012 (only digits); it is updated once range 0 has read it, so its new version
    00000000000010c9 (a letter) is read by the open range. Both land in one batch (batch_rows above the
    rows), and the batch must keep the higher version, as compare_rowversions orders them."""
    st = _setup(cli, server, 200, batch=1000)
    assert _hex(RV_BASE + 18) == "0000000000001012"
    _versions_as(st, _hex, _unhex)
    real = st.page_body
    changed = threading.Event()

    def page_body(slug: str, params: dict[str, str]) -> dict[str, Any] | None:
        body = real(slug, params)
        ours = body is not None and params.get("page_size") == str(PAGE) and not changed.is_set()
        if ours and body is not None and any(r["data"]["id"] == 17 for r in body["rows"]):
            st.put_rows("items", [{"id": 17, "val": "new"}])
            changed.set()
        return body

    st.page_body = page_body  # type: ignore[method-assign]
    run = _run(cli)
    assert changed.is_set()
    assert run["status"] == "success", run
    assert _hex(st.entities["items"].versions[(17,)]).count("c") == 1
    table = items_table(db_url)
    assert table[17] == "new", (
        f"row 17 is {table[17]!r} (version {_hex(RV_BASE + 18)}) after a run that read its new version"
        f" {_hex(st.entities['items'].versions[(17,)])}; checkpoint {items_checkpoint(db_url)}"
    )
    assert table == items_source(st)


ISO0 = datetime(2025, 12, 8, 12, 0, 0)


def _iso(rv: int) -> str:
    """A second-granular ISO timestamp (a source's last-modified column): never only digits."""
    return (ISO0 + timedelta(seconds=rv - RV_BASE)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _uniso(text: str) -> int:
    return int((datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ") - ISO0).total_seconds()) + RV_BASE


def _iso_second_granular(cli: Cli, server: DemoServer, *, workers: int) -> tuple[DemoState, int]:
    """Rows 0..89 carry one timestamp each, rows 90..159 were written in the newest second V."""
    st = server.state
    st.set_api("items", items_api("rowversion"))
    for i in range(90):
        st.put_rows("items", [{"id": i, "val": f"v{i}"}])
    st.put_rows("items", [{"id": i, "val": f"v{i}"} for i in range(90, 160)])
    _config(cli, server, workers=workers)
    assert cli("discover").exit_code == 0
    _versions_as(st, _iso, _uniso)
    return st, st.rv


def _change_in_newest_second(st: DemoState, v: int, *, wait: float) -> threading.Event:
    """Range 0's second page is held ``wait`` seconds; then row 20 (not read yet) is rewritten within
    the newest second V and row 1000 is written in the next second."""
    held = _iso(RV_BASE + PAGE - 1)
    done = threading.Event()

    def hook(slug: str, page: int, params: dict[str, str]) -> None:
        ours = params.get("rowversion_gt") == str(_uniso(held)) and params.get("page_size") == str(PAGE)
        if ours and not done.is_set():
            time.sleep(wait)
            st.put_rows("items", [{"id": 20, "val": "changed"}], version=v)
            st.put_rows("items", [{"id": 1000, "val": "new"}], version=v + 1)
            done.set()

    st.before_page = hook
    return done


def test_iso_versions_a_row_changed_within_the_newest_second_is_not_lost(
    cli: Cli, server: DemoServer, db_url: str
) -> None:
    """The non-digit twin of the first attack's same-second test: with ISO timestamps there is no
    "version just below" top, so the open range reads again only above top's second."""
    st, v = _iso_second_granular(cli, server, workers=4)
    done = _change_in_newest_second(st, v, wait=1.0)
    run = _run(cli)
    assert done.is_set()
    assert run["status"] == "success", run
    st.before_page = None
    assert _run(cli)["status"] == "success"
    table = items_table(db_url)
    assert table.get(20) == "changed", (
        f"row 20 ({_iso(v)}) is {table.get(20)!r} after two successful runs; checkpoint {items_checkpoint(db_url)}"
    )
    assert table == items_source(st)


def test_iso_versions_the_same_change_read_sequentially(cli: Cli, server: DemoServer, db_url: str) -> None:
    """Control for the test above: one request at a time reads row 20 at V within the same run."""
    st, v = _iso_second_granular(cli, server, workers=1)
    done = _change_in_newest_second(st, v, wait=0.0)
    run = _run(cli)
    assert done.is_set()
    assert run["status"] == "success", run
    assert items_table(db_url) == items_source(st)


# -- resumed runs: the finished ranges a killed run recorded --------------------------------------------


def _resume_record(db_url: str) -> dict[str, Any] | None:
    """The resume record of the latest run (None before it records one)."""
    got = query(db_url, "SELECT resume FROM bridge.sync_runs ORDER BY started_at DESC LIMIT 1")
    return got[0][0] if got else None


def _kill_with_done_ranges(cli: Cli, st: DemoState, db_url: str, *, hold_gt: str) -> dict[str, Any]:
    """Run a sync in a process, hold the page request ``rowversion_gt=hold_gt`` (page_size PAGE) for
    good, and SIGKILL the process once its resume record names finished ranges; returns the record."""
    release = threading.Event()
    held = threading.Event()

    def hook(slug: str, page: int, params: dict[str, str]) -> None:
        if params.get("rowversion_gt") == hold_gt and params.get("page_size") == str(PAGE):
            held.set()
            release.wait(60)

    st.before_page = hook
    proc = spawn(cli, "sync", "erp.items")
    try:
        wait_for(held.is_set, timeout=60)

        def recorded() -> bool:
            rec = _resume_record(db_url)
            return rec is not None and bool(rec.get("done"))

        wait_for(recorded, timeout=60)
        proc.kill()
        proc.communicate(timeout=10)
    finally:
        release.set()
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    st.before_page = None
    rec = _resume_record(db_url)
    assert rec is not None
    assert rec.get("done"), rec
    return dict(rec)


def _in_done(rec: dict[str, Any]) -> list[int]:
    """Keys whose row version lies inside a finished range of ``rec`` (row i carries RV_BASE + i + 1)."""
    keys = []
    for lo, hi in rec["done"]:
        keys += [i for i in range(400) if int(lo) < RV_BASE + i + 1 <= int(hi)]
    return keys


def _assert_invariant(st: DemoState, db_url: str) -> None:
    source, table = items_source(st), items_table(db_url)
    missing = sorted(set(source) - set(table))
    stale = sorted(k for k in source if k in table and table[k] != source[k])
    extra = sorted(set(table) - set(source))
    bad = missing + stale + extra
    assert not bad, (
        f"missing {missing[:10]}, stale {[(k, table[k], source[k]) for k in stale[:10]]}, live but deleted at"
        f" the source {extra[:10]}; checkpoint {items_checkpoint(db_url)}"
    )
    cp = items_checkpoint(db_url)
    if cp is not None:
        with st.lock:
            below = {k[0] for k, rv in st.entities["items"].versions.items() if rv <= int(cp)}
        assert below <= set(table), f"checkpoint {cp} passes rows the table lacks: {sorted(below - set(table))[:10]}"


def test_resume_after_changes_to_the_finished_ranges(cli: Cli, server: DemoServer, db_url: str) -> None:
    """A first load is killed with range 0 held on its third page and later ranges recorded finished.
    Between the runs rows of the finished ranges are updated, deleted (tombstones) and rewritten within
    the newest second; the resumed run must end with the source's rows."""
    st = _setup(cli, server, 400)
    rec = _kill_with_done_ranges(cli, st, db_url, hold_gt=str(RV_BASE + 2 * PAGE - 2))
    inside = _in_done(rec)
    assert len(inside) > 40, rec
    a, b, c, d = inside[0], inside[len(inside) // 3], inside[len(inside) // 2], inside[-1]
    st.put_rows("items", [{"id": a, "val": "updated"}])
    st.delete("items", keys=[(b,)])
    st.put_rows("items", [{"id": c, "val": "same-second"}, {"id": d, "val": "same-second"}], version=st.rv)
    st.put_rows("items", [{"id": 5000, "val": "new"}], version=st.rv)
    run = _run(cli)
    assert run.get("resumed_from"), run
    assert run["status"] == "success", run
    _assert_invariant(st, db_url)


def test_two_resumes_in_a_row_with_changes_between_them(cli: Cli, server: DemoServer, db_url: str) -> None:
    """The resumed run is killed too (its first gap held), with changes before and after it."""
    st = _setup(cli, server, 400)
    rec1 = _kill_with_done_ranges(cli, st, db_url, hold_gt=str(RV_BASE + 2 * PAGE - 2))
    inside1 = _in_done(rec1)
    st.put_rows("items", [{"id": inside1[3], "val": "u1"}])
    st.delete("items", keys=[(inside1[-3],)])
    start = int(rec1["rowversion"]) - 1  # the resumed run re-reads the checkpoint's version
    rec2 = _kill_with_done_ranges(cli, st, db_url, hold_gt=str(start + 2 * (PAGE - 1)))
    inside2 = _in_done(rec2)
    st.put_rows("items", [{"id": inside2[0], "val": "u2"}, {"id": inside1[5], "val": "u2"}])
    st.put_rows("items", [{"id": inside2[-1], "val": "same-second"}], version=st.rv)
    st.delete("items", keys=[(inside2[len(inside2) // 2],)])
    run = _run(cli)
    assert run.get("resumed_from"), run
    assert run["status"] == "success", run
    _assert_invariant(st, db_url)


# -- counts ----------------------------------------------------------------------------------------------


def _counts(db_url: str) -> dict[str, int]:
    got = query(
        db_url,
        "SELECT records_fetched, records_inserted, records_updated, records_unchanged, records_deleted"
        " FROM bridge.sync_runs ORDER BY started_at DESC LIMIT 1",
    )[0]
    return dict(zip(["fetched", "inserted", "updated", "unchanged", "deleted"], got, strict=True))


def _hard_delete_during_read(st: DemoState, victims: list[int], *, after: int) -> threading.Event:
    """Hard-delete ``victims`` right after the ``after``-th page_size=PAGE request is answered."""
    seen = [0]
    done = threading.Event()
    real = st.page_body

    def page_body(slug: str, params: dict[str, str]) -> dict[str, Any] | None:
        body = real(slug, params)
        if params.get("page_size") == str(PAGE):
            seen[0] += 1
            if seen[0] == after and not done.is_set():
                st.delete("items", keys=[(v,) for v in victims], hard=True)
                done.set()
        return body

    st.page_body = page_body  # type: ignore[method-assign]
    return done


def test_hard_deletes_during_a_first_load_fall_back_and_count_once(cli: Cli, server: DemoServer, db_url: str) -> None:
    """Rows hard-deleted during the split read of a first load: a range's end check sees fewer rows
    above it and the read falls back to the sequential one. The table is right and each row is inserted
    once; fetched covers what was written."""
    st = _setup(cli, server, 400)
    done = _hard_delete_during_read(st, [300, 301, 302], after=3)
    run = _run(cli)
    assert done.is_set()
    assert run["status"] == "success", run
    _assert_invariant(st, db_url)
    c = _counts(db_url)
    assert c["inserted"] == 397, c
    assert c["fetched"] >= c["inserted"] + c["updated"] + c["unchanged"], c


def test_full_refresh_rows_hard_deleted_before_the_fallback_read_are_deleted(
    cli: Cli, server: DemoServer, db_url: str
) -> None:
    """full-refresh of a synced table. Range 0 waits until the range holding rows 300..302 has served
    them; then, as range 0 checks its end, the rows are hard-deleted: the check sees fewer rows above
    range 0 and the read falls back to a sequential read from the start, which never sees the three rows.
    That complete read is the run's evidence; the rows must not stay live after success."""
    st = _setup(cli, server, 400)
    assert _run(cli)["status"] == "success"
    victims = [300, 301, 302]
    served = threading.Event()
    deleted = threading.Event()
    real = st.page_body

    def page_body(slug: str, params: dict[str, str]) -> dict[str, Any] | None:
        gt, size = params.get("rowversion_gt"), params.get("page_size")
        if size == str(PAGE) and gt == str(RV_BASE + PAGE - 1):  # range 0's second page
            assert served.wait(20)
        if size == "1" and params.get("page", "1") == "1" and served.is_set() and not deleted.is_set():
            st.delete("items", keys=[(v,) for v in victims], hard=True)  # before the end check's count
            deleted.set()
        body = real(slug, params)
        if body is not None and size == str(PAGE) and {r["data"]["id"] for r in body["rows"]} >= set(victims):
            served.set()
        return body

    st.page_body = page_body  # type: ignore[method-assign]
    run = _run(cli, command="full-refresh")
    assert deleted.is_set()
    assert any("could not be split" in w for w in run["warnings"]), run
    assert run["status"] == "success", run
    live = items_table(db_url)
    assert not set(victims) & set(live), (
        f"rows {sorted(set(victims) & set(live))} were hard-deleted before the fallback read began and are"
        f" live after a successful full-refresh: {run}"
    )
    _assert_invariant(st, db_url)


# -- small pages, throttling, totals ----------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 4])
@pytest.mark.parametrize("page", [1, 2])
def test_tiny_pages_with_ties_and_changes(cli: Cli, server: DemoServer, db_url: str, page: int, workers: int) -> None:
    """page_size 1 and 2 (a keyset page of one row cannot move the cursor): tie groups of three, rows
    updated and deleted while the ranges are read (or, with one request at a time, the whole read is paged
    by number from the start, where a deleted row's tombstone is not served)."""
    st = server.state
    st.set_api("items", items_api("rowversion"))
    for start in range(0, 45, 3):
        st.put_rows("items", [{"id": i, "val": f"v{i}"} for i in range(start, start + 3)])
    _config(cli, server, page=page, batch=5, workers=workers)
    assert cli("discover").exit_code == 0
    n = [0]

    def hook(slug: str, _page: int, params: dict[str, str]) -> None:
        n[0] += 1
        if n[0] in (8, 20, 35):
            st.put_rows("items", [{"id": n[0], "val": f"u{n[0]}"}, {"id": 44 - n[0], "val": f"u{n[0]}"}])
        if n[0] == 25:
            st.delete("items", keys=[(3,), (40,)])

    st.before_page = hook
    run = _run(cli)
    st.before_page = None
    assert run["status"] in ("success", "partial"), run
    if run["status"] == "success":
        _assert_invariant(st, db_url)
    assert _run(cli)["status"] == "success"
    _assert_invariant(st, db_url)


@pytest.mark.parametrize("workers", [2, 16])
def test_throttled_source_and_rate_limit(cli: Cli, server: DemoServer, db_url: str, workers: int) -> None:
    """A source that answers 429 (Retry-After) above two requests in flight, during the sampling too,
    with max_requests_per_second set; rows change meanwhile. The run ends right, and quickly."""
    st = _setup(cli, server, 300, workers=workers)
    _config(cli, server, workers=workers)
    cli.config.write_text(cli.config.read_text() + "max_requests_per_second = 200\n", encoding="utf-8")
    st.max_concurrent, st.retry_after, st.latency_ms = 2, 0.05, 20
    n = [0]

    def hook(slug: str, _page: int, params: dict[str, str]) -> None:
        n[0] += 1
        if n[0] in (6, 20):
            st.put_rows("items", [{"id": n[0], "val": "u"}, {"id": 250 - n[0], "val": "u"}])

    st.before_page = hook
    started = time.monotonic()
    run = _run(cli)
    assert time.monotonic() - started < 30, run
    assert run["status"] == "success", (run["error_message"], run["warnings"], run["http_retries"])
    assert st.throttled > 0 or workers <= 2
    _assert_invariant(st, db_url)


def test_sigterm_while_sampling_waits_out_a_long_retry_after(cli: Cli, server: DemoServer, db_url: str) -> None:
    """Every sample beyond one in flight is answered 429 with Retry-After: 60: SIGTERM ends the run within
    seconds, cancelled, and the checkpoint does not move."""
    st = _setup(cli, server, 400)
    # Each answer takes 100 ms, so the split read's parallel requests really overlap (a fast server answers
    # each before the next arrives, and nothing is ever throttled).
    st.max_concurrent, st.retry_after, st.latency_ms = 1, 60, 100
    proc = spawn(cli, "sync", "erp.items", "--json")
    try:
        wait_for(lambda: st.throttled > 0, timeout=30)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        out, _err = proc.communicate(timeout=20)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert took < 10, f"SIGTERM took {took:.1f} s"
    assert json.loads(out)[0]["status"] == "cancelled", out
    assert items_checkpoint(db_url) is None or set(items_table(db_url)) >= {
        i for i in range(400) if RV_BASE + i + 1 <= int(items_checkpoint(db_url) or 0)
    }
