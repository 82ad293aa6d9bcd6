"""Test rig: a fresh database per test on a real PostgreSQL, the demo APISmith, the CLI.

What the suite holds SyncFlow to (README, docs/correctness.md): after a run
that ends ``success``, every live source row is a live table row with
identical typed values; no live table row is soft-deleted while it exists at
the source; the stored checkpoint never passes a row that the table lacks. A
run that cannot guarantee this does not end ``success``.

PostgreSQL is reached through the standard libpq variables (defaults:
127.0.0.1:5432, user postgres). The server is checked once before any test
runs, so a missing server stops the run at once with one clear message
instead of pytest-postgresql's 60 s of retries per test.
"""

from __future__ import annotations

import os

# Pin rich's width before the CLI module creates its consoles.
os.environ["COLUMNS"] = "200"
os.environ.setdefault("PGHOST", "127.0.0.1")
os.environ.setdefault("PGPORT", "5432")
os.environ.setdefault("PGUSER", "postgres")

import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pytest_postgresql import factories
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

from demo_apismith import DemoServer, DemoState  # noqa: E402
from syncflow.cli import app  # noqa: E402

DEMO_TOKEN = "demo-secret-token-0123456789"
TOKEN_ENV = "SYNCFLOW_TEST_APISMITH_TOKEN"


def pytest_sessionstart(session: pytest.Session) -> None:
    """Warm-up: stop the whole run with one message when PostgreSQL is not there."""
    host, port, user = os.environ["PGHOST"], os.environ["PGPORT"], os.environ["PGUSER"]
    try:
        psycopg.connect(dbname="postgres", connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[-1]
        pytest.exit(
            f"PostgreSQL is not reachable at {host}:{port} as {user}: {reason}\n"
            "Start it (e.g. 'pg_ctlcluster 15 main start') or set PGHOST/PGPORT/PGUSER/PGPASSWORD.",
            returncode=3,
        )


postgresql_noproc = factories.postgresql_noproc(
    host=os.environ["PGHOST"],
    port=int(os.environ["PGPORT"]),
    user=os.environ["PGUSER"],
    password=os.environ.get("PGPASSWORD"),
    # Several checkouts may test against one server at once: each names its own database.
    dbname=os.environ.get("SYNCFLOW_TEST_DB", "syncflow_tests"),
)
postgresql = factories.postgresql("postgresql_noproc")


@pytest.fixture
def db_url(postgresql: psycopg.Connection[Any]) -> str:
    """A URL for the test's fresh database (no password: trust or PGPASSWORD)."""
    info = postgresql.info
    return f"postgresql://{info.user}@{info.host}:{info.port}/{info.dbname}"


@pytest.fixture
def demo() -> Iterator[DemoServer]:
    """The demo APISmith on a free port, requiring DEMO_TOKEN."""
    state = DemoState({"items": 120, "customers": 30, "orders": 40}, token=DEMO_TOKEN)
    with DemoServer(state) as server:
        yield server


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


@pytest.fixture
def cli(tmp_path: Path, db_url: str) -> Cli:
    (tmp_path / "syncflow.toml").write_text("# SyncFlow test configuration\n", encoding="utf-8")
    return Cli(
        config=tmp_path / "syncflow.toml",
        env={"SYNCFLOW_DATABASE_URL": db_url, TOKEN_ENV: DEMO_TOKEN},
    )


@pytest.fixture
def demo_cli(cli: Cli, demo: DemoServer) -> Cli:
    """The CLI with connector ``erp`` pointing at the demo server."""
    cli.config.write_text(
        f'[sync]\nretry_backoff_seconds = 0\n\n[connectors.erp]\nbase_url = "{demo.url}"\ntoken_env = "{TOKEN_ENV}"\n',
        encoding="utf-8",
    )
    return cli
