"""Exact data: after a run that ends ``success`` the target equals the source.

The invariant every test here checks, in one form or another:

    After a run that ends ``success``, every live source row is a live table
    row with identical typed values; no live table row is soft-deleted while
    it exists at the source; the stored checkpoint never passes a row that the
    table lacks. A run that cannot guarantee this does not end ``success``.

Each test reproduces one way SyncFlow 0.1 broke it (issue "Exact data").
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from demo_apismith import DemoServer, DemoState
from tests.helpers import DEMO_TOKEN, TOKEN_ENV, Cli


def _rows(db_url: str, query: str) -> list[dict[str, Any]]:
    with psycopg.connect(db_url) as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query)  # test-only, fixed strings
        return cur.fetchall()


def _sync(cli: Cli, *args: str) -> tuple[int, list[dict[str, Any]]]:
    r = cli(*args, "--json")
    return r.exit_code, list(json.loads(r.stdout)) if r.stdout.strip() else []


def _configure(cli: Cli, server: DemoServer, extra: str = "") -> Cli:
    cli.config.write_text(
        f"[sync]\nretry_backoff_seconds = 0\n{extra}\n"
        f'[connectors.erp]\nbase_url = "{server.url}"\ntoken_env = "{TOKEN_ENV}"\n',
        encoding="utf-8",
    )
    return cli


def _col(name: str, alias: str, data_type: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "output_alias": alias, "data_type": data_type, **extra}


@pytest.fixture
def server() -> Iterator[DemoServer]:
    state = DemoState({}, token=DEMO_TOKEN)
    with DemoServer(state) as s:
        yield s


def _items_live(db_url: str) -> dict[str, dict[str, Any]]:
    return {r["item_number"]: r for r in _rows(db_url, "SELECT * FROM erp.items WHERE NOT _bridge_deleted")}


def _assert_items_equal_source(db_url: str, state: DemoState) -> None:
    source = state.snapshot("items")
    stored = _items_live(db_url)
    assert set(stored) == {k[0] for k in source}, "live rows differ from the source"
    for (key,), data in source.items():
        assert stored[key]["erp_rowversion"] == data["erp_rowversion"], key
        assert stored[key]["item_description"] == data["item_description"], key


# -- 1. numbers ------------------------------------------------------------------------------


NUMS_API = {
    "slug": "nums",
    "delta_strategy": "full",
    "columns": [
        _col("ID", "id", "NUMBER(38)", is_business_key=True),
        _col("BIG", "big", "NUMBER(38,10)"),
        _col("PI", "pi", "NUMBER"),
        _col("QTY", "qty", "NUMBER(9)"),
        _col("DOC", "doc", "json"),
    ],
}


def test_json_numbers_land_exactly(cli: Cli, server: DemoServer, db_url: str) -> None:
    server.state.set_api("nums", NUMS_API)
    k1, k2 = 12345678901234567890123456789012, 12345678901234567890123456789013
    big = Decimal("1234567890123456789012345678.1234567891")
    pi = Decimal("3.14159265358979323846264338327950288419716939937510")
    server.state.put_rows(
        "nums",
        [
            {"id": Decimal(k1), "big": big, "pi": pi, "qty": Decimal("12.0"), "doc": {"x": pi}},
            {"id": Decimal(k2), "big": Decimal("-0.0"), "pi": Decimal("1E+2"), "qty": 7, "doc": [Decimal(k1)]},
        ],
    )
    _configure(cli, server)
    assert cli("discover").exit_code == 0
    code, runs = _sync(cli, "sync", "erp.nums")
    assert code == 0, runs
    assert runs[0]["status"] == "success"
    stored = {r["id"]: r for r in _rows(db_url, "SELECT id, big, pi, qty, doc::text AS doc FROM erp.nums")}
    assert set(stored) == {Decimal(k1), Decimal(k2)}
    assert stored[Decimal(k1)]["big"] == big
    assert stored[Decimal(k1)]["pi"] == pi
    assert stored[Decimal(k1)]["qty"] == 12
    assert stored[Decimal(k2)]["big"] == 0
    assert stored[Decimal(k2)]["pi"] == 100
    assert json.loads(stored[Decimal(k1)]["doc"], parse_float=Decimal) == {"x": pi}
    assert json.loads(stored[Decimal(k2)]["doc"]) == [k1]


# -- 2. full-refresh of a rowversion entity reconciles hard deletes ---------------------------


def test_full_refresh_of_rowversion_entity_reconciles_hard_deletes(cli: Cli, server: DemoServer, db_url: str) -> None:
    server.state.set_api("items", _items_api())
    server.state.insert("items", 60, new_version=False)
    _configure(cli, server, "page_size = 10")
    assert cli("discover").exit_code == 0
    assert cli("sync", "erp.items").exit_code == 0
    gone = server.state.delete("items", 5, hard=True)
    code, runs = _sync(cli, "full-refresh", "erp.items")
    assert code == 0, runs
    run = runs[0]
    assert run["status"] == "success", run
    assert run["records_deleted"] == 5, run
    assert run["records_fetched"] == 55, run  # deliberate keyset re-reads are not counted as rows
    deleted = {r["item_number"] for r in _rows(db_url, "SELECT item_number FROM erp.items WHERE _bridge_deleted")}
    assert deleted == {k[0] for k in gone}
    _assert_items_equal_source(db_url, server.state)


def _items_api() -> dict[str, Any]:
    from demo_apismith import default_apis

    return default_apis()["items"]


# -- 3. a tie group larger than a page, changed while it is read -----------------------------


def test_tie_group_changed_mid_paging_loses_no_row(cli: Cli, server: DemoServer, db_url: str) -> None:
    st = server.state
    st.set_api("items", _items_api())
    st.entities["items"].template = "items"
    keys = st.insert("items", 250)  # one row version for all 250: a tie group of 2.5 pages
    st.insert("items", 500, new_version=False)
    _configure(cli, server, "page_size = 100")
    assert cli("discover").exit_code == 0
    served: list[int] = []

    def touch_first(slug: str, page: int, params: dict[str, str]) -> None:
        served.append(page)
        if page == 2 and len(served) == 2:
            st.update("items", keys=[keys[0]])  # leaves the tie group: the rest shift left by one

    st.before_page = touch_first
    code, runs = _sync(cli, "sync", "erp.items")
    st.before_page = None
    assert code == 0, runs
    if runs[0]["status"] == "success":
        _assert_items_equal_source(db_url, st)
    # Whatever the first run decided, the next one converges and nothing is skipped for good.
    code, runs = _sync(cli, "sync", "erp.items")
    assert code == 0, runs
    assert runs[0]["status"] == "success", runs
    _assert_items_equal_source(db_url, st)


# -- 4. rows written later with the checkpoint's own row version -------------------------------


def test_rows_tied_with_the_checkpoint_are_fetched(cli: Cli, server: DemoServer, db_url: str) -> None:
    st = server.state
    st.set_api("items", _items_api())
    st.insert("items", 30, new_version=False)
    _configure(cli, server)
    assert cli("discover").exit_code == 0
    assert cli("sync", "erp.items").exit_code == 0
    checkpoint = _rows(db_url, "SELECT last_rowversion FROM bridge.entities WHERE slug = 'items'")[0]
    late = {**st.entities["items"].rows[next(iter(st.entities["items"].rows))], "item_number": "LATE-1"}
    st.put_rows("items", [late], version=int(checkpoint["last_rowversion"]))  # same second as the checkpoint
    code, runs = _sync(cli, "sync", "erp.items")
    assert code == 0, runs
    assert runs[0]["status"] == "success", runs
    assert runs[0]["records_inserted"] == 1, runs
    assert runs[0]["records_updated"] == 0, runs  # the re-read tie group writes nothing
    _assert_items_equal_source(db_url, st)


# -- 5. full/hash: a row shifted out of view is never soft-deleted ----------------------------


@pytest.mark.parametrize("direction", ["left", "right"])
def test_full_sync_never_soft_deletes_a_live_row_that_shifted(
    cli: Cli, server: DemoServer, db_url: str, direction: str
) -> None:
    st = server.state
    st.set_api("orders", _orders_api())
    st.insert("orders", 500, new_version=False)
    _configure(cli, server, "page_size = 100")
    assert cli("discover").exit_code == 0
    assert cli("sync", "erp.orders").exit_code == 0
    first_page = [k for _, k in st.entities["orders"].live()[:100]]
    victim = first_page[10]
    st.delete("orders", keys=[first_page[50]])  # a real delete, known before the run
    calls: list[int] = []

    def shift(slug: str, page: int, params: dict[str, str]) -> None:
        calls.append(page)
        if page == 2 and len(calls) == 2:
            if direction == "left":
                st.delete("orders", keys=[victim])  # page 1 loses a row: page 2 starts one later
                st.insert("orders", 1)
            else:
                row = {"order_no": "SO0000000", "line_no": 0, "quantity": 1}
                st.put_rows("orders", [row], version=1)  # sorts first: every row shifts right

    st.before_page = shift
    code, runs = _sync(cli, "sync", "erp.orders")
    st.before_page = None
    assert code == 0, runs
    source = {k for k in st.snapshot("orders")}
    live = {(r["order_no"], r["line_no"]) for r in _rows(db_url, "SELECT * FROM erp.orders WHERE NOT _bridge_deleted")}
    deleted = {(r["order_no"], r["line_no"]) for r in _rows(db_url, "SELECT * FROM erp.orders WHERE _bridge_deleted")}
    assert not (deleted & source), "a live source row was soft-deleted"
    if runs[0]["status"] == "success":
        assert source <= live
    code, runs = _sync(cli, "sync", "erp.orders")
    assert code == 0, runs
    assert runs[0]["status"] == "success", runs
    live = {(r["order_no"], r["line_no"]) for r in _rows(db_url, "SELECT * FROM erp.orders WHERE NOT _bridge_deleted")}
    assert live == source


def _orders_api() -> dict[str, Any]:
    from demo_apismith import default_apis

    return default_apis()["orders"]


# -- 9. rows keyed by source names with overlapping aliases -------------------------------------


def test_rows_keyed_by_source_name_map_by_source_name(cli: Cli, server: DemoServer, db_url: str) -> None:
    st = server.state
    st.set_api(
        "firms",
        {
            "slug": "firms",
            "delta_strategy": "full",
            "columns": [
                _col("ID", "id", "NUMBER(9)", is_business_key=True),
                _col("NAME", "legal_name", "VARCHAR2(100)"),
                _col("SHORT_NAME", "NAME", "VARCHAR2(100)"),
            ],
        },
    )
    st.put_rows("firms", [{"id": 1, "legal_name": "Acme Corporation", "NAME": "Acme"}])
    st.data_keys = "name"
    _configure(cli, server)
    assert cli("discover").exit_code == 0
    code, runs = _sync(cli, "sync", "erp.firms")
    assert code == 0, runs
    assert runs[0]["status"] == "success", runs
    assert _rows(db_url, "SELECT id, legal_name, name FROM erp.firms") == [
        {"id": 1, "legal_name": "Acme Corporation", "name": "Acme"}
    ]
    st.data_keys = "alias"
    st.put_rows("firms", [{"id": 2, "legal_name": "Globex Limited", "NAME": "Globex"}])
    code, runs = _sync(cli, "sync", "erp.firms")
    assert code == 0, runs
    assert runs[0]["status"] == "success", runs
    assert _rows(db_url, "SELECT id, legal_name, name FROM erp.firms ORDER BY id") == [
        {"id": 1, "legal_name": "Acme Corporation", "name": "Acme"},
        {"id": 2, "legal_name": "Globex Limited", "name": "Globex"},
    ]


# -- 10. one bad row is rejected, not the run ----------------------------------------------------


def test_object_as_business_key_rejects_one_row(cli: Cli, server: DemoServer, db_url: str) -> None:
    st = server.state
    st.set_api("items", _items_api())
    st.insert("items", 20, new_version=False)
    _configure(cli, server)
    assert cli("discover").exit_code == 0
    real = st.page_body

    def object_key(slug: str, params: dict[str, str]) -> dict[str, Any] | None:
        body = real(slug, params)
        if body is not None and body["rows"]:
            row = body["rows"][0]
            body["rows"][0] = {**row, "data": {**row["data"], "item_number": {"nested": "object"}}}
        return body

    st.page_body = object_key  # type: ignore[method-assign]
    code, runs = _sync(cli, "sync", "erp.items")
    st.page_body = real  # type: ignore[method-assign]
    assert runs[0]["status"] == "partial", runs
    assert code == 1
    assert runs[0]["records_rejected"] == 1, runs
    assert len(_items_live(db_url)) == 19
    shown = cli("runs", "show", runs[0]["uid"], "--json")
    assert "business key value is an object" in shown.stdout


def test_unicode_digit_row_version_rejects_one_row(cli: Cli, server: DemoServer, db_url: str) -> None:
    st = server.state
    st.set_api("items", _items_api())
    st.insert("items", 20, new_version=False)
    _configure(cli, server)
    assert cli("discover").exit_code == 0
    real = st.page_body

    def odd_version(slug: str, params: dict[str, str]) -> dict[str, Any] | None:
        body = real(slug, params)
        if body is not None and body["rows"]:
            body["rows"][0] = {**body["rows"][0], "row_version": "²"}
        return body

    st.page_body = odd_version  # type: ignore[method-assign]
    _code, runs = _sync(cli, "sync", "erp.items")
    assert runs[0]["status"] == "partial", runs
    assert runs[0]["records_rejected"] == 1, runs
    assert len(_items_live(db_url)) == 19
    st.page_body = real  # type: ignore[method-assign]


# -- 11. column names that collide with internal names ---------------------------------------------


HOSTILE = ["_h", "_was_deleted", "_seq", "_rv", "_tomb", "XMIN", "XMAX", "CTID", "src", "chg", "s", "t", "del"]


def test_hostile_column_names_sync(cli: Cli, server: DemoServer, db_url: str) -> None:
    st = server.state
    cols = [_col("ID", "id", "NUMBER(9)", is_business_key=True)] + [_col(n, n, "VARCHAR2(20)") for n in HOSTILE]
    st.set_api("weird", {"slug": "weird", "delta_strategy": "rowversion", "columns": cols})
    st.put_rows("weird", [{"id": i, **{n: f"{n}-{i}" for n in HOSTILE}} for i in range(5)])
    _configure(cli, server)
    assert cli("discover").exit_code == 0
    for _ in range(2):
        code, runs = _sync(cli, "full-refresh", "erp.weird")
        assert code == 0, runs
        assert runs[0]["status"] == "success", runs
    stored = _rows(db_url, "SELECT * FROM erp.weird ORDER BY id")
    assert len(stored) == 5
    values = {v for r in stored for k, v in r.items() if isinstance(v, str) and not k.startswith("_bridge")}
    assert {f"{n}-3" for n in HOSTILE} <= values


# -- a rowversion entity read from the start (checkpoint reset) reconciles deletes ---------------


def test_rowversion_read_from_the_start_soft_deletes_rows_gone_without_tombstone(
    cli: Cli, server: DemoServer, db_url: str
) -> None:
    st = server.state
    st.set_api("items", _items_api())
    st.insert("items", 40, new_version=False)
    _configure(cli, server, "page_size = 7")
    assert cli("discover").exit_code == 0
    assert cli("sync", "erp.items").exit_code == 0
    gone = st.delete("items", 3, hard=True)
    with psycopg.connect(db_url, autocommit=True) as conn:  # what discover does when it resets the checkpoint
        conn.execute("UPDATE bridge.entities SET last_rowversion = NULL WHERE slug = 'items'")
    code, runs = _sync(cli, "sync", "erp.items")
    assert code == 0, runs
    assert runs[0]["status"] == "success", runs
    assert runs[0]["records_deleted"] == 3, runs
    deleted = {r["item_number"] for r in _rows(db_url, "SELECT item_number FROM erp.items WHERE _bridge_deleted")}
    assert deleted == {k[0] for k in gone}
    _assert_items_equal_source(db_url, st)


# -- honest counts and quiet output ------------------------------------------------------------------


def test_tombstones_of_rows_already_deleted_are_not_counted_again(cli: Cli, server: DemoServer, db_url: str) -> None:
    st = server.state
    st.set_api("items", _items_api())
    st.insert("items", 30, new_version=False)
    _configure(cli, server)
    assert cli("discover").exit_code == 0
    assert cli("sync", "erp.items").exit_code == 0
    before = _rows(db_url, "SELECT last_rowversion FROM bridge.entities WHERE slug = 'items'")[0]["last_rowversion"]
    st.delete("items", 5)  # tombstones
    code, runs = _sync(cli, "sync", "erp.items")
    assert code == 0, runs
    assert runs[0]["records_deleted"] == 5, runs
    for _ in range(2):  # the tombstones come again (the checkpoint put back before them)
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("UPDATE bridge.entities SET last_rowversion = %s WHERE slug = 'items'", [before])
        code, runs = _sync(cli, "sync", "erp.items")
        assert code == 0, runs
        assert runs[0]["status"] == "success", runs
        assert runs[0]["records_deleted"] == 0, runs  # the 5 were soft-deleted already
        fetched = runs[0]["records_fetched"]
        parts = ("records_inserted", "records_updated", "records_unchanged", "records_rejected")
        assert fetched >= sum(runs[0][p] for p in parts), runs


def test_a_rejected_value_prints_only_the_summary(cli: Cli, server: DemoServer, db_url: str) -> None:
    st = server.state
    st.set_api("items", _items_api())
    st.insert("items", 30, new_version=False)
    key = next(iter(st.entities["items"].rows))
    st.put_rows("items", [{**st.entities["items"].rows[key], "base_uom": "far too long for ten"}])
    _configure(cli, server)
    assert cli("discover").exit_code == 0
    r = cli("sync", "erp.items")
    assert r.exit_code == 1
    assert "1 rejected" in r.stderr
    assert "error ignored" not in r.stderr, r.stderr
    assert "psycopg.Copy" not in r.stderr, r.stderr


def test_a_cancelled_run_counts_the_batches_it_committed(
    cli: Cli, server: DemoServer, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from syncflow import store
    from syncflow.runtime import Runtime
    from syncflow.sync import SyncOptions, sync_entity

    st = server.state
    st.set_api("items", _items_api())
    st.insert("items", 100, new_version=False)
    _configure(cli, server)
    assert cli("discover").exit_code == 0
    cancel = threading.Event()

    def stop_later(slug: str, page: int, params: dict[str, str]) -> None:
        # Six pages of rows (a split read first asks for single rows to find its boundaries).
        if len([q for q in st.requests if "/data/" in q and "page_size=10" in q]) >= 6:
            cancel.set()

    st.before_page = stop_later
    for name, value in cli.env.items():
        monkeypatch.setenv(name, value)
    rt = Runtime.load(config_path=cli.config)
    with rt.metadata() as meta:
        entity = store.get_entity(meta, rt.schema, "erp.items")
    conn = rt.connect()
    try:
        with rt.client("erp") as client:
            options = SyncOptions(page_size=10, batch_rows=10, prefetch_pages=1)
            result = sync_entity(conn, rt.schema, entity, client, options=options, cancel=cancel)
    finally:
        conn.close()
        st.before_page = None
    assert result.status == "cancelled"
    stored = len(_items_live(db_url))
    assert stored > 0
    recorded = _rows(db_url, "SELECT records_fetched, records_inserted FROM bridge.sync_runs")[0]
    assert recorded == {"records_fetched": stored, "records_inserted": stored}


# -- found by the property test: a row deleted while a full read pages --------------------------


def _delete_during_read(
    cli: Cli, server: DemoServer, *, strategy: str, page_size: int, at_request: int, command: str, sync_first: bool
) -> tuple[int, list[dict[str, Any]], tuple[Any, ...]]:
    """11 orders; a row of page 1 is deleted at the source just before the ``at_request``-th page request."""
    st = server.state
    st.set_api("orders", {**_orders_api(), "delta_strategy": strategy})
    st.insert("orders", 11, new_version=False)
    _configure(cli, server, f"page_size = {page_size}")
    assert cli("discover").exit_code == 0
    if sync_first:
        assert cli("sync", "erp.orders").exit_code == 0
    victim = st.entities["orders"].live()[1][1]  # on page 1, read before it goes
    calls: list[int] = []

    def delete_victim(slug: str, page: int, params: dict[str, str]) -> None:
        calls.append(page)
        if len(calls) == at_request:
            st.delete("orders", keys=[victim])

    st.before_page = delete_victim
    code, runs = _sync(cli, command, "erp.orders")
    st.before_page = None
    return code, runs, victim


@pytest.mark.parametrize(("strategy", "command"), [("full", "sync"), ("hash", "full-refresh")])
def test_a_row_deleted_during_a_full_read_is_soft_deleted_by_that_run(
    cli: Cli, server: DemoServer, db_url: str, strategy: str, command: str
) -> None:
    """The first read saw the row before it went; the reads that agree do not have it: it is gone.

    Found by tests/property (hash entity, page_size 3, a delete before the third page request of
    a full-refresh): the run ended ``success`` with the deleted row still live, because the keys
    seen by every pass were pooled for the delete step instead of those of the pass that proved stable.
    """
    st = server.state
    code, runs, victim = _delete_during_read(
        cli, server, strategy=strategy, page_size=3, at_request=3, command=command, sync_first=True
    )
    assert code == 0, runs
    assert runs[0]["status"] == "success", runs
    live = {(r["order_no"], r["line_no"]) for r in _rows(db_url, "SELECT * FROM erp.orders WHERE NOT _bridge_deleted")}
    assert victim not in live, runs[0]["warnings"]
    assert live == set(st.snapshot("orders"))
    assert runs[0]["records_deleted"] == 1


@pytest.mark.parametrize(("strategy", "command"), [("full", "sync"), ("hash", "full-refresh")])
def test_a_row_deleted_during_a_first_load_is_soft_deleted_by_that_run(
    cli: Cli, server: DemoServer, db_url: str, strategy: str, command: str
) -> None:
    """Found by tests/property (hash, page_size 6, a delete before the second page request of the first
    full-refresh into an empty table): the reads that agree lack the row, yet it stayed live, because a
    first load kept no seen keys and so had no delete step at all."""
    st = server.state
    code, runs, victim = _delete_during_read(
        cli, server, strategy=strategy, page_size=6, at_request=2, command=command, sync_first=False
    )
    assert code == 0, runs
    assert runs[0]["status"] == "success", runs
    live = {(r["order_no"], r["line_no"]) for r in _rows(db_url, "SELECT * FROM erp.orders WHERE NOT _bridge_deleted")}
    assert victim not in live, runs[0]["warnings"]
    assert live == set(st.snapshot("orders"))


def test_a_first_load_that_deleted_a_row_counts_it_as_fetched(cli: Cli, server: DemoServer, db_url: str) -> None:
    """Found by the fuzz profile: after the first-load fix, records_fetched (the rows of the read that
    agreed) fell below inserted (every row the reads inserted, the deleted one included)."""
    code, runs, _victim = _delete_during_read(
        cli, server, strategy="hash", page_size=4, at_request=2, command="full-refresh", sync_first=False
    )
    run = runs[0]
    assert code == 0, run
    assert run["records_inserted"] == 11
    assert run["records_deleted"] == 1
    assert run["records_fetched"] >= run["records_inserted"] + run["records_updated"] + run["records_rejected"]
    assert run["records_unchanged"] == 0


def test_reads_that_never_agree_still_count_every_row_they_wrote(cli: Cli, server: DemoServer, db_url: str) -> None:
    """Found by the fuzz profile: when every read lost a row, records_fetched counted only the last read's
    keys, fewer than the rows the earlier reads had updated (the counts must add up)."""
    st = server.state
    st.set_api("orders", {**_orders_api(), "delta_strategy": "hash"})
    st.insert("orders", 12, new_version=False)
    _configure(cli, server, "page_size = 4")
    assert cli("discover").exit_code == 0
    assert cli("sync", "erp.orders").exit_code == 0
    st.update("orders", 12)  # every row changes: the first read updates what it sees
    calls: list[int] = []

    def delete_one_each_read(slug: str, page: int, params: dict[str, str]) -> None:
        calls.append(page)
        if page == 2:  # before the second page of every read, a row of its first page goes
            st.delete("orders", keys=[st.entities["orders"].live()[0][1]])

    st.before_page = delete_one_each_read
    code, runs = _sync(cli, "sync", "erp.orders")
    st.before_page = None
    run = runs[0]
    assert code == 1, run
    assert run["status"] == "partial", run
    assert run["records_fetched"] >= run["records_inserted"] + run["records_updated"] + run["records_rejected"], run


def test_a_held_delete_step_keeps_the_checkpoint_of_a_rowversion_entity(
    cli: Cli, server: DemoServer, db_url: str
) -> None:
    """Found by the fuzz profile: a full-refresh of a rowversion entity reads no tombstones (a read from the
    start lists live rows only); when the delete guard held its deletions back, the checkpoint still moved past
    the tombstones' versions, so no later sync ever saw them and the deleted rows stayed live."""
    st = server.state
    st.set_api("items", _items_api())
    st.insert("items", 10)
    _configure(cli, server)
    assert cli("discover").exit_code == 0
    assert cli("sync", "erp.items").exit_code == 0
    keys = [k for _, k in st.entities["items"].live()]
    st.delete("items", keys=keys[:6])  # tombstones: 6 of 10 rows, more than max_delete_fraction (50 %)
    st.update("items", keys=[keys[9]])  # a later version than the tombstones
    code, runs = _sync(cli, "full-refresh", "erp.items")
    assert code == 0, runs
    assert any(w.startswith("deleted nothing") for w in runs[0]["warnings"]), runs[0]["warnings"]
    code, runs = _sync(cli, "sync", "erp.items")
    assert code == 0, runs
    assert runs[0]["status"] == "success"
    live = {r["item_number"] for r in _rows(db_url, "SELECT item_number FROM erp.items WHERE NOT _bridge_deleted")}
    assert live == {k[0] for k in st.snapshot("items")}


@pytest.mark.parametrize("strategy", ["full", "hash"])
def test_a_row_written_by_two_reads_of_one_run_counts_once(
    cli: Cli, server: DemoServer, db_url: str, strategy: str
) -> None:
    """Found by the fuzz profile: when a verification read met a row that changed after the first read
    wrote it, the row counted as inserted (first read) and as updated (second read), so inserted +
    updated could exceed the rows fetched. A run counts each key's writes once: a row it inserted is
    inserted, however often it rewrites it; a row it updated is updated once."""
    st = server.state
    st.set_api("orders", {**_orders_api(), "delta_strategy": strategy})
    st.insert("orders", 12, new_version=False)
    _configure(cli, server, "page_size = 4")
    assert cli("discover").exit_code == 0
    assert cli("sync", "erp.orders").exit_code == 0
    st.insert("orders", 1, new_version=False)  # new at the source: the first read inserts it
    live = [k for _, k in st.entities["orders"].live()]
    new, changed, victim = live[-1], live[-2], live[1]
    st.update("orders", keys=[changed])  # changed at the source: the first read updates it
    requests: list[int] = []

    def meddle(slug: str, page: int, params: dict[str, str]) -> None:
        requests.append(page)
        if len(requests) == 2:  # a row of page 1 goes: the delete step needs a read that agrees
            st.delete("orders", keys=[victim])
        if page == 1 and len(requests) > 1 and requests.count(1) == 2:  # between the first and second read
            st.update("orders", keys=[new, changed])

    st.before_page = meddle
    code, runs = _sync(cli, "sync", "erp.orders")
    st.before_page = None
    run = runs[0]
    assert code == 0, run
    assert run["status"] == "success", run
    table = {(r["order_no"], r["line_no"]) for r in _rows(db_url, "SELECT * FROM erp.orders WHERE NOT _bridge_deleted")}
    assert table == set(st.snapshot("orders"))
    assert run["records_inserted"] == 1, run
    assert run["records_updated"] == 1, run
    assert run["records_deleted"] == 1, run
    assert run["records_fetched"] >= run["records_inserted"] + run["records_updated"] + run["records_rejected"], run
