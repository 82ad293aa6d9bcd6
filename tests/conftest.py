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

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from pytest_postgresql import factories
from pytest_postgresql.executors.noop import NoopExecutor
from pytest_postgresql.janitor import DatabaseJanitor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

from demo_apismith import DemoServer, DemoState  # noqa: E402
from tests.helpers import DEMO_TOKEN, TOKEN_ENV, Cli  # noqa: E402


def pytest_sessionstart(session: pytest.Session) -> None:
    """Warm-up: stop the whole run with one message when PostgreSQL is not there."""
    host, port, user = os.environ["PGHOST"], os.environ["PGPORT"], os.environ["PGUSER"]
    try:
        with psycopg.connect(dbname="postgres", connect_timeout=3, autocommit=True) as conn:
            # A run killed mid-way leaves its template database behind, and the next run would fail
            # with DuplicateDatabase: the name is this checkout's own (SYNCFLOW_TEST_DB), so drop it.
            name = os.environ.get("SYNCFLOW_TEST_DB", "syncflow_tests")
            for leftover in (f"{name}_tmpl", name):
                if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [leftover]).fetchone():
                    ident = sql.Identifier(leftover)
                    conn.execute(sql.SQL("ALTER DATABASE {} IS_TEMPLATE false").format(ident))
                    conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(ident))
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


@pytest.fixture(scope="module")
def module_database(postgresql_noproc: NoopExecutor, request: pytest.FixtureRequest) -> Iterator[str]:
    """One fresh database for a module's fast DB-level tests (created from the template, dropped after).

    The SQL-builder and staging tests run once per mutant in ``nox -s mutation``: a database per
    module instead of per test makes that run several times faster. Tests get ``pg``.
    """
    name = f"{postgresql_noproc.dbname}_{request.module.__name__.rsplit('.', 1)[-1]}"[:63]
    janitor = DatabaseJanitor(
        user=postgresql_noproc.user,
        host=postgresql_noproc.host,
        port=postgresql_noproc.port,
        dbname=name,
        template_dbname=postgresql_noproc.template_dbname,
        password=postgresql_noproc.password,
    )
    if _database_exists(janitor, name):  # left by a run that was killed
        janitor.drop()
    with janitor:
        yield name


def _database_exists(janitor: DatabaseJanitor, name: str) -> bool:
    with janitor.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        return cur.fetchone() is not None


@pytest.fixture
def pg(postgresql_noproc: NoopExecutor, module_database: str) -> Iterator[psycopg.Connection[Any]]:
    """A new connection (no temp tables left over) to the module's database, with no ``erp`` schema."""
    conn = psycopg.connect(
        dbname=module_database,
        user=postgresql_noproc.user,
        password=postgresql_noproc.password,
        host=postgresql_noproc.host,
        port=postgresql_noproc.port,
    )
    try:
        conn.execute("DROP SCHEMA IF EXISTS erp CASCADE")
        conn.commit()
        yield conn
    finally:
        conn.close()
