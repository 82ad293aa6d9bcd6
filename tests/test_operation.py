"""Cron-grade operation: concurrent processes, claims, crash recovery, signals, status, metrics, logs.

These tests run the real ``syncflow`` command in subprocesses against the demo
APISmith served from this process.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from syncflow.claims import LOCK_NAMESPACE
from tests.helpers import DEMO_TOKEN, TOKEN_ENV, Cli, query, spawn, wait_for


def wide_demo(demo: Any, n: int = 10, rows: int = 60) -> None:
    for i in range(n):
        slug = f"e{i}"
        demo.state.set_api(
            slug,
            {
                "slug": slug,
                "delta_strategy": "full",
                "columns": [
                    {"name": "ID", "output_alias": "id", "data_type": "NUMBER(9)", "is_business_key": True},
                    {"name": "VAL", "output_alias": "val", "data_type": "VARCHAR2(20)"},
                ],
            },
        )
        demo.state.put_rows(slug, [{"id": j, "val": f"{slug}-{j}"} for j in range(rows)])


@pytest.fixture
def slow_pages(demo: Any) -> Iterator[None]:
    def slow(slug: str, page: int, params: dict[str, str]) -> None:
        if slug == "items":
            time.sleep(0.15)

    demo.state.before_page = slow
    yield
    demo.state.before_page = None


def test_two_concurrent_sync_all_processes_sync_each_entity_once(demo_cli: Cli, demo: Any, db_url: str) -> None:
    wide_demo(demo)
    assert demo_cli("discover").exit_code == 0

    def slow(slug: str, page: int, params: dict[str, str]) -> None:
        time.sleep(0.3)  # the two processes really overlap, even on a slow machine

    demo.state.before_page = slow
    procs = [spawn(demo_cli, "sync", "--all", "--force", "--json", "--workers", "2") for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    demo.state.before_page = None
    for p, (_out, errtext) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, errtext
    synced: list[str] = []
    for out, _ in outputs:
        for item in json.loads(out):
            if item["status"] != "skipped":
                assert item["status"] == "success"
                synced.append(item["entity"])
    expected = sorted([f"erp.e{i}" for i in range(10)] + ["erp.customers", "erp.items", "erp.orders"])
    assert sorted(synced) == expected  # every entity exactly once across both processes
    counts = query(
        db_url,
        "SELECT e.slug, count(*) FROM bridge.sync_runs r JOIN bridge.entities e"
        " ON e.uid = r.entity_uid GROUP BY e.slug",
    )
    assert all(n == 1 for _, n in counts)
    assert len(counts) == 13
    for i in range(10):
        assert query(db_url, f"SELECT count(*), count(DISTINCT id) FROM erp.e{i}") == [(60, 60)]


def start_slow_items_sync(cli: Cli, demo: Any, db_url: str) -> subprocess.Popen[str]:
    """A sync of 520 items in pages of 20 (slowed by ``slow_pages``), caught while it runs."""
    demo.state.insert("items", 400)
    cli.config.write_text(cli.config.read_text() + "\n[connectors.erp.entities.items]\npage_size = 20\n")
    assert cli("discover").exit_code == 0
    proc = spawn(cli, "sync", "erp.items")
    wait_for(lambda: query(db_url, "SELECT count(*) FROM bridge.sync_runs WHERE status = 'running'") == [(1,)])
    time.sleep(0.5)
    return proc


def test_sigkill_leaves_an_abandoned_run_and_the_next_run_completes(
    demo_cli: Cli, demo: Any, db_url: str, slow_pages: None
) -> None:
    proc = start_slow_items_sync(demo_cli, demo, db_url)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    assert query(db_url, "SELECT last_rowversion FROM bridge.entities WHERE slug = 'items'") == [(None,)]
    # `runs` (read-only) shows the dead process's run as abandoned, as `status` does.
    wait_for(lambda: json.loads(demo_cli("runs", "--json").stdout)[0]["status"] == "abandoned")
    demo.state.before_page = None
    r = demo_cli("sync", "erp.items", "--json")
    assert r.exit_code == 0, r.stderr
    statuses = query(db_url, "SELECT status FROM bridge.sync_runs ORDER BY started_at")
    assert statuses == [("abandoned",), ("success",)]
    assert "marked 1 run(s) left running by a dead process as abandoned" in r.stderr
    assert query(db_url, "SELECT count(*) FROM erp.items") == [(520,)]


def test_sigterm_cancels_the_run_and_exits_143(demo_cli: Cli, demo: Any, db_url: str, slow_pages: None) -> None:
    proc = start_slow_items_sync(demo_cli, demo, db_url)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, errtext = proc.communicate(timeout=20)
    assert proc.returncode == 143, errtext
    assert time.monotonic() - started < 5
    assert query(db_url, "SELECT status FROM bridge.sync_runs") == [("cancelled",)]
    # Consistent: no half batch, checkpoint untouched, claim released so the next run goes ahead.
    assert query(db_url, "SELECT count(*) FROM erp.items") == [(0,)]
    assert query(db_url, "SELECT last_rowversion, last_sync_status FROM bridge.entities WHERE slug = 'items'") == [
        (None, "cancelled")
    ]
    demo.state.before_page = None
    assert demo_cli("sync", "erp.items").exit_code == 0
    assert query(db_url, "SELECT count(*) FROM erp.items") == [(520,)]


def test_exit_codes_when_another_process_holds_the_claim(demo_cli: Cli, db_url: str) -> None:
    assert demo_cli("discover").exit_code == 0
    (uid,) = query(db_url, "SELECT uid::text FROM bridge.entities WHERE slug = 'items'")[0]
    with psycopg.connect(db_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", [LOCK_NAMESPACE, uid])
        r = demo_cli("sync", "erp.items")
        assert r.exit_code == 75
        assert "skipped erp.items: another process is syncing it" in r.stderr
        r = demo_cli("sync", "--all", "--json")
        assert r.exit_code == 0  # sharing work is normal under --all
        statuses = {x["entity"]: x["status"] for x in json.loads(r.stdout)}
        assert statuses == {"erp.items": "skipped", "erp.orders": "success", "erp.customers": "success"}
        proc = spawn(demo_cli, "sync", "erp.items", "--wait", "--json")
        time.sleep(1.0)
        assert proc.poll() is None  # still waiting for the claim
        holder.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", [LOCK_NAMESPACE, uid])
        out, errtext = proc.communicate(timeout=60)
    assert proc.returncode == 0, errtext
    assert [x["status"] for x in json.loads(out)] == ["success"]


def test_exit_code_matrix(demo_cli: Cli, demo: Any, db_url: str) -> None:
    assert demo_cli("discover").exit_code == 0
    assert demo_cli("sync", "--all").exit_code == 0
    r = demo_cli("sync", "--all")
    assert (r.exit_code, r.messages) == (0, "nothing is due\n")
    demo.state.fail_next(503, count=3)
    assert demo_cli("sync", "erp.orders").exit_code == 1
    assert demo_cli("sync", "erp.nope").exit_code == 2
    assert demo_cli("sync", "erp.items", env={"SYNCFLOW_DATABASE_URL": "postgresql://x@127.0.0.1:9/db"}).exit_code == 2


def test_status_fails_after_three_failures_in_a_row(demo_cli: Cli, demo: Any) -> None:
    assert demo_cli("discover").exit_code == 0
    assert demo_cli("sync", "--all").exit_code == 0
    r = demo_cli("status", "--json")
    assert r.exit_code == 0, r.stdout
    assert all(row["healthy"] for row in json.loads(r.stdout))
    for attempt in range(3):
        assert demo_cli("sync", "erp.items", env={TOKEN_ENV: "expired"}).exit_code == 1
        r = demo_cli("status", "--json")
        assert r.exit_code == (1 if attempt == 2 else 0)
    items = next(x for x in json.loads(r.stdout) if x["entity"] == "erp.items")
    assert items["consecutive_failures"] == 3
    assert items["problems"] == ["3 failures in a row"]
    assert "3 failures in a row" in demo_cli("status").stdout
    assert demo_cli("sync", "erp.items").exit_code == 0
    assert demo_cli("status").exit_code == 0


def test_status_reports_stale_entities(demo_cli: Cli, db_url: str) -> None:
    assert demo_cli("discover").exit_code == 0
    assert demo_cli("sync", "--all").exit_code == 0
    query(db_url, "UPDATE bridge.entities SET last_success_at = now() - interval '2 hours' WHERE slug = 'orders'")
    r = demo_cli("status", "--json")
    assert r.exit_code == 1
    orders = next(x for x in json.loads(r.stdout) if x["entity"] == "erp.orders")
    assert orders["stale"] is True


def test_metrics_file_parses(demo_cli: Cli, tmp_path: Path) -> None:
    assert demo_cli("discover").exit_code == 0
    path = tmp_path / "syncflow.prom"
    r = demo_cli("sync", "--all", "--metrics-file", str(path))
    assert r.exit_code == 0, r.stderr
    families = {f.name: f for f in text_string_to_metric_families(path.read_text())}
    rows = {(s.labels["entity"], s.labels["outcome"]): s.value for s in families["syncflow_rows"].samples}
    assert rows[("erp.items", "inserted")] == 120
    assert {s.labels["entity"] for s in families["syncflow_last_success_timestamp_seconds"].samples} == {
        "erp.items",
        "erp.orders",
        "erp.customers",
    }
    for name in (
        "syncflow_run_duration_seconds",
        "syncflow_run_failed",
        "syncflow_consecutive_failures",
        "syncflow_http_retries",
        "syncflow_apismith_latency_seconds",
        "syncflow_http_throttled",
        "syncflow_concurrency_limit_max",
        "syncflow_concurrency_limit_avg",
        "syncflow_http_in_flight_max",
    ):
        assert name in families
    assert DEMO_TOKEN not in path.read_text()


def test_json_logs_one_object_per_line_without_token(demo_cli: Cli, demo: Any) -> None:
    assert demo_cli("discover").exit_code == 0
    demo.state.fail_next(503)
    r = demo_cli("--log-format", "json", "sync", "erp.items", "erp.orders")
    assert r.exit_code == 0
    records = [json.loads(line) for line in r.stderr.splitlines()]
    finished = [x for x in records if x["event"] == "run_finished"]
    assert {x["entity"] for x in finished} == {"erp.items", "erp.orders"}
    assert all({"time", "level", "run_id", "counts", "connector"} <= set(x) for x in finished)
    assert DEMO_TOKEN not in r.stderr
    assert DEMO_TOKEN not in r.stdout
    r = demo_cli("--log-format", "json", "sync", "erp.items", env={TOKEN_ENV: "bad-token"})
    assert r.exit_code == 1
    assert all(json.loads(line) for line in r.stderr.splitlines())
    assert "bad-token" not in r.stderr


def test_metrics_pushed_to_a_pushgateway(demo_cli: Cli) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    received: list[tuple[str, str, bytes]] = []

    class Gateway(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            received.append((self.command, self.path, body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert demo_cli("discover").exit_code == 0
        r = demo_cli("sync", "erp.customers", "--pushgateway", f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
    assert r.exit_code == 0, r.stderr
    assert [(m, p) for m, p, _ in received] == [("PUT", "/metrics/job/syncflow")]
    families = {f.name for f in text_string_to_metric_families(received[0][2].decode())}
    assert "syncflow_rows" in families
    assert "syncflow_last_success_timestamp_seconds" in families


def test_wait_outlasts_the_lock_timeout(demo_cli: Cli, db_url: str) -> None:
    demo_cli.config.write_text(
        demo_cli.config.read_text().replace(
            "retry_backoff_seconds = 0\n", "retry_backoff_seconds = 0\nlock_timeout_seconds = 0.2\n"
        )
    )
    assert demo_cli("discover").exit_code == 0
    (uid,) = query(db_url, "SELECT uid::text FROM bridge.entities WHERE slug = 'orders'")[0]
    with psycopg.connect(db_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", [LOCK_NAMESPACE, uid])
        proc = spawn(demo_cli, "sync", "erp.orders", "--wait", "--json")
        time.sleep(1.5)  # well past lock_timeout_seconds
        assert proc.poll() is None
        holder.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", [LOCK_NAMESPACE, uid])
        out, errtext = proc.communicate(timeout=60)
    assert proc.returncode == 0, errtext
    assert [x["status"] for x in json.loads(out)] == ["success"]


def test_status_rows_right_after_a_load(demo_cli: Cli, db_url: str) -> None:
    assert demo_cli("discover").exit_code == 0
    assert demo_cli("sync", "erp.items").exit_code == 0
    r = demo_cli("status", "--json")
    items = next(e for e in json.loads(r.stdout) if e["entity"] == "erp.items")
    assert items["rows"] == 120  # reltuples says -1 until ANALYZE; the count is exact for small tables
