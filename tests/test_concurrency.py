"""Adaptive concurrency against a source that pushes back, end to end (real HTTP, real PostgreSQL)."""

from __future__ import annotations

import json
from pathlib import Path

from demo_apismith import DemoState
from tests.helpers import DEMO_TOKEN, TOKEN_ENV, Cli, Throttle, live_keys, query, throttling_server

K = 2  # the source answers 429 above this many requests in flight


TABLES = {"items": ("erp.items", "item_number"), "customers": ("erp.customers", "customer_id")}


def keys_at(state: DemoState, slug: str) -> set[object]:
    return {k[0] for k in state.snapshot(slug)}


def configure(cli: Cli, url: str, *, max_concurrent: int, extra: str = "") -> None:
    cli.config.write_text(
        "[sync]\nretry_backoff_seconds = 0\nretry_attempts = 20\npage_size = 5\n\n"
        f'[connectors.erp]\nbase_url = "{url}"\ntoken_env = "{TOKEN_ENV}"\n'
        f'max_concurrent_requests = {max_concurrent}\nparallel_reads = "always"\n{extra}',
        encoding="utf-8",
    )


def test_a_source_that_throttles_above_k_requests_gets_at_most_about_k(cli: Cli, db_url: str, tmp_path: Path) -> None:
    state = DemoState(
        {"items": 200, "customers": 150, "orders": 150},
        token=DEMO_TOKEN,
        strategies={"items": "full", "customers": "hash", "orders": "rowversion"},
    )
    throttle = Throttle(max_in_flight=K, latency=0.01)
    with throttling_server(state, throttle) as url:
        configure(cli, url, max_concurrent=8)
        assert cli("discover").exit_code == 0
        prom = tmp_path / "syncflow.prom"
        r = cli("sync", "--all", "--workers", "3", "--json", "--metrics-file", str(prom))
    assert r.exit_code == 0, r.stderr
    runs = json.loads(r.stdout)
    assert {run["status"] for run in runs} == {"success"}
    for slug, (table, key) in TABLES.items():
        assert live_keys(db_url, table, key) == keys_at(state, slug), slug
    # The source did push back, and the runs say so.
    assert throttle.throttled > 0
    assert sum(run["http_throttled"] for run in runs) > 0
    assert all(run["concurrency_max"] is not None and 1 <= run["concurrency_avg"] <= 8 for run in runs)
    # After the first cuts, SyncFlow keeps within K + 1 (AIMD probes one above the limit it learnt).
    late = throttle.arrivals[len(throttle.arrivals) // 4 :]
    assert sum(1 for n in late if n > K + 1) <= len(late) // 10, throttle.arrivals
    # The record holds it (runs show), and so do the metrics.
    stored = query(db_url, "SELECT sum(http_throttled), max(concurrency_max) FROM bridge.sync_runs")[0]
    assert stored[0] == sum(run["http_throttled"] for run in runs)
    assert stored[1] >= 1
    shown = json.loads(cli("runs", "show", runs[0]["uid"], "--json").stdout)
    assert shown["http_throttled"] == runs[0]["http_throttled"]
    assert {"concurrency_max", "concurrency_avg", "in_flight_max"} <= set(shown)
    assert "syncflow_http_throttled" in prom.read_text()


def test_retry_after_pauses_every_worker_and_the_sync_completes(cli: Cli, db_url: str) -> None:
    state = DemoState({"items": 60, "customers": 60}, token=DEMO_TOKEN, strategies={"items": "full"})
    throttle = Throttle(max_in_flight=1, latency=0.005, retry_after="0.2")
    with throttling_server(state, throttle) as url:
        configure(cli, url, max_concurrent=4)
        assert cli("discover").exit_code == 0
        r = cli("sync", "--all", "--workers", "2", "--json")
    assert r.exit_code == 0, r.stderr
    runs = json.loads(r.stdout)
    assert {run["status"] for run in runs} == {"success"}
    assert sum(run["http_throttled"] for run in runs) == throttle.throttled > 0
    assert live_keys(db_url, "erp.items", "item_number") == keys_at(state, "items")


def test_the_rate_and_the_limit_are_connector_settings(cli: Cli, db_url: str) -> None:
    state = DemoState({"items": 30}, token=DEMO_TOKEN, strategies={"items": "full"})
    throttle = Throttle(max_in_flight=100, latency=0.0)
    with throttling_server(state, throttle) as url:
        configure(cli, url, max_concurrent=1, extra="max_requests_per_second = 50\n")
        assert cli("discover").exit_code == 0
        assert cli("sync", "erp.items").exit_code == 0
    assert max(throttle.arrivals) == 1  # one at a time: nothing ever waited on a 429
    assert throttle.throttled == 0
    assert live_keys(db_url, "erp.items", "item_number") == keys_at(state, "items")


def test_auto_overlaps_requests_to_a_slow_source_by_default(cli: Cli, db_url: str) -> None:
    """Without ``parallel_reads`` in the file ("auto"), a source that takes 150 ms per page is read with
    several requests in flight once the first pages measured the wait, and the run records it."""
    state = DemoState({"items": 120}, token=DEMO_TOKEN, strategies={"items": "full"})
    throttle = Throttle(max_in_flight=100, latency=0.15)
    with throttling_server(state, throttle) as url:
        cli.config.write_text(
            "[sync]\nretry_backoff_seconds = 0\npage_size = 5\n\n"
            f'[connectors.erp]\nbase_url = "{url}"\ntoken_env = "{TOKEN_ENV}"\nmax_concurrent_requests = 4\n',
            encoding="utf-8",
        )
        assert cli("discover").exit_code == 0
        r = cli("sync", "erp.items", "--json")
    assert r.exit_code == 0, r.stderr
    run = json.loads(r.stdout)[0]
    assert run["status"] == "success"
    assert run["in_flight_max"] > 1
    assert max(throttle.arrivals) > 1
    assert live_keys(db_url, "erp.items", "item_number") == keys_at(state, "items")
