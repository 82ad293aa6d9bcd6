"""`syncflow discover` end to end against the demo APISmith and a real PostgreSQL."""

from __future__ import annotations

import copy
import json
from typing import Any

import psycopg

from tests.helpers import DEMO_TOKEN, TOKEN_ENV, Cli


def columns(db_url: str, schema: str, table: str) -> dict[str, str]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid ="
            " to_regclass(format('%%I.%%I', %s::text, %s::text)) AND attnum > 0 AND NOT attisdropped"
            " ORDER BY attnum",
            [schema, table],
        ).fetchall()
    return {str(n): str(t) for n, t in rows}


def unique_keys(db_url: str, schema: str, table: str) -> list[list[str]]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT array(SELECT attname FROM unnest(conkey) k JOIN pg_attribute a ON a.attrelid = conrelid"
            " AND a.attnum = k) FROM pg_constraint WHERE conrelid = to_regclass(format('%%I.%%I', %s::text,"
            " %s::text)) AND contype = 'u'",
            [schema, table],
        ).fetchall()
    return [list(r[0]) for r in rows]


def test_discover_creates_tables_and_entities(demo_cli: Cli, db_url: str) -> None:
    r = demo_cli("discover")
    assert r.exit_code == 0, r.stderr
    assert "erp.items" in r.stdout
    assert "create" in r.stdout
    cols = columns(db_url, "erp", "items")
    assert cols["item_number"] == "character varying(50)"
    assert cols["weight_per_unit"] == "numeric(10,3)"
    assert cols["created_on"] == "timestamp(0) without time zone"
    assert cols["launch_date"] == "date"
    assert cols["modified_at"] == "timestamp with time zone"
    for audit in (
        "_bridge_id",
        "_bridge_created_at",
        "_bridge_updated_at",
        "_bridge_hash",
        "_bridge_deleted",
        "_bridge_rowversion",
    ):
        assert audit in cols
    assert unique_keys(db_url, "erp", "orders") == [["order_no", "line_no"]]
    with psycopg.connect(db_url) as conn:
        idx = conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'erp' AND indexname LIKE '%%rowversion%%' ORDER BY 1"
        ).fetchall()
        nn = conn.execute(
            "SELECT attnotnull FROM pg_attribute WHERE attrelid = 'erp.orders'::regclass AND attname = 'line_no'"
        ).fetchone()
    assert idx == [("items_rowversion_idx",)]  # only the rowversion entity
    assert nn == (True,)

    listed = json.loads(demo_cli("entities", "--json").stdout)
    assert [(e["entity"], e["delta_strategy"], e["business_keys"]) for e in listed] == [
        ("erp.customers", "hash", ["customer_id"]),
        ("erp.items", "rowversion", ["item_number"]),
        ("erp.orders", "full", ["order_no", "line_no"]),
    ]
    # A second discovery changes nothing.
    r = demo_cli("discover", "--json")
    assert r.exit_code == 0
    assert {e["action"] for e in json.loads(r.stdout)[0]["entities"]} == {"unchanged"}


def test_dry_run_touches_nothing(demo_cli: Cli, db_url: str) -> None:
    r = demo_cli("discover", "--dry-run", "--json")
    assert r.exit_code == 0, r.stderr
    plan = json.loads(r.stdout)
    assert [e["action"] for e in plan[0]["entities"]] == ["create", "create", "create"]
    assert columns(db_url, "erp", "items") == {}
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM bridge.entities").fetchone() == (0,)


def _api(demo: Any, slug: str) -> dict[str, Any]:
    return copy.deepcopy(demo.state.entities[slug].api)


def test_schema_evolution(demo_cli: Cli, demo: Any, db_url: str) -> None:
    assert demo_cli("discover").exit_code == 0
    with psycopg.connect(db_url) as conn:
        conn.execute("INSERT INTO erp.items (item_number, base_uom, qty_on_hand) VALUES ('A1', 'EA', 5)")
        conn.execute("INSERT INTO erp.orders (order_no, line_no, amount) VALUES ('SO1', 1, 9.5)")
    api = _api(demo, "items")
    cols = api["columns"]
    cols.append({"name": "COLOR", "output_alias": "color", "data_type": "VARCHAR2(20)"})  # new column
    for c in cols:
        if c["output_alias"] == "base_uom":
            c["data_type"] = "VARCHAR2(40)"  # widening
        if c["output_alias"] == "qty_on_hand":
            c["data_type"] = "NUMBER(12)"  # integer -> bigint
    api["columns"] = [c for c in cols if c["output_alias"] != "category"]  # removed column
    api["delta_strategy"] = "full"  # strategy change
    demo.state.set_api("items", api)
    orders = _api(demo, "orders")
    orders["business_key_columns"] = ["ORDER_NO"]  # key change: breaking
    demo.state.set_api("orders", orders)

    plan = json.loads(demo_cli("discover", "--dry-run", "--json").stdout)[0]["entities"]
    items = next(e for e in plan if e["entity"] == "erp.items")
    assert items["add_columns"] == [{"name": "color", "type": "varchar(20)"}]
    assert {(w["name"], w["from"], w["to"]) for w in items["widen"]} == {
        ("base_uom", "varchar(10)", "varchar(40)"),
        ("qty_on_hand", "integer", "bigint"),
    }
    assert items["retire"] == ["category"]
    assert items["strategy_change"] == ["rowversion", "full"]

    r = demo_cli("discover")
    assert r.exit_code == 0, r.stderr
    assert "attention: erp.orders: business key changes from (order_no, line_no) to (order_no)" in r.stderr
    cols_now = columns(db_url, "erp", "items")
    assert cols_now["color"] == "character varying(20)"
    assert cols_now["base_uom"] == "character varying(40)"
    assert cols_now["qty_on_hand"] == "bigint"
    assert "category" in cols_now  # retired, never dropped
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT item_number, base_uom, qty_on_hand FROM erp.items").fetchall() == [("A1", "EA", 5)]
        assert unique_keys(db_url, "erp", "orders") == [["order_no", "line_no"]]  # not applied silently
        attention = conn.execute("SELECT needs_attention FROM bridge.entities WHERE slug = 'orders'").fetchone()
    assert attention is not None
    assert "--rebuild orders" in attention[0]
    shown = json.loads(demo_cli("entity", "show", "erp.items", "--json").stdout)
    assert {c["pg_name"]: c["retired"] for c in shown["columns"]}["category"] is True

    # The explicit option applies the breaking change, keeping the old rows in a backup table.
    r = demo_cli("discover", "--rebuild", "erp.orders")
    assert r.exit_code == 0, r.stderr
    assert unique_keys(db_url, "erp", "orders") == [["order_no"]]
    with psycopg.connect(db_url) as conn:
        backups = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'erp' AND tablename LIKE 'orders_old_%%'"
        ).fetchall()
        assert len(backups) == 1
        assert conn.execute(f'SELECT order_no FROM erp."{backups[0][0]}"').fetchall() == [("SO1",)]
        attention = conn.execute("SELECT needs_attention FROM bridge.entities WHERE slug = 'orders'").fetchone()
    assert attention == (None,)


def test_narrowing_is_breaking_and_keeps_live_type(demo_cli: Cli, demo: Any, db_url: str) -> None:
    demo_cli("discover")
    api = _api(demo, "customers")
    for c in api["columns"]:
        if c["output_alias"] == "name":
            c["data_type"] = "VARCHAR2(20)"
    demo.state.set_api("customers", api)
    r = demo_cli("discover", "--json")
    entry = next(e for e in json.loads(r.stdout)[0]["entities"] if e["entity"] == "erp.customers")
    assert entry["action"] == "breaking"
    assert entry["breaking"] == [
        "column name: type changes from varchar(200) to varchar(20) (narrowing or incompatible)"
    ]
    assert columns(db_url, "erp", "customers")["name"] == "character varying(200)"


def test_hostile_names_and_unknown_types(demo_cli: Cli, demo: Any, db_url: str) -> None:
    demo.state.set_api(
        "evil",
        {
            "slug": "Evil Slug; DROP TABLE x",
            "delta_strategy": "full",
            "columns": [
                {
                    "name": 'ID"; DROP TABLE bridge.entities; --',
                    "is_business_key": True,
                    "data_type": "NUMBER(9)",
                },
                {"name": "order", "data_type": "VARCHAR2(10)"},
                {"name": "user", "data_type": "SDO_GEOMETRY"},
                {"name": "_bridge_id", "data_type": "VARCHAR2(5)"},
                {"name": "Größe"},
                {"name": "x" * 69 + "a"},
                {"name": "x" * 69 + "b"},
            ],
        },
    )
    r = demo_cli("discover")
    assert r.exit_code == 0, r.stderr
    assert (
        "warning: erp: Evil Slug; DROP TABLE x: column 'user' has unknown type 'SDO_GEOMETRY'; stored as text"
        in r.stderr
    )
    cols = columns(db_url, "erp", "evil_slug__drop_table_x")
    assert cols["id___drop_table_bridge_entities____"] == "integer"
    assert cols["order"] == "character varying(10)"
    assert cols["user"] == "text"
    assert cols["src_bridge_id"] == "character varying(5)"
    assert cols["_bridge_id"] == "uuid"
    long_names = [n for n in cols if n.startswith("xxxx")]
    assert len(long_names) == 2
    assert all(len(n) == 63 for n in long_names)
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM bridge.entities").fetchone() == (4,)


def test_unsyncable_api_recorded_and_others_go_on(demo_cli: Cli, demo: Any, db_url: str) -> None:
    demo.state.set_api("nokey", {"slug": "nokey", "columns": [{"name": "A"}]})
    r = demo_cli("discover")
    assert r.exit_code == 0
    assert "not syncable: no business key" in r.stdout
    assert columns(db_url, "erp", "nokey") == {}
    data = json.loads(demo_cli("entity", "show", "erp.nokey", "--json").stdout)
    assert data["syncable"] is False
    assert data["unsyncable_reason"].startswith("no business key")
    assert columns(db_url, "erp", "items")


def test_failure_midway_leaves_nothing_half_made(demo_cli: Cli, demo: Any, db_url: str) -> None:
    demo.state.set_api(
        "wide",
        {
            "slug": "wide",
            "columns": [{"name": "id", "is_business_key": True}, *({"name": f"c{i}"} for i in range(1700))],
        },
    )
    r = demo_cli("discover")
    assert r.exit_code == 1
    assert "erp.wide: could not apply the schema change to erp.wide: tables can have at most 1600 columns" in r.stdout
    assert columns(db_url, "erp", "wide") == {}
    assert columns(db_url, "erp", "items")  # the others were applied
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM bridge.entities WHERE slug = 'wide'").fetchone() == (0,)


def test_errors_name_the_connector_never_the_token(demo_cli: Cli, demo: Any) -> None:
    r = demo_cli("discover", env={TOKEN_ENV: "wrong-token-value"})
    assert r.exit_code == 1
    assert r.messages.startswith("error: connector erp: APISmith refused the token (HTTP 401)")
    assert "wrong-token-value" not in r.stderr
    assert "Traceback" not in r.stderr
    demo_cli("connector", "add", "dead", "--url", "http://127.0.0.1:9")
    r = demo_cli("discover", "dead")
    assert r.exit_code == 1
    assert r.messages.startswith("error: connector dead: cannot connect to http://127.0.0.1:9/api/v1/apis")
    assert DEMO_TOKEN not in r.stdout + r.stderr


def test_path_prefix_and_envelope(cli: Cli, db_url: str) -> None:
    from demo_apismith import DemoServer, DemoState

    state = DemoState({"customers": 5}, token=DEMO_TOKEN)
    state.envelope = "apis"
    with DemoServer(state, prefix="/smith") as server:
        cli.config.write_text(
            f'[connectors.erp]\nbase_url = "{server.url}/"\ntoken_env = "{TOKEN_ENV}"\ntarget_schema = "erp_data"\n',
            encoding="utf-8",
        )
        r = cli("discover")
    assert r.exit_code == 0, r.stderr
    assert columns(db_url, "erp_data", "customers")


def test_entity_set_and_file_overrides(demo_cli: Cli) -> None:
    demo_cli("discover")
    r = demo_cli("entity", "set", "erp.items", "--interval", "120", "--disable", "--page-size", "500")
    assert r.exit_code == 0, r.stderr
    data = json.loads(demo_cli("entity", "show", "erp.items", "--json").stdout)
    assert (data["interval_seconds"], data["enabled"], data["page_size"]) == (120, False, 500)
    with demo_cli.config.open("a", encoding="utf-8") as fh:
        fh.write("\n[connectors.erp.entities.items]\ninterval_seconds = 60\n")
    data = json.loads(demo_cli("entity", "show", "erp.items", "--json").stdout)
    assert data["interval_seconds"] == 60
    assert data["overridden_by_file"] == ["interval_seconds"]
    r = demo_cli("entity", "set", "erp.items", "--interval", "90")
    assert r.exit_code == 1
    assert "interval_seconds = 60 in" in r.stderr
    assert "the new value is stored but has no effect while the file sets it" in r.stderr
    assert "[connectors.erp.entities.items] wins over the database" in r.stderr
    r = demo_cli("entity", "set", "erp.nothing", "--interval", "90")
    assert r.exit_code == 2
    assert r.messages == "error: no entity 'erp.nothing': run 'syncflow discover erp' or see 'syncflow entities'\n"
