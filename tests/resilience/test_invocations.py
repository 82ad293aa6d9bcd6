"""Invocations an operator can trust: bounded waits, failures scoped to their entity, read-only reads.

Each test reproduces an operator's report: a lock held by another session, a
signal while blocked in PostgreSQL, one connector misconfigured, no
configuration file, a tripped delete guard, metrics that cannot be written,
names that look like rich markup, garbage metadata.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from syncflow.claims import LOCK_NAMESPACE
from syncflow.cli import app
from tests.helpers import DEMO_TOKEN, TOKEN_ENV, Cli, query, spawn, wait_for

BOUND = 10.0  # seconds any blocked invocation may take, lock timeouts included


@pytest.fixture
def synced(demo_cli: Cli) -> Cli:
    assert demo_cli("discover").exit_code == 0
    return demo_cli


def with_sync_settings(cli: Cli, text: str) -> None:
    cli.config.write_text(
        cli.config.read_text().replace("retry_backoff_seconds = 0\n", f"retry_backoff_seconds = 0\n{text}")
    )


def finish(proc: subprocess.Popen[str], timeout: float = 30) -> tuple[int, str, str]:
    """The process's outcome; a process that outlives ``timeout`` is killed and fails the test."""
    try:
        out, errtext = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=10)
        raise AssertionError(f"still running after {timeout}s") from None
    return proc.returncode, out, errtext


def timed(proc_args: tuple[Cli, tuple[str, ...]]) -> tuple[int, str, str, float]:
    cli, args = proc_args
    started = time.monotonic()
    code, out, errtext = finish(spawn(cli, *args))
    return code, out, errtext, time.monotonic() - started


# -- 1. every metadata connection has the configured timeouts --------------------------------


def test_a_locked_sync_runs_table_is_named_and_bounded(synced: Cli, db_url: str) -> None:
    with_sync_settings(synced, "lock_timeout_seconds = 0.5\nstatement_timeout_seconds = 2\n")
    with psycopg.connect(db_url) as holder:
        holder.execute("LOCK TABLE bridge.sync_runs IN ACCESS EXCLUSIVE MODE")
        for args in (("status",), ("sync", "--all", "--force")):
            code, _, errtext, took = timed((synced, args))
            assert code == 75, (args, errtext)
            assert "another session holds a lock on bridge.sync_runs" in errtext, errtext
            assert "lost the database connection" not in errtext
            assert took < BOUND
        holder.rollback()
    assert query(db_url, "SELECT count(*) FROM bridge.sync_runs") == [(0,)]


def test_a_lock_timeout_when_a_run_starts_names_the_table(synced: Cli, db_url: str) -> None:
    with_sync_settings(synced, "lock_timeout_seconds = 0.5\n")
    with psycopg.connect(db_url) as holder:
        holder.execute("LOCK TABLE bridge.sync_runs IN SHARE MODE")  # reads go on, inserts wait
        code, _, errtext, took = timed((synced, ("sync", "erp.items")))
        holder.rollback()
    assert code == 75, errtext
    assert "another session holds a lock on bridge.sync_runs" in errtext
    assert "lost the database connection" not in errtext
    assert took < BOUND


def test_a_row_lock_on_connectors_blocks_nobody(synced: Cli, db_url: str) -> None:
    with_sync_settings(synced, "lock_timeout_seconds = 3\nstatement_timeout_seconds = 5\n")
    with psycopg.connect(db_url) as holder:
        holder.execute("SELECT * FROM bridge.connectors FOR UPDATE")
        for args, expected in ((("sync", "--all", "--force"), 0), (("status",), 0)):
            code, _, errtext, took = timed((synced, args))
            assert (code, took < BOUND) == (expected, True), (args, errtext, took)
        holder.rollback()


def test_a_row_lock_on_one_entity_fails_only_that_entity(synced: Cli, db_url: str) -> None:
    with_sync_settings(synced, "lock_timeout_seconds = 0.5\n")
    with psycopg.connect(db_url) as holder:
        holder.execute("SELECT * FROM bridge.entities WHERE slug = 'items' FOR UPDATE")
        code, out, errtext, took = timed((synced, ("sync", "--all", "--force", "--json")))
        holder.rollback()
    assert code == 75, errtext  # nothing failed; one entity must be tried again later
    assert took < BOUND
    lines = {x["entity"]: x for x in json.loads(out)}
    assert {k: v["status"] for k, v in lines.items()} == {
        "erp.items": "error",
        "erp.orders": "success",
        "erp.customers": "success",
    }
    assert "another session holds a lock on bridge.entities" in lines["erp.items"]["error"]
    assert "erp.items: another session holds a lock on bridge.entities" in errtext


def test_a_row_lock_on_a_changed_connector_is_named(synced: Cli, demo: Any, db_url: str) -> None:
    with_sync_settings(synced, "lock_timeout_seconds = 0.5\n")
    synced.config.write_text(synced.config.read_text().replace(f'"{demo.url}"', f'"{demo.url}/"'))
    with psycopg.connect(db_url) as holder:
        holder.execute("SELECT * FROM bridge.connectors FOR UPDATE")
        code, _, errtext, took = timed((synced, ("sync", "--all", "--force")))
        holder.rollback()
    assert code == 75, errtext
    assert "another session holds a lock on bridge.connectors" in errtext
    assert took < BOUND


# -- 2. a signal while blocked in PostgreSQL cancels the query ---------------------------------


@pytest.mark.parametrize(
    ("mode", "signum", "exit_code"),
    [("ACCESS EXCLUSIVE", signal.SIGTERM, 143), ("EXCLUSIVE", signal.SIGINT, 130)],
)
def test_a_signal_while_blocked_on_a_table_lock_cancels_the_run(
    synced: Cli, db_url: str, mode: str, signum: int, exit_code: int
) -> None:
    with_sync_settings(synced, "lock_timeout_seconds = 60\n")
    assert synced("sync", "erp.orders").exit_code == 0
    with psycopg.connect(db_url) as holder:
        holder.execute(f"LOCK TABLE erp.orders IN {mode} MODE")
        proc = spawn(synced, "sync", "erp.orders")
        try:
            wait_for(
                lambda: (
                    query(
                        db_url,
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'syncflow'"
                        " AND datname = current_database()"
                        " AND wait_event_type = 'Lock'",
                    )
                    == [(1,)]
                )
            )
            started = time.monotonic()
            proc.send_signal(signum)
            code, _, errtext = finish(proc, timeout=30)
            took = time.monotonic() - started
        finally:
            if proc.poll() is None:
                proc.kill()
        holder.rollback()
    assert code == exit_code, errtext
    assert took < BOUND, took
    statuses = query(db_url, "SELECT status FROM bridge.sync_runs ORDER BY started_at")
    assert statuses == [("success",), ("cancelled",)]
    assert query(db_url, "SELECT last_sync_status FROM bridge.entities WHERE slug = 'orders'") == [("cancelled",)]
    assert synced("sync", "erp.orders").exit_code == 0  # the claim was released


def test_a_signal_ends_a_wait_for_the_claim(synced: Cli, db_url: str) -> None:
    (uid,) = query(db_url, "SELECT uid::text FROM bridge.entities WHERE slug = 'items'")[0]
    with psycopg.connect(db_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", [LOCK_NAMESPACE, uid])
        proc = spawn(synced, "sync", "erp.items", "--wait")
        try:
            wait_for(
                lambda: (
                    query(
                        db_url,
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'syncflow'"
                        " AND datname = current_database()"
                        " AND wait_event = 'advisory'",
                    )
                    == [(1,)]
                )
            )
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code, _, errtext = finish(proc, timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert code == 143, errtext
    assert time.monotonic() - started < BOUND
    assert query(db_url, "SELECT count(*) FROM bridge.sync_runs") == [(0,)]


def test_wait_timeout_bounds_the_wait_for_a_claim(synced: Cli, db_url: str) -> None:
    (uid,) = query(db_url, "SELECT uid::text FROM bridge.entities WHERE slug = 'items'")[0]
    with psycopg.connect(db_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", [LOCK_NAMESPACE, uid])
        started = time.monotonic()
        r = synced("sync", "erp.items", "--wait-timeout", "0.5")
        took = time.monotonic() - started
    assert r.exit_code == 75, r.stderr
    assert "skipped erp.items: another process is syncing it (waited 0.5s)" in r.stderr
    assert 0.5 <= took < BOUND
    assert query(db_url, "SELECT count(*) FROM bridge.sync_runs") == [(0,)]


# -- 3. one connector's problem fails only that connector's entities -----------------------------


@pytest.mark.parametrize("problem", ["token", "unreachable", "ca_bundle"])
def test_one_broken_connector_does_not_stop_the_others(demo_cli: Cli, demo: Any, db_url: str, problem: str) -> None:
    base = demo_cli.config.read_text()
    crm = f'\n[connectors.crm]\nbase_url = "{demo.url}"\ntoken_env = "CRM_TOKEN"\n'
    demo_cli.config.write_text(base + crm)
    assert demo_cli("discover", env={"CRM_TOKEN": DEMO_TOKEN}).exit_code == 0
    env: dict[str, str] = {"CRM_TOKEN": DEMO_TOKEN}
    expected = {
        "token": "environment variable CRM_TOKEN is not set",
        "unreachable": "127.0.0.1:9",
        "ca_bundle": "cannot load the CA bundle",
    }[problem]
    if problem == "token":
        env = {}
    elif problem == "unreachable":
        demo_cli.config.write_text(base + crm.replace(demo.url, "http://127.0.0.1:9"))
    else:
        demo_cli.config.write_text(base + crm + 'verify_tls = "/nonexistent/ca.pem"\n')
    r = demo_cli("sync", "--all", "--force", "--json", env={"CRM_TOKEN": None, **env})  # type: ignore[dict-item]
    assert r.exit_code == 1, r.stderr
    runs = {x["entity"]: x for x in json.loads(r.stdout)}
    assert {k: v["status"] for k, v in runs.items()} == {
        "erp.customers": "success",
        "erp.items": "success",
        "erp.orders": "success",
        "crm.customers": "failed",
        "crm.items": "failed",
        "crm.orders": "failed",
    }
    assert all(expected in runs[f"crm.{s}"]["error_message"] for s in ("customers", "items", "orders"))
    assert expected in r.stderr
    failed = query(
        db_url,
        "SELECT c.name, e.slug, r.error_message FROM bridge.sync_runs r JOIN bridge.entities e ON e.uid = r.entity_uid"
        " JOIN bridge.connectors c ON c.uid = e.connector_uid WHERE r.status = 'failed' ORDER BY e.slug",
    )
    assert [(c, s) for c, s, _ in failed] == [("crm", "customers"), ("crm", "items"), ("crm", "orders")]
    assert all(expected in m for _, _, m in failed)
    status = {x["entity"]: x for x in json.loads(demo_cli("status", "--json", env=env).stdout)}
    assert status["crm.items"]["last_run_status"] == "failed"
    assert status["erp.items"]["last_run_status"] == "success"


def test_an_entity_removed_during_the_pass_fails_alone(synced: Cli, demo: Any, db_url: str) -> None:
    demo.state.before_page = lambda slug, page, params: time.sleep(0.5) if slug == "customers" else None
    try:
        proc = spawn(synced, "sync", "--all", "--workers", "1", "--json")
        wait_for(lambda: query(db_url, "SELECT count(*) FROM bridge.sync_runs WHERE status = 'running'") == [(1,)])
        query(db_url, "DELETE FROM bridge.entities WHERE slug = 'orders'")  # by hand, while customers syncs
        code, out, errtext = finish(proc)
    finally:
        demo.state.before_page = None
    assert code == 1, errtext
    lines = {x["entity"]: x for x in json.loads(out)}
    assert {k: v["status"] for k, v in lines.items()} == {
        "erp.customers": "success",
        "erp.items": "success",
        "erp.orders": "error",
    }
    assert "no entity 'erp.orders'" in lines["erp.orders"]["error"]


# -- 4. no configuration file ---------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("sync", "--all", "--force"),
        ("status",),
        ("entities",),
        ("discover",),
        ("connector", "list"),
        ("sync", "erp.items"),
    ],
)
def test_no_configuration_file_is_an_error_and_changes_nothing(
    synced: Cli, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...]
) -> None:
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    monkeypatch.chdir(empty)
    before = snapshot(db_url)
    result = CliRunner().invoke(
        app, list(args), env={"SYNCFLOW_DATABASE_URL": db_url, TOKEN_ENV: DEMO_TOKEN, "SYNCFLOW_CONFIG": None}
    )
    assert result.exit_code == 2, result.stderr
    assert str(empty / "syncflow.toml") in result.stderr
    assert "SYNCFLOW_CONFIG" in result.stderr
    assert "--config" in result.stderr
    assert snapshot(db_url) == before
    assert query(db_url, "SELECT bool_and(is_active) FROM bridge.connectors") == [(True,)]


# -- 5. read-only commands write nothing -------------------------------------------------------


def snapshot(db_url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every metadata table with its xmin: any insert, update or delete shows."""
    with psycopg.connect(db_url) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'bridge' ORDER BY tablename"
            ).fetchall()
        ]
        return {
            t: conn.execute(
                psycopg.sql.SQL("SELECT xmin::text, ctid::text FROM {} ORDER BY ctid").format(
                    psycopg.sql.Identifier("bridge", t)
                )
            ).fetchall()
            for t in tables
        }


def test_read_only_commands_write_nothing(synced: Cli, demo: Any, db_url: str) -> None:
    assert synced("entity", "set", "erp.customers", "--history").exit_code == 0
    assert synced("sync", "--all").exit_code == 0
    (customer_id,) = query(db_url, "SELECT min(customer_id) FROM erp.customers")[0]
    (run_uid,) = query(db_url, "SELECT uid::text FROM bridge.sync_runs LIMIT 1")[0]
    # Temptations to write: a run left 'running' by a dead process, and a connector new in the file.
    query(
        db_url,
        "INSERT INTO bridge.sync_runs (entity_uid, kind, status) SELECT uid, 'sync', 'running'"
        " FROM bridge.entities WHERE slug = 'orders'",
    )
    synced.config.write_text(synced.config.read_text() + f'\n[connectors.crm]\nbase_url = "{demo.url}"\n')
    before = snapshot(db_url)
    for args in (
        ("status",),
        ("status", "--json"),
        ("entities",),
        ("entities", "--json"),
        ("entity", "show", "erp.items"),
        ("runs",),
        ("runs", "--json"),
        ("runs", "show", run_uid),
        ("connector", "list"),
        ("connector", "show", "erp"),
        ("db", "status"),
        ("history", "erp.customers", "--key", f"customer_id={customer_id}"),
        ("discover", "--dry-run"),
        ("discover", "erp", "--dry-run", "--json"),
    ):
        r = synced(*args)
        assert r.exit_code in (0, 1), (args, r.stderr)
        assert snapshot(db_url) == before, args
    assert query(db_url, "SELECT count(*) FROM bridge.connectors") == [(1,)]
    # The dead run is shown for what it is, without being marked.
    status = {x["entity"]: x for x in json.loads(synced("status", "--json").stdout)}
    assert status["erp.orders"]["last_run_status"] == "abandoned"
    assert query(db_url, "SELECT count(*) FROM bridge.sync_runs WHERE status = 'running'") == [(1,)]


# -- 6. a tripped delete guard is visible ------------------------------------------------------


def test_a_held_delete_guard_shows_in_status_metrics_and_runs(synced: Cli, demo: Any, tmp_path: Path) -> None:
    assert synced("sync", "--all").exit_code == 0
    demo.state.delete("orders", 25)  # 25 of 40: more than the allowed half
    prom = tmp_path / "m.prom"
    r = synced("sync", "erp.orders", "--metrics-file", str(prom))
    assert r.exit_code == 0, r.stderr
    assert "deleted nothing" in r.stderr
    families = {f.name: f for f in text_string_to_metric_families(prom.read_text())}
    held = {s.labels["entity"]: s.value for s in families["syncflow_delete_guard_held"].samples}
    assert held == {"erp.orders": 25}
    r = synced("status", "--json")
    assert r.exit_code == 1
    items = next(x for x in json.loads(r.stdout) if x["entity"] == "erp.orders")
    assert any(p.startswith("attention: delete guard held back 25 deletes (") for p in items["problems"])
    assert items["healthy"] is False
    text = synced("status")
    assert text.exit_code == 1
    assert "attention: delete guard held back 25 deletes" in text.stdout
    run = json.loads(synced("runs", "erp.orders", "--json").stdout)[0]
    assert run["error_details"]["delete_guard"]["would_delete"] == 25
    assert any("25 of 40" in reason for reason in run["error_details"]["delete_guard"]["reasons"])
    # A sync that is allowed to delete clears the attention.
    assert synced("sync", "erp.orders", "--max-delete-fraction", "1").exit_code == 0
    assert synced("status").exit_code == 0


# -- 7. metrics never change the outcome -------------------------------------------------------


def test_metrics_failures_are_warnings(synced: Cli, tmp_path: Path) -> None:
    r = synced("sync", "erp.items", "--metrics-file", str(tmp_path / "missing-dir" / "m.prom"))
    assert r.exit_code == 0, r.stderr
    assert "warning: --metrics-file" in r.stderr
    assert "missing-dir" in r.stderr
    r = synced("--log-format", "json", "sync", "erp.orders", "--pushgateway", "http://127.0.0.1:9")
    assert r.exit_code == 0, r.stderr
    records = [json.loads(line) for line in r.stderr.splitlines()]
    warned = [x for x in records if x["level"] == "warning" and "--pushgateway" in x["message"]]
    assert len(warned) == 1
    assert warned[0]["event"] == "metrics_failed"


def test_metrics_file_carries_every_family_when_nothing_is_due(synced: Cli, tmp_path: Path) -> None:
    full, idle = tmp_path / "full.prom", tmp_path / "idle.prom"
    assert synced("sync", "--all", "--metrics-file", str(full)).exit_code == 0
    r = synced("sync", "--all", "--metrics-file", str(idle))
    assert (r.exit_code, "nothing is due" in r.stderr) == (0, True)
    names = {f.name for f in text_string_to_metric_families(full.read_text())}
    assert "syncflow_delete_guard_held" in names
    assert {f.name for f in text_string_to_metric_families(idle.read_text())} == names


# -- 8. names that look like rich markup -------------------------------------------------------


MARKUP_API = {
    "slug": "inv[/x]",
    "name": "[bold]Invoices[/bold]",
    "delta_strategy": "full",
    "columns": [
        {"name": "ID", "output_alias": "[red]id", "data_type": "NUMBER(9)", "is_business_key": True},
        {"name": "VAL", "output_alias": "val[/]", "data_type": "VARCHAR2(20)"},
    ],
}


def test_markup_like_names_are_printed_verbatim(demo_cli: Cli, demo: Any) -> None:
    demo.state.set_api("inv[/x]", MARKUP_API)
    demo.state.put_rows("inv[/x]", [{"[red]id": 1, "val[/]": "[b]x[/b]"}])
    r = demo_cli("discover")
    assert r.exit_code == 0, r.stderr
    assert "erp.inv[/x]" in r.stdout
    assert demo_cli("entity", "set", "erp.inv[/x]", "--history").exit_code == 0
    r = demo_cli("sync", "erp.inv[/x]", "--json")
    assert r.exit_code == 0, r.stderr
    run_uid = json.loads(r.stdout)[0]["uid"]
    shown = json.loads(demo_cli("entity", "show", "erp.inv[/x]", "--json").stdout)
    key = next(c["pg_name"] for c in shown["columns"] if c["is_business_key"])
    for args in (
        ("entities",),
        ("status",),
        ("runs",),
        ("runs", "show", run_uid),
        ("entity", "show", "erp.inv[/x]"),
        ("history", "erp.inv[/x]", "--key", f"{key}=1"),
        ("discover",),
    ):
        r = demo_cli(*args)
        assert r.exit_code == 0, (args, r.stderr)
        assert "inv[/x]" in r.stdout, args
    assert "[red]id" in demo_cli("entity", "show", "erp.inv[/x]").stdout
    assert "[b]x[/b]" in demo_cli("history", "erp.inv[/x]", "--key", f"{key}=1").stdout


# -- 9. smaller things -----------------------------------------------------------------------


def test_a_skipped_entity_is_reported_once(synced: Cli, db_url: str) -> None:
    (uid,) = query(db_url, "SELECT uid::text FROM bridge.entities WHERE slug = 'items'")[0]
    with psycopg.connect(db_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", [LOCK_NAMESPACE, uid])
        text = synced("sync", "erp.items")
        js = synced("--log-format", "json", "sync", "erp.items")
    assert text.exit_code == js.exit_code == 75
    assert text.stderr.count("another process is syncing it") == 1, text.stderr
    assert [json.loads(x)["event"] for x in js.stderr.splitlines()].count("skipped") == 1, js.stderr


def test_one_bad_api_is_skipped_by_name_and_the_rest_discovered(demo_cli: Cli, demo: Any, db_url: str) -> None:
    base = {
        "delta_strategy": "full",
        "columns": [{"name": "ID", "output_alias": "id", "data_type": "NUMBER(9)", "is_business_key": True}],
    }
    demo.state.set_api("nul", {**base, "slug": "inv\x00oice"})
    demo.state.set_api("long", {**base, "slug": "long", "name": "N" * 250})
    demo.state.set_api("nulcol", {**base, "slug": "nulcol", "description": "a\x00b"})
    r = demo_cli("discover")
    assert r.exit_code == 1, r.stderr
    assert "inv\\x00oice" in r.stderr
    assert "NUL" in r.stderr
    slugs = {x[0] for x in query(db_url, "SELECT slug FROM bridge.entities")}
    assert slugs == {"items", "customers", "orders", "long", "nulcol"}
    assert query(db_url, "SELECT length(api_name) FROM bridge.entities WHERE slug = 'long'") == [(200,)]


@pytest.mark.parametrize("garbage", ['"garbage"', "[1, 2]", '[{"x": 1}]', '[{"api_name": 5, "pg_name": null}]', "null"])
def test_garbage_metadata_fails_that_entity_only(synced: Cli, db_url: str, garbage: str) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute("ALTER TABLE bridge.entities DROP CONSTRAINT IF EXISTS entities_columns_check")
        conn.execute("ALTER TABLE bridge.entities ALTER COLUMN columns DROP NOT NULL")
        conn.execute("UPDATE bridge.entities SET columns = %s::jsonb WHERE slug = 'items'", [garbage])
    r = synced("sync", "--all", "--force", "--json")
    assert r.exit_code == 1, r.stderr
    runs = {x["entity"]: x for x in json.loads(r.stdout)}
    assert runs["erp.orders"]["status"] == runs["erp.customers"]["status"] == "success"
    assert runs["erp.items"]["status"] == "failed"
    assert "metadata" in runs["erp.items"]["error_message"]
    assert "discover" in runs["erp.items"]["error_message"]
    for args in (("status",), ("entities",), ("entity", "show", "erp.items")):
        r = synced(*args)
        assert r.exit_code in (0, 1), (args, r.stderr)
    assert synced("discover").exit_code == 0  # discovery rebuilds the metadata
    assert synced("sync", "erp.items").exit_code == 0


def test_garbage_run_details_do_not_break_status(synced: Cli, db_url: str) -> None:
    assert synced("sync", "erp.orders").exit_code == 0
    query(db_url, """UPDATE bridge.sync_runs SET error_details = '{"delete_guard": {"would_delete": "lots"}}'""")
    r = synced("status", "--json")
    assert r.exit_code == 0, r.stderr
    assert {x["entity"]: x["delete_guard_held"] for x in json.loads(r.stdout)}["erp.orders"] == 0


@pytest.mark.parametrize("command", ["status", "entities"])
def test_an_unknown_connector_filter_is_a_usage_error(synced: Cli, command: str) -> None:
    r = synced(command, "--connector", "nope")
    assert r.exit_code == 2, r.stdout
    assert "no connector named 'nope' (configured: erp)" in r.stderr


@pytest.mark.parametrize("args", [("sync", "--all", "--force"), ("sync", "erp.orders")])
def test_a_signal_while_waiting_for_a_lock_on_syncflow_tables_exits_at_once(
    synced: Cli, db_url: str, args: tuple[str, ...]
) -> None:
    with_sync_settings(synced, "lock_timeout_seconds = 60\n")
    assert synced("sync", "erp.orders").exit_code == 0
    with psycopg.connect(db_url) as holder:
        holder.execute("LOCK TABLE bridge.sync_runs IN ACCESS EXCLUSIVE MODE")
        proc = spawn(synced, *args)
        try:
            wait_for(
                lambda: (
                    query(
                        db_url,
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'syncflow'"
                        " AND datname = current_database() AND wait_event_type = 'Lock'",
                    )
                    == [(1,)]
                )
            )
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code, _, errtext = finish(proc, timeout=30)
            took = time.monotonic() - started
        finally:
            if proc.poll() is None:
                proc.kill()
        holder.rollback()
    assert code == 143, errtext
    assert took < BOUND, took
    assert "Traceback" not in errtext


def test_a_lock_on_the_target_table_is_named(synced: Cli, db_url: str) -> None:
    with_sync_settings(synced, "lock_timeout_seconds = 1\n")
    assert synced("sync", "erp.orders").exit_code == 0
    with psycopg.connect(db_url) as holder:
        holder.execute("LOCK TABLE erp.orders IN ACCESS EXCLUSIVE MODE")
        r = synced("sync", "erp.orders", "--json")
        holder.rollback()
    assert r.exit_code == 1, r.stderr
    (run,) = json.loads(r.stdout)
    assert run["status"] == "failed"
    assert "another session holds a lock on erp.orders" in run["error_message"], run["error_message"]


def test_a_body_echoing_the_token_is_redacted_everywhere(synced: Cli, demo: Any, db_url: str) -> None:
    demo.state.fail_next(200, body=f"<html>debug: Authorization: Bearer {DEMO_TOKEN}</html>".encode())
    r = synced("sync", "erp.orders", "--json")
    assert r.exit_code == 1
    shown = synced("runs", "--json").stdout + synced("runs", "show", json.loads(r.stdout)[0]["uid"]).stdout
    stored = query(db_url, "SELECT error_message, error_details::text FROM bridge.sync_runs")
    for text in (r.stdout, r.stderr, shown, repr(stored)):
        assert DEMO_TOKEN not in text
    assert "debug: Authorization: Bearer" in r.stdout  # the rest of the preview is kept


def test_status_names_rejects_as_the_reason_the_guard_held(synced: Cli, demo: Any, db_url: str) -> None:
    assert synced("sync", "erp.orders").exit_code == 0
    keys = list(demo.state.snapshot("orders"))[:2]
    demo.state.put_rows(
        "orders", [{"order_no": k[0], "line_no": k[1], "status": "far too long a status"} for k in keys]
    )
    assert synced("sync", "erp.orders").exit_code == 1  # partial: 2 rejected
    r = synced("status", "--json")
    entry = next(e for e in json.loads(r.stdout) if e["entity"] == "erp.orders")
    assert any("rejected" in p for p in entry["problems"]), entry["problems"]
