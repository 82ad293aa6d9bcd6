"""Schema changes never leave a table silently incomplete.

After discover creates a table, (re)adds a column, restores one, moves the
entity to another table or finds its table emptied, the entity's checkpoint
is reset so that the next sync reloads what is missing; a change to an
entity that a sync is running on waits for, or is refused by, its claim.
End to end: the CLI, the demo APISmith, a real PostgreSQL.
"""

from __future__ import annotations

import copy
import json
import threading
from typing import Any

import psycopg
import pytest

from syncflow import claims
from tests.helpers import Cli

# What each demo entity is compared on: (key column, non-key columns that carry values).
CHECKED = {
    "items": ("item_number", ("item_description", "category", "erp_rowversion", "qty_on_hand")),
    "customers": ("customer_id", ("name", "country", "email")),
    "orders": ("order_no", ("status", "quantity", "notes")),
}


def rows(db_url: str, query: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    with psycopg.connect(db_url) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute(query, params or [])  # test-only, fixed strings
        return cur.fetchall()


def execute(db_url: str, statement: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(statement)  # test-only, fixed strings


def entity_row(db_url: str, slug: str) -> dict[str, Any]:
    return rows(db_url, "SELECT * FROM bridge.entities WHERE slug = %s", [slug])[0]


def assert_complete(db_url: str, demo: Any, slug: str, table: str | None = None) -> None:
    """Every live source row is a live table row with the same values; nothing else is live."""
    key, cols = CHECKED.get(slug, ("id", ("value",)))
    table = table or f"erp.{slug}"
    stored = rows(db_url, f"SELECT * FROM {table} WHERE NOT _bridge_deleted")
    source = demo.state.snapshot(slug)
    keys = ("order_no", "line_no") if slug == "orders" else (key,)
    by_key = {tuple(r[k] for k in keys): r for r in stored}
    assert set(by_key) == set(source), f"{table}: {len(by_key)} live rows, source has {len(source)}"
    for k, data in source.items():
        for c in cols:
            assert by_key[k][c] == data[c], (table, k, c)


def sync_runs(cli: Cli, *args: str) -> list[dict[str, Any]]:
    r = cli("sync", *args, "--json")
    assert r.exit_code == 0, r.stdout + r.stderr
    return list(json.loads(r.stdout))


def discover(cli: Cli, *args: str) -> list[dict[str, Any]]:
    r = cli("discover", "--json", *args)
    assert r.exit_code == 0, r.stdout + r.stderr
    return list(json.loads(r.stdout)[0]["entities"])


def plan_of(plan: list[dict[str, Any]], ref: str) -> dict[str, Any]:
    return next(e for e in plan if e["entity"] == ref)


@pytest.fixture
def synced(demo_cli: Cli) -> Cli:
    """Discovered and synced once: every table complete, items checkpointed."""
    r = demo_cli("discover")
    assert r.exit_code == 0, r.stderr
    sync_runs(demo_cli, "erp.items", "erp.customers", "erp.orders")
    return demo_cli


# -- 1. a table dropped by a human, a target schema change, a column dropped by a human ---------


@pytest.mark.parametrize("slug", ["items", "customers", "orders"])
def test_dropped_table_is_reloaded_whole(synced: Cli, demo: Any, db_url: str, slug: str) -> None:
    assert_complete(db_url, demo, slug)
    execute(db_url, f"DROP TABLE erp.{slug}")
    plan = plan_of(discover(synced), f"erp.{slug}")
    assert plan["action"] == "create"
    assert entity_row(db_url, slug)["last_rowversion"] is None
    (run,) = sync_runs(synced, f"erp.{slug}")
    assert run["status"] == "success"
    assert run["records_inserted"] == len(demo.state.snapshot(slug))
    assert_complete(db_url, demo, slug)


def test_target_schema_change_loads_the_new_table_whole(synced: Cli, demo: Any, db_url: str) -> None:
    synced.config.write_text(synced.config.read_text() + 'target_schema = "erp_new"\n')
    plan = plan_of(discover(synced), "erp.items")
    assert (plan["action"], plan["table"]) == ("create", "erp_new.items")
    (run,) = sync_runs(synced, "erp.items")
    assert run["status"] == "success"
    assert_complete(db_url, demo, "items", "erp_new.items")


def test_target_switched_back_to_an_old_table_catches_up(synced: Cli, demo: Any, db_url: str) -> None:
    """The table left behind in the old schema is behind: the checkpoint of the other table must not apply."""
    base = synced.config.read_text()
    synced.config.write_text(base + 'target_schema = "erp_new"\n')
    discover(synced)
    sync_runs(synced, "erp.items")
    demo.state.insert("items", 7)
    demo.state.update("items", 5)
    sync_runs(synced, "erp.items")  # erp_new.items is complete and checkpointed; erp.items is behind
    synced.config.write_text(base)
    plan = plan_of(discover(synced), "erp.items")
    assert plan["table"] == "erp.items"
    assert any("erp_new.items" in r for r in plan["checkpoint_reset"]), plan
    sync_runs(synced, "erp.items")
    assert_complete(db_url, demo, "items")


@pytest.mark.parametrize(
    ("slug", "column"), [("items", "item_description"), ("customers", "name"), ("orders", "status")]
)
def test_column_dropped_by_a_human_is_refilled(synced: Cli, demo: Any, db_url: str, slug: str, column: str) -> None:
    execute(db_url, f"ALTER TABLE erp.{slug} DROP COLUMN {column}")
    plan = plan_of(discover(synced), f"erp.{slug}")
    assert [c["name"] for c in plan["add_columns"]] == [column]
    sync_runs(synced, f"erp.{slug}")
    assert_complete(db_url, demo, slug)
    (again,) = sync_runs(synced, f"erp.{slug}")
    assert (again["records_inserted"], again["records_updated"]) == (0, 0)


def test_table_emptied_by_a_human_is_reloaded(synced: Cli, demo: Any, db_url: str) -> None:
    execute(db_url, "TRUNCATE erp.items")
    plan = plan_of(discover(synced), "erp.items")
    assert plan["action"] == "alter", plan
    assert plan["checkpoint_reset"], plan
    sync_runs(synced, "erp.items")
    assert_complete(db_url, demo, "items")


# -- 2. a column added at the source without a version bump --------------------------------------


def _add_color(demo: Any) -> None:
    """A new column at the source, with values, and no row version touched."""
    api = copy.deepcopy(demo.state.entities["items"].api)
    api["columns"].append({"name": "COLOR", "output_alias": "color", "data_type": "VARCHAR2(20)"})
    with demo.state.lock:
        for n, row in enumerate(demo.state.entities["items"].rows.values()):
            row["color"] = f"color-{n % 7}"
        demo.state.set_api("items", api)


def test_new_source_column_is_backfilled_after_discover(synced: Cli, demo: Any, db_url: str) -> None:
    _add_color(demo)
    demo.state.update("items", 4)  # rows that arrive during the drift run carry the new column too
    r = synced("sync", "erp.items")
    assert r.exit_code == 0
    assert "not in the metadata" in r.stderr + r.stdout
    plan = plan_of(discover(synced), "erp.items")
    assert [c["name"] for c in plan["add_columns"]] == ["color"]
    assert plan["checkpoint_reset"]
    (run,) = sync_runs(synced, "erp.items")
    assert run["status"] == "success"
    stored = {r["item_number"]: r["color"] for r in rows(db_url, "SELECT item_number, color FROM erp.items")}
    assert stored == {k[0]: d["color"] for k, d in demo.state.snapshot("items").items()}
    assert_complete(db_url, demo, "items")
    (again,) = sync_runs(synced, "erp.items")
    # Only the checkpoint's own tie group is read again (rows written later in that second would be
    # in it); nothing is written.
    assert (again["records_inserted"], again["records_updated"]) == (0, 0)
    assert again["records_unchanged"] == again["records_fetched"]


# -- 3. schema changes take the entity's claim ---------------------------------------------------


def _hold_claim(db_url: str, slug: str) -> psycopg.Connection[Any]:
    uid = str(entity_row(db_url, slug)["uid"])
    holder = psycopg.connect(db_url)
    assert claims.try_claim(holder, uid)
    return holder


def test_discover_refuses_an_entity_being_synced(synced: Cli, demo: Any, db_url: str) -> None:
    _add_color(demo)
    customers = copy.deepcopy(demo.state.entities["customers"].api)
    customers["columns"].append({"name": "VIP", "output_alias": "vip", "data_type": "boolean"})
    demo.state.set_api("customers", customers)
    checkpoint = entity_row(db_url, "items")["last_rowversion"]
    holder = _hold_claim(db_url, "items")
    try:
        r = synced("discover")
        assert r.exit_code == 75, r.stdout + r.stderr
        assert "erp.items: a sync of this entity is running (another process holds its claim)" in r.stderr
        assert "nothing was changed for it" in r.stderr
        cols = {
            x["attname"]
            for x in rows(db_url, "SELECT attname FROM pg_attribute WHERE attrelid = 'erp.items'::regclass")
        }
        assert "color" not in cols
        assert entity_row(db_url, "items")["last_rowversion"] == checkpoint
        # The other entity's change was applied.
        assert rows(db_url, "SELECT count(vip) AS n FROM erp.customers") == [{"n": 0}]
        # --wait is bounded: still held after the timeout, still refused.
        r = synced("discover", "--wait", "--wait-timeout", "0.3", "--json")
        assert r.exit_code == 75
        refused = plan_of(json.loads(r.stdout)[0]["entities"], "erp.items")["refused"]
        assert "give a longer --wait-timeout" in refused
        assert "add --wait" not in refused
    finally:
        holder.close()
    plan = plan_of(discover(synced), "erp.items")
    assert plan["refused"] is None
    assert [c["name"] for c in plan["add_columns"]] == ["color"]
    sync_runs(synced, "erp.items")
    assert_complete(db_url, demo, "items")


def test_rebuild_waits_for_the_running_sync(synced: Cli, demo: Any, db_url: str) -> None:
    orders = copy.deepcopy(demo.state.entities["orders"].api)
    orders["business_key_columns"] = ["ORDER_NO", "LINE_NO", "CUST_ID"]
    demo.state.set_api("orders", orders)
    holder = _hold_claim(db_url, "orders")
    released = threading.Timer(0.3, holder.close)
    released.start()
    try:
        r = synced("discover", "--rebuild", "erp.orders", "--wait", "--wait-timeout", "10")
    finally:
        released.cancel()
        holder.close()
    assert r.exit_code == 0, r.stdout + r.stderr
    assert entity_row(db_url, "orders")["needs_attention"] is None
    sync_runs(synced, "erp.orders")
    assert_complete(db_url, demo, "orders")


def test_unchanged_entities_need_no_claim(synced: Cli, db_url: str) -> None:
    holder = _hold_claim(db_url, "items")
    try:
        r = synced("discover")
        assert r.exit_code == 0, r.stdout + r.stderr
    finally:
        holder.close()


# -- 5. siblings ----------------------------------------------------------------------------------


def test_strategy_change_full_to_rowversion_loads_whole(synced: Cli, demo: Any, db_url: str) -> None:
    api = copy.deepcopy(demo.state.entities["items"].api)
    api["delta_strategy"] = "full"
    demo.state.set_api("items", api)
    discover(synced)
    demo.state.insert("items", 6)
    sync_runs(synced, "erp.items")
    api = copy.deepcopy(api)
    api["delta_strategy"] = "rowversion"
    demo.state.set_api("items", api)
    plan = plan_of(discover(synced), "erp.items")
    assert plan["strategy_change"] == ["full", "rowversion"]
    sync_runs(synced, "erp.items")
    assert_complete(db_url, demo, "items")
    demo.state.update("items", 3)
    sync_runs(synced, "erp.items")
    assert_complete(db_url, demo, "items")


def test_rebuild_then_failed_sync_then_sync_is_complete(synced: Cli, demo: Any, db_url: str) -> None:
    items = copy.deepcopy(demo.state.entities["items"].api)
    for c in items["columns"]:
        if c["output_alias"] == "base_uom":
            c["data_type"] = "VARCHAR2(5)"  # narrowing: breaking
    demo.state.set_api("items", items)
    discover(synced)
    assert synced("discover", "--rebuild", "erp.items").exit_code == 0
    assert entity_row(db_url, "items")["last_rowversion"] is None
    demo.state.fail_next(401)
    assert synced("sync", "erp.items").exit_code == 1
    assert entity_row(db_url, "items")["last_rowversion"] is None
    sync_runs(synced, "erp.items")
    assert_complete(db_url, demo, "items")


def test_restored_column_is_refreshed(synced: Cli, demo: Any, db_url: str) -> None:
    """A column retired and offered again: values that changed meanwhile arrive without a version bump."""
    full = copy.deepcopy(demo.state.entities["items"].api)
    retired = copy.deepcopy(full)
    retired["columns"] = [c for c in retired["columns"] if c["output_alias"] != "category"]
    demo.state.set_api("items", retired)
    assert plan_of(discover(synced), "erp.items")["retire"] == ["category"]
    with demo.state.lock:
        for row in demo.state.entities["items"].rows.values():
            row["category"] = "RECLASSIFIED"
    demo.state.set_api("items", full)
    plan = plan_of(discover(synced), "erp.items")
    assert plan["restore"] == ["category"], plan
    assert plan["checkpoint_reset"], plan
    sync_runs(synced, "erp.items")
    assert_complete(db_url, demo, "items")


def test_rows_rejected_before_a_key_is_widened_arrive_after(synced: Cli, demo: Any, db_url: str) -> None:
    long_key = {**demo.state.snapshot("items")[("P00000001",)], "item_number": "P" * 70}
    demo.state.put_rows("items", [long_key])
    r = synced("sync", "erp.items")
    assert r.exit_code == 1  # partial: the key does not fit varchar(50)
    api = copy.deepcopy(demo.state.entities["items"].api)
    for c in api["columns"]:
        if c["output_alias"] == "item_number":
            c["data_type"] = "VARCHAR2(100)"
    demo.state.set_api("items", api)
    plan = plan_of(discover(synced), "erp.items")
    assert [w["name"] for w in plan["widen"]] == ["item_number"]
    sync_runs(synced, "erp.items")
    assert_complete(db_url, demo, "items")


def test_rebuild_during_a_real_sync_loses_no_row(synced: Cli, demo: Any, db_url: str) -> None:
    """The issue as reported: ``discover --rebuild`` while a sync process is midway."""
    from tests.helpers import spawn

    demo.state.insert("items", 200)
    synced.config.write_text(synced.config.read_text() + "\n[connectors.erp.entities.items]\npage_size = 20\n")
    midway, go_on = threading.Event(), threading.Event()
    requests = 0

    def gate(slug: str, page: int, params: dict[str, str]) -> None:
        nonlocal requests
        if slug == "items":
            requests += 1
            if requests == 3:
                midway.set()
                go_on.wait(timeout=30)

    demo.state.before_page = gate
    proc = spawn(synced, "sync", "erp.items")
    try:
        assert midway.wait(timeout=30), "the sync never reached its third page"
        items = copy.deepcopy(demo.state.entities["items"].api)
        for c in items["columns"]:
            if c["output_alias"] == "base_uom":
                c["data_type"] = "VARCHAR2(5)"  # narrowing: needs --rebuild
        demo.state.set_api("items", items)
        r = synced("discover", "--rebuild", "erp.items")
        assert r.exit_code == 75, r.stdout + r.stderr
        threading.Timer(0.3, go_on.set).start()
        r = synced("discover", "--rebuild", "erp.items", "--wait", "--wait-timeout", "60")
        assert r.exit_code == 0, r.stdout + r.stderr
        assert "rebuilt" in r.stdout
    finally:
        go_on.set()
        demo.state.before_page = None
        _out, errtext = proc.communicate(timeout=60)
    assert proc.returncode == 0, errtext
    assert entity_row(db_url, "items")["last_rowversion"] is None  # reset after the sync ended, not before
    sync_runs(synced, "erp.items")
    assert_complete(db_url, demo, "items")


def test_widened_scale_brings_the_digits_that_were_rounded(synced: Cli, demo: Any, db_url: str) -> None:
    """numeric(10,3) rounded 1.23456 to 1.235; after widening to numeric(12,5) the table must say 1.23456."""
    row = {**demo.state.snapshot("items")[("P00000001",)], "weight_per_unit": "1.23456"}
    demo.state.put_rows("items", [row])
    sync_runs(synced, "erp.items")
    assert rows(db_url, "SELECT weight_per_unit::text AS w FROM erp.items WHERE item_number = 'P00000001'") == [
        {"w": "1.235"}
    ]
    api = copy.deepcopy(demo.state.entities["items"].api)
    for c in api["columns"]:
        if c["output_alias"] == "weight_per_unit":
            c["data_type"] = "NUMBER(12,5)"
    demo.state.set_api("items", api)
    plan = plan_of(discover(synced), "erp.items")
    assert plan["widen"], plan
    assert plan["checkpoint_reset"], plan
    (run,) = sync_runs(synced, "erp.items")
    assert run["records_updated"] == 1  # only the row whose value differs is rewritten
    assert rows(db_url, "SELECT weight_per_unit::text AS w FROM erp.items WHERE item_number = 'P00000001'") == [
        {"w": "1.23456"}
    ]


def test_rebuild_of_an_unknown_slug_is_an_error(synced: Cli) -> None:
    r = synced("discover", "--rebuild", "nosuch")
    assert r.exit_code == 2, r.stderr
    assert "--rebuild nosuch: no such API" in r.stderr
    r = synced("discover", "--rebuild", "erp.items")  # a known one, nothing breaking: fine
    assert r.exit_code == 0, r.stderr


def test_a_lock_on_one_target_table_fails_only_that_entity(synced: Cli, demo: Any, db_url: str) -> None:
    synced.config.write_text(synced.config.read_text().replace("[sync]\n", "[sync]\nlock_timeout_seconds = 1\n"))
    api = copy.deepcopy(demo.state.entities["items"].api)
    api["columns"].append({"name": "COLOR", "output_alias": "color", "data_type": "VARCHAR2(20)"})
    demo.state.set_api("items", api)
    with psycopg.connect(db_url) as holder:
        holder.execute("LOCK TABLE erp.orders IN ACCESS EXCLUSIVE MODE")
        r = synced("discover")
        holder.rollback()
    assert r.exit_code == 1, r.stderr
    assert "another session holds a lock on erp.orders" in r.stderr, r.stderr
    with psycopg.connect(db_url) as conn:
        cols = {
            c
            for (c,) in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = 'erp' AND table_name = 'items'"
            )
        }
    assert "color" in cols  # the other entities' changes were applied
