"""Helpers shared by the test modules (the fixtures that use them live in conftest.py).

Test modules import from here, never from each other.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import psycopg.rows
from typer.testing import CliRunner

from syncflow.cli import app

DEMO_TOKEN = "demo-secret-token-0123456789"
TOKEN_ENV = "SYNCFLOW_TEST_APISMITH_TOKEN"


LOG_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d ", re.MULTILINE)


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def messages(self) -> str:
        """stderr without the timestamp that starts each log line when stderr is not a terminal."""
        return LOG_TIMESTAMP.sub("", self.stderr)


@dataclass
class Cli:
    """Runs ``syncflow`` in-process with a config file in a temporary folder."""

    config: Path
    env: dict[str, str]

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> Result:
        runner = CliRunner()
        merged = {**self.env, **(env or {})}
        result = runner.invoke(app, ["--config", str(self.config), *args], env=merged)
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        return Result(result.exit_code, result.stdout, result.stderr)


def spawn(cli: Cli, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full_env = {**os.environ, **cli.env, **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "syncflow", "--config", str(cli.config), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
    )


def query(db_url: str, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url) as conn:
        cur = conn.execute(sql.encode(), params or [])
        return cur.fetchall() if cur.description else []


def wait_for(check: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def rows(db_url: str, table: str, cols: str = "*", where: str = "true") -> list[dict[str, Any]]:
    with psycopg.connect(db_url) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute(f"SELECT {cols} FROM {table} WHERE {where}")  # test-only, fixed strings
        return cur.fetchall()


def max_rv(demo: Any, slug: str) -> str:
    ent = demo.state.entities[slug]
    return str(max([*ent.versions.values(), *ent.tombstones.values()]))


def live_keys(db_url: str, table: str, key: str) -> set[Any]:
    return {r[key] for r in rows(db_url, table, key, "NOT _bridge_deleted")}


def source_keys(demo: Any, slug: str) -> set[Any]:
    return {k[0] if len(k) == 1 else k for k in demo.state.snapshot(slug)}


def entity_state(db_url: str, slug: str) -> dict[str, Any]:
    return rows(
        db_url, "bridge.entities", "last_rowversion, last_sync_status, consecutive_failures", f"slug = '{slug}'"
    )[0]


def sync_json(cli: Cli, *args: str) -> tuple[int, list[dict[str, Any]], str]:
    r = cli("sync", *args, "--json")
    return r.exit_code, list(json.loads(r.stdout)) if r.stdout.strip() else [], r.stderr


@dataclass
class Throttle:
    """What a throttling APISmith saw: requests in flight when each arrived, and the 429s it sent."""

    max_in_flight: int
    latency: float
    retry_after: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    in_flight: int = 0
    arrivals: list[int] = field(default_factory=list)
    throttled: int = 0


@contextmanager
def throttling_server(state: Any, throttle: Throttle) -> Iterator[str]:
    """The demo APISmith answering 429 to a request that arrives while ``max_in_flight`` others are in
    flight, and taking ``latency`` seconds over every other one; yields its URL.

    Built here, over the demo server's handler, so that the demo itself stays as it is.
    """
    from demo_apismith import Handler

    class Throttling(Handler):
        def do_GET(self) -> None:
            with throttle.lock:
                throttle.in_flight += 1
                throttle.arrivals.append(throttle.in_flight)
                over = throttle.in_flight > throttle.max_in_flight
                throttle.throttled += over
            try:
                if over:
                    self.send_response(429)
                    if throttle.retry_after is not None:
                        self.send_header("Retry-After", throttle.retry_after)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                time.sleep(throttle.latency)
                super().do_GET()
            finally:
                with throttle.lock:
                    throttle.in_flight -= 1

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def __init__(self) -> None:
            super().__init__(("127.0.0.1", 0), Throttling)
            self.state, self.prefix, self.verbose = state, "", False

    httpd = Server()
    thread = threading.Thread(target=httpd.serve_forever, name="throttling-apismith", daemon=True)
    thread.start()
    try:
        host, port = httpd.server_address[:2]
        yield f"http://{host!s}:{port}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def items_api(strategy: str, *, extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The ``items`` API of the resume tests: a numeric key, a value and the row version as a column."""
    return {
        "slug": "items",
        "delta_strategy": strategy,
        "columns": [
            {"name": "ID", "output_alias": "id", "data_type": "NUMBER(9)", "is_business_key": True},
            {"name": "VAL", "output_alias": "val", "data_type": "VARCHAR2(40)"},
            {"name": "ROWVER", "output_alias": "erp_rowversion", "data_type": "VARCHAR2(50)"},
            *(extra or []),
        ],
    }


class PageRequests:
    """A ``before_page`` hook: counts the data requests for ``items`` (and their page numbers), runs
    ``on[n]`` before the n-th, and holds the ``hold_at``-th until ``release`` is set (``held`` says it is)."""

    def __init__(self, hold_at: int | None = None, on: dict[int, Callable[[], None]] | None = None) -> None:
        self.count = 0
        self.numbers: list[int] = []
        self.hold_at = hold_at
        self.on = on or {}
        self.release = threading.Event()
        self.held = threading.Event()

    def __call__(self, slug: str, page: int, params: dict[str, str]) -> None:
        if slug != "items":
            return
        self.count += 1
        self.numbers.append(page)
        if self.count in self.on:
            self.on[self.count]()
        if self.count == self.hold_at:
            self.held.set()
            self.release.wait(60)


def items_table(db_url: str) -> dict[int, str]:
    """The live rows of ``erp.items`` (``items_api``): id -> val."""
    return dict(query(db_url, "SELECT id, val FROM erp.items WHERE NOT _bridge_deleted"))


def items_source(state: Any) -> dict[int, str]:
    """The demo source's live ``items`` rows: id -> val."""
    return {k[0]: row["val"] for k, row in state.snapshot("items").items()}


def items_checkpoint(db_url: str) -> str | None:
    """The stored checkpoint of ``erp.items``."""
    got = query(db_url, "SELECT last_rowversion FROM bridge.entities WHERE slug = 'items'")[0][0]
    return None if got is None else str(got)
