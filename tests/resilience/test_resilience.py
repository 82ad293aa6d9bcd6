"""Resilience: the world misbehaves, SyncFlow keeps working and loses nothing.

Every case asserts the outcome the protocol prescribes (retried and
succeeded; failed with a named error and the documented exit code; rows
rejected with their reasons) and then the invariant: after the next
successful run the target table equals the source — no row lost, none
duplicated, no checkpoint ahead of the rows stored.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from demo_apismith import DROP, DemoServer, DemoState
from tests.helpers import DEMO_TOKEN, TOKEN_ENV, Cli, max_rv, rows, spawn

SLOW_CONFIG = "[sync]\nretry_backoff_seconds = 0\nhttp_timeout_seconds = 0.5\n\n"


@pytest.fixture
def synced(demo_cli: Cli) -> Cli:
    assert demo_cli("discover").exit_code == 0
    return demo_cli


def sync(cli: Cli, ref: str, *extra: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any], str]:
    r = cli("sync", ref, "--json", *extra, env=env)
    lines = json.loads(r.stdout) if r.stdout.strip() else []
    return r.exit_code, (lines[0] if lines else {}), r.stderr


def converged(cli: Cli, demo: Any, db_url: str, slug: str) -> None:
    """The invariant: one more clean run, then the table equals the source."""
    code, run, stderr = sync(cli, f"erp.{slug}")
    assert (code, run["status"]) == (0, "success"), stderr
    source = demo.state.snapshot(slug)
    ent = demo.state.entities[slug]
    keys = ent.key_columns
    stored = rows(db_url, f"erp.{slug}", where="NOT _bridge_deleted")
    stored_keys = [tuple(r[k] for k in keys) for r in stored]
    assert len(stored_keys) == len(set(stored_keys)), "duplicated rows"
    assert set(stored_keys) == set(source), "rows lost or left over"
    if ent.api.get("delta_strategy") == "rowversion":
        checkpoint = rows(db_url, "bridge.entities", "last_rowversion", f"slug = '{slug}'")[0]["last_rowversion"]
        stored_max = max(int(r["_bridge_rowversion"]) for r in rows(db_url, f"erp.{slug}"))
        assert int(checkpoint) <= stored_max, "checkpoint ahead of the rows stored"
        assert checkpoint == max_rv(demo, slug)


# -- the source misbehaves ------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503])
def test_bursts_of_server_errors_are_retried(synced: Cli, demo: Any, db_url: str, status: int) -> None:
    demo.state.fail_next(status, count=2)
    code, run, _ = sync(synced, "erp.items")
    assert (code, run["status"], run["http_retries"]) == (0, "success", 2)
    converged(synced, demo, db_url, "items")


@pytest.mark.parametrize("retry_after", ["1", "HTTP-DATE"])
def test_429_waits_for_retry_after(synced: Cli, demo: Any, db_url: str, retry_after: str) -> None:
    from email.utils import formatdate

    value = formatdate(time.time() + 2, usegmt=True) if retry_after == "HTTP-DATE" else retry_after
    demo.state.fail_next(429, headers={"Retry-After": value})
    started = time.monotonic()
    code, run, _ = sync(synced, "erp.customers")
    assert (code, run["status"], run["http_retries"]) == (0, "success", 1)
    assert time.monotonic() - started >= 0.5  # it did wait
    converged(synced, demo, db_url, "customers")


def test_slower_than_the_timeout(synced: Cli, demo: Any, db_url: str) -> None:
    synced.config.write_text(SLOW_CONFIG + synced.config.read_text().split("\n\n", 1)[1])
    slow = {"n": 0}

    def sleepy(slug: str, page: int, params: dict[str, str]) -> None:
        if slug == "orders" and slow["n"] < 1:
            slow["n"] += 1
            time.sleep(1.2)

    demo.state.before_page = sleepy
    code, run, _ = sync(synced, "erp.orders")
    assert (code, run["status"], run["http_retries"]) == (0, "success", 1)  # timed out once, retried
    demo.state.before_page = lambda *a: time.sleep(1.2)
    code, run, _ = sync(synced, "erp.orders")
    demo.state.before_page = None
    assert (code, run["status"]) == (1, "failed")
    assert "timed out after 0.5 s" in run["error_message"]
    converged(synced, demo, db_url, "orders")


def test_connection_dropped_mid_body(synced: Cli, demo: Any, db_url: str) -> None:
    demo.state.fail_next(DROP, body=b'{"rows": [{"data": {')
    code, run, _ = sync(synced, "erp.items")
    assert (code, run["status"], run["http_retries"]) == (0, "success", 1)
    demo.state.fail_next(DROP, count=3)
    code, run, _ = sync(synced, "erp.orders")
    assert (code, run["status"]) == (1, "failed")
    assert "connection failed" in run["error_message"]
    converged(synced, demo, db_url, "orders")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"rows": [{"data": {"item_number": "P1"', "not JSON"),
        (b"<!DOCTYPE html><html><body>502 Bad Gateway</body></html>", "not JSON"),
        (b'{"data": {"items": []}}', "wrong shape"),
        (b'{"rows": [1, 2, 3]}', "wrong shape"),
    ],
    ids=["truncated-json", "html-200", "wrong-envelope", "rows-not-objects"],
)
def test_broken_bodies_fail_with_a_preview_and_no_checkpoint(
    synced: Cli, demo: Any, db_url: str, body: bytes, message: str
) -> None:
    assert sync(synced, "erp.items")[0] == 0
    checkpoint = rows(db_url, "bridge.entities", "last_rowversion", "slug = 'items'")
    demo.state.update("items", 5)
    demo.state.fail_next(200, body=body)
    code, run, stderr = sync(synced, "erp.items")
    assert (code, run["status"]) == (1, "failed")
    assert message in run["error_message"]
    assert body[:20].decode() in run["error_message"]
    assert "Traceback" not in stderr
    assert rows(db_url, "bridge.entities", "last_rowversion", "slug = 'items'") == checkpoint
    converged(synced, demo, db_url, "items")


def test_duplicate_keys_within_and_across_pages(synced: Cli, demo: Any, db_url: str) -> None:
    assert sync(synced, "erp.customers")[0] == 0
    dup = {
        "rows": [
            {"data": {"customer_id": 1, "name": "first"}},
            {"data": {"customer_id": 1, "name": "second"}},
            {"data": {"customer_id": 2, "name": "x"}},
        ],
        "total": 3,
        "has_more": True,
    }
    dup2 = {"rows": [{"data": {"customer_id": 2, "name": "again"}}], "total": 3, "has_more": False}
    for _ in range(2):  # the same answer twice: the confirming second read agrees with the first
        demo.state.fail_next(200, body=json.dumps(dup).encode())
        demo.state.fail_next(200, body=json.dumps(dup2).encode())
    code, run, stderr = sync(synced, "erp.customers")
    assert (code, run["status"], run["records_deleted"]) == (0, "success", 0)
    assert "deleted nothing" in stderr
    assert "fewer distinct keys arrived (2)" in stderr
    names = {r["customer_id"]: r["name"] for r in rows(db_url, "erp.customers", "customer_id, name")}
    assert names[1] == "second"
    assert names[2] == "again"
    converged(synced, demo, db_url, "customers")


def test_null_keys_and_missing_or_unknown_columns(synced: Cli, demo: Any, db_url: str) -> None:
    assert sync(synced, "erp.orders")[0] == 0
    demo.state.put_rows("orders", [{"order_no": "SOX", "line_no": 1, "surprise": "new column"}])  # missing + unknown
    page = {
        "rows": [{"data": {"order_no": None, "line_no": 1}}, {"data": {"order_no": "SOY", "line_no": 2}}],
        "total": 2,
        "has_more": False,
    }
    demo.state.fail_next(200, body=json.dumps(page).encode())
    code, run, _ = sync(synced, "erp.orders")
    assert (code, run["status"], run["records_rejected"]) == (1, "partial", 1)
    code, run, stderr = sync(synced, "erp.orders")
    assert code == 0
    assert "columns not in the metadata" in stderr
    assert "surprise" in stderr
    assert rows(db_url, "erp.orders", "quantity", "order_no = 'SOX'") == [{"quantity": None}]
    converged(synced, demo, db_url, "orders")


def test_row_versions_going_backwards(synced: Cli, demo: Any, db_url: str) -> None:
    assert sync(synced, "erp.items")[0] == 0
    before = rows(db_url, "bridge.entities", "last_rowversion", "slug = 'items'")[0]["last_rowversion"]
    # The source restores a row with an older version: an incremental sync cannot see it.
    demo.state.put_rows("items", [{"item_number": "P00000001", "category": "restored"}], version=1)
    code, run, _ = sync(synced, "erp.items")
    # Only the checkpoint's own version is read again (unchanged, not written); version 1 stays unseen.
    assert (code, run["records_inserted"], run["records_updated"]) == (0, 0, 0)
    assert rows(db_url, "erp.items", "category", "item_number = 'P00000001'") != [{"category": "restored"}]
    assert rows(db_url, "bridge.entities", "last_rowversion", "slug = 'items'")[0]["last_rowversion"] == before
    assert synced("full-refresh", "erp.items").exit_code == 0  # the documented remedy
    assert rows(db_url, "erp.items", "category", "item_number = 'P00000001'") == [{"category": "restored"}]
    converged(synced, demo, db_url, "items")


def test_server_caps_the_page_size(cli: Cli, db_url: str) -> None:
    state = DemoState({"items": 95, "orders": 33}, token=DEMO_TOKEN, max_page_size=7)
    with DemoServer(state) as server:
        cli.config.write_text(f'[connectors.erp]\nbase_url = "{server.url}"\ntoken_env = "{TOKEN_ENV}"\n')
        assert cli("discover").exit_code == 0
        for slug in ("items", "orders"):
            code, run, _ = sync(cli, f"erp.{slug}")
            assert code == 0
            assert run["records_inserted"] == len(state.entities[slug].rows)
            converged(cli, server, db_url, slug)


def test_vanished_entity(synced: Cli, demo: Any, db_url: str) -> None:
    api = demo.state.entities.pop("orders")
    code, run, _ = sync(synced, "erp.orders")
    assert (code, run["status"]) == (1, "failed")
    assert "gone at the source" in run["error_message"]
    demo.state.entities["orders"] = api
    converged(synced, demo, db_url, "orders")


# -- the database misbehaves ----------------------------------------------------------------


def test_connection_lost_mid_sync(synced: Cli, demo: Any, db_url: str) -> None:
    synced.config.write_text(synced.config.read_text() + "\n[connectors.erp.entities.items]\npage_size = 10\n")
    killed: list[int] = []
    calls = {"n": 0}

    def kill_backend(slug: str, page: int, params: dict[str, str]) -> None:
        calls["n"] += 1
        if slug == "items" and calls["n"] == 5 and not killed:
            with psycopg.connect(db_url, autocommit=True) as conn:
                found = conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'syncflow'"
                    " AND datname = current_database()"
                ).fetchall()
                killed.append(len(found))

    demo.state.before_page = kill_backend
    code, run, _ = sync(synced, "erp.items")
    demo.state.before_page = None
    assert killed == [1]
    assert (code, run["status"]) == (1, "failed")
    assert "database error" in run["error_message"]
    assert rows(db_url, "bridge.entities", "last_rowversion", "slug = 'items'") == [{"last_rowversion": None}]
    converged(synced, demo, db_url, "items")


def test_lock_held_by_someone_else_fails_cleanly(synced: Cli, demo: Any, db_url: str) -> None:
    synced.config.write_text(
        synced.config.read_text().replace(
            "retry_backoff_seconds = 0\n", "retry_backoff_seconds = 0\nlock_timeout_seconds = 0.5\n"
        )
    )
    with psycopg.connect(db_url) as holder:
        holder.execute("LOCK TABLE erp.customers IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        code, run, _ = sync(synced, "erp.customers")
        assert time.monotonic() - started < 10
        holder.rollback()
    assert (code, run["status"]) == (1, "failed")
    assert "another session holds a lock on erp.customers" in run["error_message"]
    converged(synced, demo, db_url, "customers")


def test_statement_timeout_fails_cleanly(synced: Cli, demo: Any, db_url: str) -> None:
    synced.config.write_text(
        synced.config.read_text().replace(
            "retry_backoff_seconds = 0\n", "retry_backoff_seconds = 0\nstatement_timeout_seconds = 0.2\n"
        )
    )
    with psycopg.connect(db_url) as holder:
        holder.execute("LOCK TABLE erp.orders IN EXCLUSIVE MODE")  # the merge waits until the timeout
        code, run, _ = sync(synced, "erp.orders")
        holder.rollback()
    assert (code, run["status"]) == (1, "failed")
    assert "statement timeout" in run["error_message"]
    converged(synced, demo, db_url, "orders")


# -- secrets and transport ------------------------------------------------------------------


def test_token_never_leaks(synced: Cli, demo: Any, db_url: str, tmp_path: Path) -> None:
    outputs = []
    demo.state.fail_next(401)
    for args in (
        ("sync", "erp.items", "--json"),
        ("--log-format", "json", "sync", "--all", "--json"),
        ("runs", "--json"),
        ("status", "--json"),
        ("connector", "show", "erp", "--json"),
        ("connector", "test", "erp", "--json"),
    ):
        r = synced(*args)
        outputs += [r.stdout, r.stderr]
    r = synced("sync", "erp.orders", "--metrics-file", str(tmp_path / "m.prom"))
    outputs += [r.stdout, r.stderr, (tmp_path / "m.prom").read_text()]
    with psycopg.connect(db_url) as conn:
        history = conn.execute("SELECT row_to_json(r)::text FROM bridge.sync_runs r").fetchall()
        meta = conn.execute("SELECT row_to_json(c)::text FROM bridge.connectors c").fetchall()
    outputs += [h[0] for h in history + meta]
    assert not [o for o in outputs if DEMO_TOKEN in o]
    # The process list: a running sync's command line and environment names, never the token's value.
    demo.state.before_page = lambda *a: time.sleep(0.3)
    proc = spawn(synced, "sync", "erp.items")
    time.sleep(1.0)
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    proc.communicate(timeout=60)
    demo.state.before_page = None
    assert "syncflow" in ps
    assert DEMO_TOKEN not in ps


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[str, str]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


@pytest.fixture
def tls_demo(self_signed: tuple[str, str]) -> Iterator[DemoServer]:
    with DemoServer(DemoState({"customers": 12}, token=DEMO_TOKEN), tls=self_signed) as server:
        yield server


def test_tls_verified_by_default_and_trusted_with_its_ca(
    cli: Cli, db_url: str, tls_demo: DemoServer, self_signed: tuple[str, str]
) -> None:
    assert tls_demo.url.startswith("https://")
    cli.config.write_text(f'[connectors.erp]\nbase_url = "{tls_demo.url}"\ntoken_env = "{TOKEN_ENV}"\n')
    r = cli("discover")
    assert r.exit_code == 1
    assert "TLS error" in r.stderr
    assert "CERTIFICATE_VERIFY_FAILED" in r.stderr
    cli.config.write_text(cli.config.read_text() + f'verify_tls = "{self_signed[0]}"\n')
    assert cli("discover").exit_code == 0
    code, run, _ = sync(cli, "erp.customers")
    assert (code, run["records_inserted"]) == (0, 12)
    converged(cli, tls_demo, db_url, "customers")


def test_hostile_metadata_does_not_hurt_other_entities(synced: Cli, demo: Any, db_url: str) -> None:
    demo.state.set_api(
        "wide",
        {
            "slug": "wide",
            "columns": [{"name": "id", "is_business_key": True}, *({"name": f"c{i}"} for i in range(1700))],
        },
    )
    demo.state.set_api(
        "sql",
        {
            "slug": "x; DROP TABLE erp.items; --",
            "columns": [
                {"name": "'); DELETE FROM bridge.entities; --", "is_business_key": True, "data_type": "garbage(type"},
                {"name": "é" * 40},
                {"name": "é" * 41},
            ],
        },
    )
    r = synced("discover")
    assert r.exit_code == 1  # the 1700-column API failed, by name
    assert "erp.wide" in r.stdout
    assert "at most 1600 columns" in r.stdout
    converged(synced, demo, db_url, "items")
