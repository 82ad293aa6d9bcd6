"""Exact data under a hostile source: findings of an independent review, each kept as a test."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from demo_apismith import DemoServer, DemoState
from tests.helpers import DEMO_TOKEN, TOKEN_ENV, Cli


def _col(name: str, alias: str, data_type: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "output_alias": alias, "data_type": data_type, **extra}


def _rows(db_url: str, query: str) -> list[dict[str, Any]]:
    with psycopg.connect(db_url) as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query)  # test-only, fixed strings
        return cur.fetchall()


def _sync(cli: Cli, *args: str) -> tuple[int, dict[str, Any]]:
    r = cli(*args, "--json")
    runs = json.loads(r.stdout) if r.stdout.strip() else []
    assert runs, r.stderr
    return r.exit_code, runs[0]


@pytest.fixture
def server() -> Iterator[DemoServer]:
    with DemoServer(DemoState({}, token=DEMO_TOKEN)) as s:
        yield s


def _configure(cli: Cli, server: DemoServer, extra: str = "") -> Cli:
    cli.config.write_text(
        f"[sync]\nretry_backoff_seconds = 0\n{extra}\n"
        f'[connectors.erp]\nbase_url = "{server.url}"\ntoken_env = "{TOKEN_ENV}"\n',
        encoding="utf-8",
    )
    return cli


def _static(
    state: DemoState,
    slug: str,
    rows: Callable[[], list[dict[str, Any]]],
    *,
    total: bool = True,
    by_version: bool = True,
) -> None:
    """Serve fixed rows (``{"row_version", "data"}``), filtered by ``rowversion_gt`` and paged by number."""
    real = state.page_body

    def page_body(s: str, params: dict[str, str]) -> dict[str, Any] | None:
        if s != slug:
            return real(s, params)
        page, size = int(params.get("page", "1")), int(params.get("page_size", "1000"))
        gt = params.get("rowversion_gt")
        got = [r for r in rows() if gt is None or int(r["row_version"]) > int(gt)]
        if by_version:
            got.sort(key=lambda r: int(r["row_version"]))
        body: dict[str, Any] = {"rows": got[(page - 1) * size : page * size], "has_more": page * size < len(got)}
        if total:
            body["total"] = len(got)
        return body

    state.page_body = page_body  # type: ignore[method-assign,assignment]


KV_API = {
    "slug": "k",
    "delta_strategy": "rowversion",
    "columns": [_col("CODE", "code", "VARCHAR2(20)", is_business_key=True), _col("V", "v", "VARCHAR2(40)")],
}


def test_a_server_ordering_by_key_is_noticed_and_no_row_is_lost(cli: Cli, server: DemoServer, db_url: str) -> None:
    server.state.set_api("k", KV_API)
    versions = {"A": 1, "B": 8, "C": 9, "D": 4, "E": 5, "F": 6}
    source = [{"row_version": str(v), "data": {"code": k, "v": f"v{v}"}} for k, v in sorted(versions.items())]
    _static(server.state, "k", lambda: source, by_version=False)
    _configure(cli, server, "page_size = 3")
    assert cli("discover").exit_code == 0
    code, run = _sync(cli, "sync", "erp.k")
    stored = {r["code"] for r in _rows(db_url, "SELECT code FROM erp.k WHERE NOT _bridge_deleted")}
    assert (code, run["status"]) == (0, "success"), run
    assert stored == set(versions), run
    assert any("does not order rows by row version" in w for w in run["warnings"]), run
    code, run = _sync(cli, "sync", "erp.k")
    stored = {r["code"] for r in _rows(db_url, "SELECT code FROM erp.k WHERE NOT _bridge_deleted")}
    assert (code, run["status"], stored) == (0, "success", set(versions)), run


def test_same_second_changes_at_the_checkpoint_version_are_applied(cli: Cli, server: DemoServer, db_url: str) -> None:
    st = server.state
    st.set_api("k", {**KV_API, "columns": [*KV_API["columns"][:1], _col("QTY", "qty", "NUMBER(9)")]})
    second = 20251208120000
    st.put_rows("k", [{"code": "A", "qty": 1}, {"code": "B", "qty": 1}], version=second)
    _configure(cli, server)
    assert cli("discover").exit_code == 0
    assert _sync(cli, "sync", "erp.k")[1]["status"] == "success"
    st.put_rows("k", [{"code": "A", "qty": 2}, {"code": "C", "qty": 1}], version=second)  # same second again
    code, run = _sync(cli, "sync", "erp.k")
    assert (code, run["status"]) == (0, "success"), run
    got = {r["code"]: r["qty"] for r in _rows(db_url, "SELECT code, qty FROM erp.k WHERE NOT _bridge_deleted")}
    assert got == {"A": 2, "B": 1, "C": 1}
    st.delete("k", keys=[("B",)])  # a tombstone, still in that second
    st.entities["k"].tombstones[("B",)] = second
    st.entities["k"].touch(("B",), second)
    st.entities["k"].invalidate()
    _code, run = _sync(cli, "sync", "erp.k")
    assert run["status"] == "success", run
    got = {r["code"]: r["qty"] for r in _rows(db_url, "SELECT code, qty FROM erp.k WHERE NOT _bridge_deleted")}
    assert got == {"A": 2, "C": 1}


def test_text_keys_one_and_one_point_zero_are_two_rows(cli: Cli, server: DemoServer, db_url: str) -> None:
    server.state.set_api("k", KV_API)
    pairs: list[tuple[Any, str]] = [
        ("a", "10"),
        ("b", "10"),
        (1, "11"),
        (Decimal("1.0"), "11"),
        ("c", "12"),
        ("d", "13"),
    ]
    _static(server.state, "k", lambda: [{"row_version": v, "data": {"code": k, "v": f"x{k}"}} for k, v in pairs])
    _configure(cli, server, "page_size = 3")
    assert cli("discover").exit_code == 0
    for command in ("sync", "full-refresh"):
        _code, run = _sync(cli, command, "erp.k")
        assert run["status"] == "success", run
        live = {r["code"] for r in _rows(db_url, "SELECT code FROM erp.k WHERE NOT _bridge_deleted")}
        assert live == {"a", "b", "1", "1.0", "c", "d"}, (command, live)


@pytest.mark.parametrize("strategy", ["full", "hash"])
def test_json_values_that_hash_alike_are_still_updated(
    cli: Cli, server: DemoServer, db_url: str, strategy: str
) -> None:
    st = server.state
    cols = [_col("ID", "id", "NUMBER(9)", is_business_key=True), _col("DOC", "doc", "json")]
    st.set_api("docs", {"slug": "docs", "delta_strategy": strategy, "columns": cols})
    before: list[Any] = [None, {}, 1, {"k": 1}]
    after: list[Any] = [[], [], [[[1]]], {"k": [[1]]}]
    st.put_rows("docs", [{"id": i, "doc": d} for i, d in enumerate(before)], version=7)
    _configure(cli, server)
    assert cli("discover").exit_code == 0
    assert _sync(cli, "sync", "erp.docs")[1]["status"] == "success"
    st.put_rows("docs", [{"id": i, "doc": d} for i, d in enumerate(after)], version=7)  # same row version
    _code, run = _sync(cli, "sync", "erp.docs")
    assert run["status"] == "success", run
    assert run["records_updated"] == 4, run
    got = {r["id"]: r["doc"] for r in _rows(db_url, "SELECT id, doc FROM erp.docs ORDER BY id")}
    assert got == dict(enumerate(after))


def test_a_renamed_alias_never_blanks_the_stored_column(cli: Cli, server: DemoServer, db_url: str) -> None:
    st = server.state
    cols = [_col("ID", "id", "NUMBER(9)", is_business_key=True), _col("QTY", "qty", "NUMBER(9)")]
    st.set_api("r", {"slug": "r", "delta_strategy": "rowversion", "columns": cols})
    st.put_rows("r", [{"id": i, "qty": 10 + i} for i in range(5)])
    _configure(cli, server)
    assert cli("discover").exit_code == 0
    assert _sync(cli, "sync", "erp.r")[1]["status"] == "success"
    renamed = [_col("ID", "id", "NUMBER(9)", is_business_key=True), _col("QTY", "quantity", "NUMBER(9)")]
    st.set_api("r", {"slug": "r", "delta_strategy": "rowversion", "columns": renamed})
    st.entities["r"].rows = {k: {"id": v["id"], "quantity": v["qty"] + 1} for k, v in st.entities["r"].rows.items()}
    st.put_rows("r", list(st.entities["r"].rows.values()))
    code, run = _sync(cli, "sync", "erp.r")
    assert code != 0, run
    assert run["status"] != "success", run
    assert "discover" in (run["error_message"] or ""), run
    assert [r["qty"] for r in _rows(db_url, "SELECT qty FROM erp.r ORDER BY id")] == [10, 11, 12, 13, 14]


def test_a_lone_surrogate_rejects_one_row(cli: Cli, server: DemoServer, db_url: str) -> None:
    st = server.state
    cols = [_col("ID", "id", "NUMBER(9)", is_business_key=True), _col("T", "t", "VARCHAR2(20)")]
    st.set_api("s", {"slug": "s", "delta_strategy": "full", "columns": cols})
    st.put_rows("s", [{"id": i, "t": f"ok{i}"} for i in range(5)])
    real = st.page_body

    def surrogate(slug: str, params: dict[str, str]) -> Any:
        body = real(slug, params)
        return json.dumps(body).replace('"ok2"', '"\\ud800"').encode() if body else body

    st.page_body = surrogate  # type: ignore[method-assign]
    import demo_apismith

    real_dumps = demo_apismith.dumps
    demo_apismith.dumps = lambda obj: obj if isinstance(obj, bytes) else real_dumps(obj)
    try:
        _configure(cli, server)
        assert cli("discover").exit_code == 0
        _code, run = _sync(cli, "sync", "erp.s")
    finally:
        demo_apismith.dumps = real_dumps
    assert run["status"] == "partial", run
    assert run["records_rejected"] == 1, run
    assert sorted(r["id"] for r in _rows(db_url, "SELECT id FROM erp.s")) == [0, 1, 3, 4]


def test_a_first_load_read_twice_counts_each_row_once(cli: Cli, server: DemoServer, db_url: str) -> None:
    st = server.state
    cols = [_col("ID", "id", "NUMBER(9)", is_business_key=True), _col("T", "t", "VARCHAR2(20)")]
    st.set_api("c", {"slug": "c", "delta_strategy": "full", "columns": cols})
    st.put_rows("c", [{"id": i, "t": "x"} for i in range(30)])
    done: list[int] = []

    def insert_once(slug: str, page: int, params: dict[str, str]) -> None:
        if page == 2 and not done:
            done.append(1)
            st.put_rows("c", [{"id": 100, "t": "new"}])

    st.before_page = insert_once
    _configure(cli, server, "page_size = 7")
    assert cli("discover").exit_code == 0
    _code, run = _sync(cli, "sync", "erp.c")
    st.before_page = None
    assert run["status"] == "success", run
    assert (run["records_fetched"], run["records_inserted"]) == (31, 31), run


def test_a_row_that_flaps_while_paged_is_not_lost(cli: Cli, server: DemoServer, db_url: str) -> None:
    st = server.state
    cols = [_col("ID", "id", "NUMBER(9)", is_business_key=True), _col("T", "t", "VARCHAR2(20)")]
    st.set_api("f", {"slug": "f", "delta_strategy": "full", "columns": cols})
    st.put_rows("f", [{"id": i, "t": "x"} for i in range(30)])
    flapper = ("f", 1)

    def flap(slug: str, page: int, params: dict[str, str]) -> None:
        ent = st.entities["f"]
        key = next(k for k in ent.rows if k[0] == 2) if page == 2 else None
        if page == 2 and key is not None:
            flapper_row = ent.rows.pop(key)
            ent.invalidate()
            st.flapped = (key, flapper_row)  # type: ignore[attr-defined]
        elif page == 3 and getattr(st, "flapped", None):
            key, row = st.flapped  # type: ignore[attr-defined]
            ent.rows[key] = row
            ent.invalidate()
            st.flapped = None  # type: ignore[attr-defined]

    del flapper
    st.before_page = flap
    _configure(cli, server, "page_size = 5")
    assert cli("discover").exit_code == 0
    _code, run = _sync(cli, "sync", "erp.f")
    st.before_page = None
    live = {r["id"] for r in _rows(db_url, "SELECT id FROM erp.f WHERE NOT _bridge_deleted")}
    if run["status"] == "success":
        assert live == set(range(30)), (run, sorted(set(range(30)) - live))
