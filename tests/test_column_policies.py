"""Column policies: ``exclude_columns`` (never stored) and ``hash_columns`` (a keyed HMAC).

End to end: the CLI, the demo APISmith, a real PostgreSQL. A policy change is
a schema change: planned by ``discover --dry-run``, applied by ``discover``,
and it makes the next sync rewrite the rows already read.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import psycopg
import pytest

from tests.helpers import Cli, entity_state, query, rows

KEY_ENV = "SYNCFLOW_TEST_HASH_KEY"
SECRET = "s3cr3t-hmac-key-never-stored-7f1e"


def digest(value: str) -> str:
    return hmac.new(SECRET.encode(), value.encode(), hashlib.sha256).hexdigest()


def configure(cli: Cli, slug: str, body: str, *, key_env: bool = True) -> None:
    """Append the entity's table (and sync.hash_key_env) to the demo config."""
    text = cli.config.read_text()
    if key_env and "hash_key_env" not in text:
        text = text.replace("[sync]\n", f'[sync]\nhash_key_env = "{KEY_ENV}"\n', 1)
    cli.config.write_text(text + f"\n[connectors.erp.entities.{slug}]\n{body}\n", encoding="utf-8")


def set_policy(cli: Cli, slug: str, body: str) -> None:
    """Replace the entity's table written by :func:`configure` (it is the file's last one)."""
    text = cli.config.read_text()
    head = text[: text.index(f"[connectors.erp.entities.{slug}]")]
    cli.config.write_text(head + f"[connectors.erp.entities.{slug}]\n{body}\n", encoding="utf-8")


def ok(cli: Cli, *args: str) -> str:
    r = cli(*args)
    assert r.exit_code == 0, r.stdout + r.stderr
    return r.stdout + r.stderr


def plan(cli: Cli, slug: str) -> dict[str, Any]:
    """The entity's plan from ``discover --dry-run --json``."""
    r = cli("discover", "--dry-run", "--json")
    assert r.exit_code == 0, r.stdout + r.stderr
    return next(e for e in json.loads(r.stdout)[0]["entities"] if e["entity"] == f"erp.{slug}")


def column_type(db_url: str, table: str, column: str) -> str | None:
    found = query(
        db_url,
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = %s::regclass AND attname = %s AND NOT attisdropped",
        [table, column],
    )
    return str(found[0][0]) if found else None


@pytest.fixture
def keyed(demo_cli: Cli) -> Cli:
    demo_cli.env[KEY_ENV] = SECRET
    return demo_cli


def test_excluded_column_is_never_created_nor_warned_about(keyed: Cli, db_url: str) -> None:
    configure(keyed, "customers", 'exclude_columns = ["credit_limit"]')
    ok(keyed, "discover")
    assert column_type(db_url, "erp.customers", "credit_limit") is None
    r = keyed("sync", "erp.customers", "--json")
    assert r.exit_code == 0, r.stdout + r.stderr
    (run,) = json.loads(r.stdout)
    assert run["status"] == "success"
    assert run["warnings"] == []
    assert len(rows(db_url, "erp.customers")) == 30


def test_exclusion_added_later_clears_the_column_and_stops_writing_it(keyed: Cli, db_url: str, demo: Any) -> None:
    ok(keyed, "discover")
    ok(keyed, "sync", "erp.items")
    assert any(r["unit_price"] is not None for r in rows(db_url, "erp.items"))
    configure(keyed, "items", 'exclude_columns = ["unit_price"]')
    p = plan(keyed, "items")
    assert p["policy_changes"] == ["exclude unit_price"]
    assert p["clear"] == ["unit_price"]
    assert p["checkpoint_reset"] == []
    ok(keyed, "discover")
    assert column_type(db_url, "erp.items", "unit_price") is not None  # kept, not dropped
    assert all(r["unit_price"] is None for r in rows(db_url, "erp.items"))
    demo.state.update("items", 20)
    ok(keyed, "sync", "erp.items")
    assert all(r["unit_price"] is None for r in rows(db_url, "erp.items"))
    # Lifting the exclusion resets the checkpoint: the next sync writes the values again.
    set_policy(keyed, "items", "")
    p = plan(keyed, "items")
    assert p["policy_changes"] == ["include unit_price"]
    assert p["checkpoint_reset"]
    ok(keyed, "discover")
    assert entity_state(db_url, "items")["last_rowversion"] is None
    ok(keyed, "sync", "erp.items")
    source = {k[0]: r for k, r in demo.state.snapshot("items").items()}
    for r in rows(db_url, "erp.items"):
        want = source[r["item_number"]]["unit_price"]
        assert (None if r["unit_price"] is None else f"{r['unit_price']:.2f}") == want


def test_hashed_column_is_the_hmac_of_the_value_as_sent(keyed: Cli, db_url: str, demo: Any) -> None:
    configure(keyed, "items", 'hash_columns = ["qty_on_hand", "unit_price"]')
    ok(keyed, "discover")
    assert column_type(db_url, "erp.items", "qty_on_hand") == "text"
    ok(keyed, "sync", "erp.items")
    source = {k[0]: r for k, r in demo.state.snapshot("items").items()}
    got = rows(db_url, "erp.items")
    assert len(got) == 120
    for r in got:
        sent = source[r["item_number"]]
        qty, price = sent["qty_on_hand"], sent["unit_price"]
        assert r["qty_on_hand"] == (None if qty is None else digest(str(qty)))  # an integer: its digits
        assert r["unit_price"] == (None if price is None else digest(price))  # a string: as sent


def test_same_value_same_hash_so_joins_work(keyed: Cli, db_url: str, demo: Any) -> None:
    configure(keyed, "customers", 'hash_columns = ["email", "country"]')
    ok(keyed, "discover")
    demo.state.put_rows(
        "customers",
        [
            {"customer_id": 9001, "name": "A", "country": "DE", "email": "shared@example.com"},
            {"customer_id": 9002, "name": "B", "country": "DE", "email": "shared@example.com"},
        ],
    )
    ok(keyed, "sync", "erp.customers")
    pairs = query(
        db_url,
        "SELECT a.customer_id, b.customer_id FROM erp.customers a JOIN erp.customers b"
        " ON a.email = b.email AND a.customer_id < b.customer_id WHERE a.customer_id > 9000",
    )
    assert pairs == [(9001, 9002)]
    assert query(db_url, "SELECT email FROM erp.customers WHERE customer_id = 9001")[0][0] == digest(
        "shared@example.com"
    )
    by_country = dict(query(db_url, "SELECT country, count(*) FROM erp.customers GROUP BY country"))
    source: dict[str, int] = {}
    for r in demo.state.snapshot("customers").values():
        source[digest(r["country"])] = source.get(digest(r["country"]), 0) + 1
    assert by_country == source


@pytest.mark.parametrize("cmd", [("discover",), ("sync", "erp.customers")])
def test_missing_key_is_a_config_error_naming_the_variable(keyed: Cli, cmd: tuple[str, ...]) -> None:
    if cmd[0] == "sync":
        ok(keyed, "discover")
    configure(keyed, "customers", 'hash_columns = ["email"]')
    r = keyed(*cmd, env={KEY_ENV: ""})
    assert r.exit_code == 2, r.stdout + r.stderr
    assert KEY_ENV in r.messages
    assert "not set" in r.messages


def test_hash_columns_without_hash_key_env_is_a_config_error(keyed: Cli) -> None:
    configure(keyed, "customers", 'hash_columns = ["email"]', key_env=False)
    r = keyed("discover")
    assert r.exit_code == 2
    assert "hash_key_env" in r.messages


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ('exclude_columns = ["salary"]', "salary"),
        ('hash_columns = ["EMAIL"]', "EMAIL"),  # the source name: aliases only
        ('hash_columns = ["customer_id"]', "business key"),
        ('exclude_columns = ["customer_id"]', "business key"),
    ],
)
def test_bad_policy_names_are_config_errors(keyed: Cli, body: str, named: str) -> None:
    configure(keyed, "customers", body)
    r = keyed("discover")
    assert r.exit_code == 2, r.stdout + r.stderr
    assert named in r.messages
    assert "connectors.erp.entities.customers" in r.messages


def test_hash_added_later_is_planned_applied_and_rewrites_every_row(keyed: Cli, db_url: str, demo: Any) -> None:
    ok(keyed, "discover")
    ok(keyed, "sync", "erp.items")
    assert entity_state(db_url, "items")["last_rowversion"] is not None
    configure(keyed, "items", 'hash_columns = ["category"]')
    # A sync before discover refuses: the table does not have the form the file asks for.
    r = keyed("sync", "erp.items", "--json")
    assert r.exit_code == 1
    assert "discover" in r.stdout + r.stderr
    p = plan(keyed, "items")
    assert p["policy_changes"] == ["hash category"]
    assert p["retype"] == [{"name": "category", "from": "varchar(30)", "to": "text"}]
    assert p["checkpoint_reset"]
    text = ok(keyed, "discover", "--dry-run")
    assert "hash category" in text
    ok(keyed, "discover")
    assert column_type(db_url, "erp.items", "category") == "text"
    assert all(r["category"] is None for r in rows(db_url, "erp.items"))  # no plain value left
    assert entity_state(db_url, "items")["last_rowversion"] is None
    ok(keyed, "sync", "erp.items")
    source = {k[0]: r for k, r in demo.state.snapshot("items").items()}
    for row in rows(db_url, "erp.items"):
        c = source[row["item_number"]]["category"]
        assert row["category"] == (None if c is None else digest(c))
    # And back: unhashing retypes, clears and rewrites the plain values.
    set_policy(keyed, "items", "")
    assert plan(keyed, "items")["policy_changes"] == ["unhash category"]
    ok(keyed, "discover")
    ok(keyed, "sync", "erp.items")
    for row in rows(db_url, "erp.items"):
        assert row["category"] == source[row["item_number"]]["category"]


def test_history_stores_the_hashes(keyed: Cli, db_url: str, demo: Any) -> None:
    configure(keyed, "customers", "history = true")
    ok(keyed, "discover")
    ok(keyed, "sync", "erp.customers")
    assert any(r["email"] for r in rows(db_url, "erp.customers__history"))
    set_policy(keyed, "customers", 'history = true\nhash_columns = ["email"]')
    ok(keyed, "discover")
    # The plain values are gone from the history too.
    assert all(r["email"] is None or len(r["email"]) == 64 for r in rows(db_url, "erp.customers__history"))
    demo.state.update("customers", 5)
    ok(keyed, "sync", "erp.customers")
    source = {k[0]: r for k, r in demo.state.snapshot("customers").items()}
    current = rows(db_url, "erp.customers__history", where="_bridge_valid_to IS NULL")
    assert len(current) == 30
    for r in current:
        e = source[r["customer_id"]]["email"]
        assert r["email"] == (None if e is None else digest(e))
    assert not any("@" in (r["email"] or "") for r in rows(db_url, "erp.customers__history"))


def _dump(db_url: str) -> str:
    """Every row of every table in the database as text (the target, its history, SyncFlow's own)."""
    out: list[str] = []
    with psycopg.connect(db_url) as conn:
        tables = conn.execute(
            "SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) FROM information_schema.tables"
            " WHERE table_schema IN ('erp', 'bridge') AND table_type = 'BASE TABLE'"
        ).fetchall()
        for (t,) in tables:
            out += [str(r[0]) for r in conn.execute(f"SELECT t::text FROM {t} t").fetchall()]  # test-only names
    return "\n".join(out)


def test_the_key_never_appears_in_output_logs_or_the_database(keyed: Cli, db_url: str) -> None:
    configure(keyed, "customers", 'history = true\nhash_columns = ["email"]')
    outputs = [
        ok(keyed, "discover", "--dry-run", "--json"),
        ok(keyed, "discover", "--json"),
        ok(keyed, "sync", "erp.customers", "--json"),
        ok(keyed, "--log-format", "json", "sync", "erp.customers", "--json"),
        ok(keyed, "entity", "show", "erp.customers", "--json"),
        ok(keyed, "runs", "--json"),
    ]
    r = keyed("doctor", "--json")
    outputs.append(r.stdout + r.stderr)
    assert KEY_ENV in r.stdout  # doctor shows the variable's name...
    joined = "\n".join(outputs)
    assert SECRET not in joined  # ...never its value
    assert SECRET not in _dump(db_url)
    assert rows(db_url, "erp.customers")
