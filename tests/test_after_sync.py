"""Post-sync SQL (issue 17): ``after_sync_sql`` per entity and per connector, demo APISmith, real PostgreSQL.

The statement runs after a ``success`` run that changed a row (or after every
success with ``after_sync_when = "always"``), in its own transaction, under
the statement timeout. Its failure is recorded on the run
(``error_details.after_sync``), shown by ``status`` and makes the invocation
exit 1; the rows the run loaded stay.
"""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import pytest

from tests.helpers import Cli, entity_state, max_rv, query, spawn, wait_for

LOG_TABLE = "CREATE TABLE public.hook_log (what text, at timestamptz DEFAULT clock_timestamp())"


@pytest.fixture
def synced(demo_cli: Cli, db_url: str) -> Cli:
    r = demo_cli("discover")
    assert r.exit_code == 0, r.stderr
    query(db_url, LOG_TABLE)
    return demo_cli


def configure(cli: Cli, text: str) -> None:
    cli.config.write_text(cli.config.read_text() + "\n" + text)


def toml_str(statement: str) -> str:
    return json.dumps(statement)  # a TOML basic string


def entity_hook(cli: Cli, slug: str, statement: str, when: str | None = None) -> None:
    extra = f"after_sync_when = {toml_str(when)}\n" if when else ""
    configure(cli, f"[connectors.erp.entities.{slug}]\nafter_sync_sql = {toml_str(statement)}\n{extra}")


def connector_hook(cli: Cli, statement: str, when: str | None = None) -> None:
    text = cli.config.read_text()
    extra = f"after_sync_when = {toml_str(when)}\n" if when else ""
    marker = 'token_env = "SYNCFLOW_TEST_APISMITH_TOKEN"\n'
    assert marker in text
    cli.config.write_text(text.replace(marker, marker + f"after_sync_sql = {toml_str(statement)}\n{extra}", 1))


def log(db_url: str) -> list[str]:
    return [r[0] for r in query(db_url, "SELECT what FROM public.hook_log ORDER BY at")]


def last_run(db_url: str, slug: str) -> dict[str, Any]:
    row = query(
        db_url,
        "SELECT r.status, r.kind, r.error_details FROM bridge.sync_runs r JOIN bridge.entities e"
        " ON e.uid = r.entity_uid WHERE e.slug = %s ORDER BY r.started_at DESC LIMIT 1",
        [slug],
    )[0]
    return {"status": row[0], "kind": row[1], "error_details": row[2] or {}}


def sync_lines(cli: Cli, *args: str) -> tuple[int, list[dict[str, Any]], str]:
    r = cli("sync", *args, "--json")
    document = json.loads(r.stdout)  # one JSON document: an array
    assert isinstance(document, list), r.stdout
    return r.exit_code, document, r.stderr


def test_a_materialized_view_is_refreshed_after_a_sync_that_changed_rows(synced: Cli, db_url: str) -> None:
    query(db_url, "CREATE MATERIALIZED VIEW public.item_count AS SELECT count(*) AS n FROM erp.items")
    entity_hook(synced, "items", "REFRESH MATERIALIZED VIEW public.item_count")
    code, lines, err = sync_lines(synced, "erp.items")
    assert code == 0, err
    assert query(db_url, "SELECT n FROM public.item_count") == [(120,)]
    assert lines[0]["after_sync"]["entity"]["status"] == "ok"
    assert last_run(db_url, "items")["error_details"]["after_sync"]["entity"]["status"] == "ok"


def test_it_runs_only_when_a_row_changed_unless_always(synced: Cli, demo: Any, db_url: str) -> None:
    entity_hook(synced, "items", "INSERT INTO public.hook_log (what) SELECT 'items ' || count(*) FROM erp.items")
    assert synced("sync", "erp.items").exit_code == 0
    assert log(db_url) == ["items 120"]
    code, lines, _ = sync_lines(synced, "erp.items")  # nothing changed at the source
    assert code == 0
    assert log(db_url) == ["items 120"]
    assert lines[0]["after_sync"]["entity"]["status"] == "skipped"
    demo.state.update("items", 2)
    assert synced("sync", "erp.items").exit_code == 0
    assert log(db_url) == ["items 120", "items 120"]

    text = synced.config.read_text()
    section = "[connectors.erp.entities.items]\n"
    synced.config.write_text(text.replace(section, section + 'after_sync_when = "always"\n'))
    assert synced("sync", "erp.items").exit_code == 0  # nothing changed, but always
    assert log(db_url) == ["items 120"] * 3


def test_it_does_not_run_after_a_failed_run(synced: Cli, demo: Any, db_url: str) -> None:
    entity_hook(synced, "orders", "INSERT INTO public.hook_log (what) VALUES ('orders')", when="always")
    demo.state.fail_next(401)
    assert synced("sync", "erp.orders").exit_code == 1
    assert log(db_url) == []
    assert "after_sync" not in last_run(db_url, "orders")["error_details"]


def test_a_failing_statement_is_recorded_on_the_run_shown_by_status_and_exits_1(
    synced: Cli, demo: Any, db_url: str
) -> None:
    entity_hook(synced, "items", "REFRESH MATERIALIZED VIEW public.no_such_view")
    code, lines, err = sync_lines(synced, "erp.items")
    assert code == 1, err
    assert lines[0]["status"] == "success"  # the data is in; only the statement failed
    hook = lines[0]["after_sync"]["entity"]
    assert hook["status"] == "failed"
    assert "no_such_view" in hook["error"]
    assert hook["sqlstate"] == "42P01"
    assert "after_sync_sql of erp.items failed" in err
    assert "no_such_view" in err
    assert query(db_url, "SELECT count(*) FROM erp.items") == [(120,)]
    assert entity_state(db_url, "items")["last_rowversion"] == max_rv(demo, "items")
    stored = last_run(db_url, "items")
    assert stored["status"] == "success"
    assert stored["error_details"]["after_sync"]["entity"]["status"] == "failed"
    r = synced("status", "--json")
    assert r.exit_code == 1
    entry = next(e for e in json.loads(r.stdout) if e["entity"] == "erp.items")
    assert any("after_sync_sql failed" in p and "no_such_view" in p for p in entry["problems"]), entry
    shown = synced("runs", "show", stored_uid(db_url, "items")).stdout
    assert "no_such_view" in shown


def stored_uid(db_url: str, slug: str) -> str:
    return str(
        query(
            db_url,
            "SELECT r.uid::text FROM bridge.sync_runs r JOIN bridge.entities e ON e.uid = r.entity_uid"
            " WHERE e.slug = %s ORDER BY r.started_at DESC LIMIT 1",
            [slug],
        )[0][0]
    )


def test_it_runs_in_its_own_transaction(synced: Cli, db_url: str) -> None:
    entity_hook(synced, "items", "INSERT INTO public.hook_log (what) VALUES ('half'); SELECT 1 / 0")
    code, lines, _ = sync_lines(synced, "erp.items")
    assert code == 1
    assert lines[0]["after_sync"]["entity"]["sqlstate"] == "22012"  # the second statement ran and failed
    assert log(db_url) == []  # the half-done statement is rolled back
    assert query(db_url, "SELECT count(*) FROM erp.items") == [(120,)]  # the run's rows are not


def test_the_statement_is_sent_verbatim(synced: Cli, db_url: str) -> None:
    entity_hook(synced, "items", "INSERT INTO public.hook_log (what) VALUES ('100% {done} %s')")
    assert synced("sync", "erp.items").exit_code == 0
    assert log(db_url) == ["100% {done} %s"]


def test_the_statement_timeout_bounds_it(synced: Cli, db_url: str) -> None:
    synced.config.write_text(
        synced.config.read_text().replace(
            "retry_backoff_seconds = 0\n", "retry_backoff_seconds = 0\nstatement_timeout_seconds = 1\n"
        )
    )
    entity_hook(synced, "orders", "SELECT pg_sleep(30)")
    started = time.monotonic()
    code, lines, _ = sync_lines(synced, "erp.orders")
    assert time.monotonic() - started < 15
    assert code == 1
    assert lines[0]["after_sync"]["entity"]["sqlstate"] == "57014"


def test_sigterm_ends_a_long_statement(synced: Cli, db_url: str) -> None:
    entity_hook(synced, "orders", "SELECT pg_sleep(60)")
    sleeping = "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)'"
    proc = spawn(synced, "sync", "erp.orders")
    try:
        wait_for(lambda: query(db_url, sleeping) == [(1,)])
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 143
    assert time.monotonic() - started < 10
    assert query(db_url, sleeping) == [(0,)]
    run = last_run(db_url, "orders")
    assert run["status"] == "success"  # the rows were in before the statement began
    assert run["error_details"]["after_sync"]["entity"] == {
        "status": "failed",
        "error": "cancelled by a signal",
        "sqlstate": "57014",
        "seconds": run["error_details"]["after_sync"]["entity"]["seconds"],
    }


def test_the_connector_statement_runs_once_after_its_entities(synced: Cli, demo: Any, db_url: str) -> None:
    connector_hook(
        synced,
        "INSERT INTO public.hook_log (what) SELECT 'after ' || count(*) FROM bridge.sync_runs WHERE status = 'success'",
    )
    code, lines, err = sync_lines(synced, "--all", "--workers", "2")
    assert code == 0, err
    assert log(db_url) == ["after 3"]  # once, after all three entities finished
    connector_line = next(line for line in lines if line.get("connector") == "erp" and "entity" not in line)
    assert connector_line["after_sync"]["status"] == "ok"
    for slug in ("items", "customers", "orders"):
        assert last_run(db_url, slug)["error_details"]["after_sync"]["connector"]["status"] == "ok"
    assert synced("sync", "--all", "--force").exit_code == 0  # nothing changed: not run
    assert log(db_url) == ["after 3"]
    demo.state.update("orders", 1)
    assert synced("sync", "--all", "--force").exit_code == 0  # one entity changed a row: run
    assert log(db_url) == ["after 3", "after 9"]  # 3 + 3 + 3 successful runs by then


def test_a_failing_connector_statement_is_recorded_and_exits_1(synced: Cli, db_url: str) -> None:
    connector_hook(synced, "SELECT * FROM public.no_such_table")
    r = synced("sync", "erp.items", "erp.orders")
    assert r.exit_code == 1
    assert "after_sync_sql of connector erp failed" in r.stderr
    assert "no_such_table" in r.stderr
    for slug in ("items", "orders"):
        hook = last_run(db_url, slug)["error_details"]["after_sync"]["connector"]
        assert hook["status"] == "failed"
        assert "no_such_table" in hook["error"]
    r = synced("status", "--json")
    assert r.exit_code == 1
    problems = {e["entity"]: e["problems"] for e in json.loads(r.stdout)}
    assert any("after_sync_sql failed" in p for p in problems["erp.items"])
    assert not any("after_sync_sql" in p for p in problems["erp.customers"])


def test_after_sync_when_is_checked(synced: Cli) -> None:
    entity_hook(synced, "items", "SELECT 1", when="sometimes")
    r = synced("sync", "erp.items")
    assert r.exit_code == 2
    assert "connectors.erp.entities.items.after_sync_when" in r.stderr


def test_connector_show_names_the_statements(synced: Cli) -> None:
    connector_hook(synced, "REFRESH MATERIALIZED VIEW public.all_erp", when="always")
    entity_hook(synced, "items", "REFRESH MATERIALIZED VIEW public.items_mv")
    shown = json.loads(synced("connector", "show", "erp", "--json").stdout)
    assert (shown["after_sync_sql"], shown["after_sync_when"]) == ("REFRESH MATERIALIZED VIEW public.all_erp", "always")
    assert shown["entities"]["items"]["after_sync_sql"] == "REFRESH MATERIALIZED VIEW public.items_mv"
    text = synced("connector", "show", "erp").stdout
    assert "after_sync_sql (always): REFRESH MATERIALIZED VIEW public.all_erp" in text
