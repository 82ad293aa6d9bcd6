"""Record history: versions with contiguous validity, written with the change itself."""

from __future__ import annotations

import copy
import itertools
import json
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest

from tests.helpers import Cli, rows

KEY = ("--key", "order_no=SO0000000", "--key", "line_no=1")


@pytest.fixture
def synced(demo_cli: Cli) -> Cli:
    assert demo_cli("discover").exit_code == 0
    return demo_cli


def versions(cli: Cli, *extra: str) -> list[dict[str, Any]]:
    r = cli("history", "erp.orders", *KEY, "--json", *extra)
    assert r.exit_code == 0, r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def test_insert_two_updates_delete_and_undelete(synced: Cli, demo: Any, db_url: str) -> None:
    r = synced("entity", "set", "erp.orders", "--history")
    assert r.exit_code == 0
    assert "history on" in r.stderr
    key = ("SO0000000", 1)
    assert synced("sync", "erp.orders").exit_code == 0
    for qty in (7, 8):
        demo.state.update("orders", keys=[key], changes={"quantity": qty})
        assert synced("sync", "erp.orders").exit_code == 0
    saved = copy.deepcopy(demo.state.entities["orders"].rows[key])
    demo.state.delete("orders", keys=[key])
    assert synced("sync", "erp.orders").exit_code == 0
    demo.state.put_rows("orders", [saved])
    assert synced("sync", "erp.orders").exit_code == 0

    found = versions(synced)
    assert [v["operation"] for v in found] == ["insert", "update", "update", "delete", "undelete"]
    assert [v["data"]["quantity"] for v in found] == [1, 7, 8, 8, 8]
    for older, newer in itertools.pairwise(found):
        assert older["valid_to"] == newer["valid_from"]  # contiguous
    assert found[-1]["valid_to"] is None
    assert all(v["run_uid"] for v in found)

    # A sync with no change adds nothing.
    assert synced("sync", "erp.orders").exit_code == 0
    assert len(versions(synced)) == 5

    # --as-of returns the one version valid then, at each boundary.
    for v in found:
        at = versions(synced, "--as-of", v["valid_from"])
        assert [x["operation"] for x in at] == [v["operation"]]
        assert at[0]["valid_from"] == v["valid_from"]
    before = datetime.fromisoformat(found[0]["valid_from"]) - timedelta(seconds=1)
    assert versions(synced, "--as-of", before.isoformat()) == []
    text = synced("history", "erp.orders", *KEY).stdout
    assert "undelete" in text


def test_tombstones_are_recorded_as_deletes(synced: Cli, demo: Any) -> None:
    assert synced("entity", "set", "erp.items", "--history").exit_code == 0
    assert synced("sync", "erp.items").exit_code == 0
    demo.state.delete("items", keys=[("P00000003",)])
    assert synced("sync", "erp.items").exit_code == 0
    r = synced("history", "erp.items", "--key", "item_number=P00000003", "--json")
    assert [v["operation"] for v in json.loads(r.stdout)] == ["insert", "delete"]


def test_failed_run_records_nothing(synced: Cli, demo: Any, db_url: str) -> None:
    synced.config.write_text(synced.config.read_text() + "\n[connectors.erp.entities.orders]\npage_size = 10\n")
    assert synced("entity", "set", "erp.orders", "--history").exit_code == 0
    assert synced("sync", "erp.orders").exit_code == 0
    before = rows(db_url, "erp.orders__history", "count(*) AS n")
    demo.state.update("orders", 20, changes={"status": "CHANGED"})

    requests: list[int] = []

    def fail_late(slug: str, page: int, params: dict[str, str]) -> None:
        # Every request after the third fails, whatever order parallel fetches and retries come in (a fixed
        # count of faults could be shared between them so that each retry succeeds), and however the read
        # asks for its pages (by number, or by keyset, split into row-version ranges).
        requests.append(page)
        if len(requests) == 3:
            demo.state.fail_next(503, count=1000)

    demo.state.before_page = fail_late
    assert synced("sync", "erp.orders").exit_code == 1
    demo.state.before_page = None
    demo.state.faults.clear()
    assert rows(db_url, "erp.orders__history", "count(*) AS n") == before
    assert rows(db_url, "erp.orders", "count(*) AS n", "status = 'CHANGED'") == [{"n": 0}]


def test_enabling_on_a_populated_entity_seeds_it(synced: Cli, db_url: str) -> None:
    assert synced("sync", "erp.customers").exit_code == 0
    assert synced("entity", "set", "erp.customers", "--history").exit_code == 0
    seeded = rows(db_url, "erp.customers__history", "_bridge_operation, _bridge_valid_to")
    assert len(seeded) == 30
    assert {(r["_bridge_operation"], r["_bridge_valid_to"]) for r in seeded} == {("insert", None)}
    # Turning it off keeps what was recorded and records nothing more.
    assert synced("entity", "set", "erp.customers", "--no-history").exit_code == 0
    assert len(rows(db_url, "erp.customers__history")) == 30


def test_file_override_turns_it_on_and_schema_changes_follow(synced: Cli, demo: Any, db_url: str) -> None:
    synced.config.write_text(synced.config.read_text() + "\n[connectors.erp.entities.customers]\nhistory = true\n")
    assert synced("sync", "erp.customers").exit_code == 0
    assert len(rows(db_url, "erp.customers__history")) == 30
    api = copy.deepcopy(demo.state.entities["customers"].api)
    api["columns"].append({"name": "SEGMENT", "output_alias": "segment", "data_type": "VARCHAR2(10)"})
    for c in api["columns"]:
        if c["output_alias"] == "email":
            c["data_type"] = "VARCHAR2(500)"
    demo.state.set_api("customers", api)
    assert synced("discover").exit_code == 0
    cols = {
        r["attname"]: r["t"]
        for r in rows(
            db_url,
            "pg_attribute",
            "attname, format_type(atttypid, atttypmod) AS t",
            "attrelid = 'erp.customers__history'::regclass AND attnum > 0",
        )
    }
    assert cols["segment"] == "character varying(10)"
    assert cols["email"] == "character varying(500)"


def test_history_usage_errors(synced: Cli) -> None:
    r = synced("history", "erp.orders", "--key", "order_no=SO1")
    assert r.exit_code == 2
    assert r.messages == "error: erp.orders: give --key for exactly the business key: order_no, line_no\n"
    r = synced("history", "erp.orders", *KEY, "--as-of", "yesterday")
    assert r.exit_code == 2
    assert "not an ISO 8601 time" in r.stderr


def test_history_of_an_entity_with_history_off_says_so(demo_cli: Cli) -> None:
    assert demo_cli("discover").exit_code == 0
    assert demo_cli("sync", "erp.customers").exit_code == 0
    r = demo_cli("history", "erp.customers", "--key", "customer_id=1")
    assert r.exit_code == 1, r.stderr
    assert "history is off" in r.stderr
    assert "entity set erp.customers --history" in r.stderr


# An API whose slug is another entity's history table name (issue: name collision).
SHADOW = {
    "slug": "orders__history",
    "delta_strategy": "full",
    "columns": [
        {"name": "ID", "output_alias": "id", "data_type": "NUMBER(9)", "is_business_key": True},
        {"name": "VALUE", "output_alias": "value", "data_type": "VARCHAR2(20)"},
    ],
}


def _tables_stay_apart(cli: Cli, demo: Any, db_url: str) -> None:
    """Both entities sync into their own tables; orders' history holds only order versions."""
    for ref in ("erp.orders", "erp.orders__history"):
        r = cli("sync", ref)
        assert r.exit_code == 0, r.stdout + r.stderr
    shown = json.loads(cli("entity", "show", "erp.orders__history", "--json").stdout)
    assert shown["table"] != "erp.orders__history"
    shadow_table = shown["table"]
    plan = json.loads(cli("discover", "--dry-run", "--json").stdout)[0]["entities"]
    assert {e["entity"]: e["history_table"] for e in plan} == {
        "erp.items": "erp.items__history",
        "erp.customers": "erp.customers__history",
        "erp.orders": "erp.orders__history",
        "erp.orders__history": f"{shadow_table}__history",
    }
    assert not shadow_table.endswith("__history")
    assert {r["id"] for r in rows(db_url, shadow_table, "id")} == {k[0] for k in demo.state.snapshot("orders__history")}
    history = rows(db_url, "erp.orders__history", "order_no, _bridge_operation")
    assert len(history) == 40
    assert {h["_bridge_operation"] for h in history} == {"insert"}
    assert len(versions(cli)) == 1


def test_history_table_never_collides_with_a_later_entity(synced: Cli, demo: Any, db_url: str) -> None:
    assert synced("entity", "set", "erp.orders", "--history").exit_code == 0
    assert synced("sync", "erp.orders").exit_code == 0
    demo.state.set_api("orders__history", copy.deepcopy(SHADOW))
    demo.state.insert("orders__history", 5)
    r = synced("discover")
    assert r.exit_code == 0, r.stdout + r.stderr
    _tables_stay_apart(synced, demo, db_url)


def test_entity_named_like_a_history_table_discovered_first(demo_cli: Cli, demo: Any, db_url: str) -> None:
    orders = copy.deepcopy(demo.state.entities["orders"].api)
    demo.state.set_api("orders", {})  # not offered yet
    demo.state.set_api("orders__history", copy.deepcopy(SHADOW))
    demo.state.insert("orders__history", 5)
    assert demo_cli("discover").exit_code == 0
    demo.state.set_api("orders", orders)
    r = demo_cli("discover")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert demo_cli("entity", "set", "erp.orders", "--history").exit_code == 0
    _tables_stay_apart(demo_cli, demo, db_url)


@pytest.mark.parametrize("how", ["drop", "rebuild"])
def test_table_built_again_keeps_one_current_version_per_record(synced: Cli, demo: Any, db_url: str, how: str) -> None:
    """Reloading a table that was dropped or rebuilt closes the versions that were current before."""
    assert synced("entity", "set", "erp.orders", "--history").exit_code == 0
    assert synced("sync", "erp.orders").exit_code == 0
    if how == "drop":
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("DROP TABLE erp.orders")
        assert synced("discover").exit_code == 0
    else:
        orders = copy.deepcopy(demo.state.entities["orders"].api)
        for c in orders["columns"]:
            if c["output_alias"] == "status":
                c["data_type"] = "VARCHAR2(8)"  # narrowing: breaking
        demo.state.set_api("orders", orders)
        assert synced("discover", "--rebuild", "erp.orders").exit_code == 0
    r = synced("sync", "erp.orders")
    assert r.exit_code == 0, r.stdout + r.stderr
    current = rows(
        db_url, "erp.orders__history", "order_no, line_no, count(*) AS n", "_bridge_valid_to IS NULL GROUP BY 1, 2"
    )
    assert len(current) == 40
    assert {c["n"] for c in current} == {1}
    found = versions(synced)
    assert [v["operation"] for v in found] == ["insert", "insert"]
    assert found[0]["valid_to"] == found[1]["valid_from"]
