"""Migrations are idempotent and safe under concurrency; an unreachable database exits 2."""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import Any

import psycopg
import pytest

from syncflow import db
from syncflow.errors import DatabaseUnreachable
from tests.helpers import Cli


def test_upgrade_twice_is_a_noop(db_url: str) -> None:
    with db.connect(db_url, autocommit=True) as conn:
        first = db.upgrade(conn, "bridge")
        assert [m.version for m in first] == [m.version for m in db.available_migrations()]
        assert db.upgrade(conn, "bridge") == []
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'bridge'").fetchall()}
    assert {"connectors", "entities", "sync_runs", "sync_rejects", "schema_migrations"} <= tables


def test_concurrent_upgrades_apply_each_migration_once(db_url: str) -> None:
    errors: list[BaseException] = []
    applied: list[int] = []
    barrier = threading.Barrier(4)

    def run() -> None:
        try:
            with db.connect(db_url, autocommit=True) as conn:
                barrier.wait()
                applied.extend(m.version for m in db.upgrade(conn, "meta"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(applied) == [m.version for m in db.available_migrations()]
    with psycopg.connect(db_url) as conn:
        count = conn.execute("SELECT count(*) FROM meta.schema_migrations").fetchone()
    assert count == (len(db.available_migrations()),)


def test_concurrent_processes(db_url: str) -> None:
    code = f"from syncflow import db; c = db.connect({db_url!r}, autocommit=True); db.upgrade(c, 'bridge')"
    procs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE) for _ in range(3)]
    for p in procs:
        _, stderr = p.communicate(timeout=60)
        assert p.returncode == 0, stderr.decode()


def test_db_status_and_upgrade_commands(cli: Cli) -> None:
    r = cli("db", "upgrade")
    assert r.exit_code == 0
    assert r.messages.startswith("applied 0001_initial")
    r = cli("db", "upgrade")
    assert r.messages == "schema 'bridge' is up to date\n"
    r = cli("db", "status", "--json")
    assert '"name": "initial"' in r.stdout


def test_unreachable_database_one_line_exit_2(cli: Cli) -> None:
    url = "postgresql://postgres:hunter2@127.0.0.1:9/nodb"
    r = cli("entities", env={"SYNCFLOW_DATABASE_URL": url})
    assert r.exit_code == 2
    assert r.messages.startswith("error: cannot connect to PostgreSQL at host 127.0.0.1, port 9, database nodb: ")
    assert "hunter2" not in r.stderr
    assert len(r.stderr.splitlines()) == 1


def test_wrong_database_name(cli: Cli, postgresql: psycopg.Connection[Any]) -> None:
    info = postgresql.info
    url = f"postgresql://{info.user}@{info.host}:{info.port}/does_not_exist_db"
    with pytest.raises(DatabaseUnreachable) as exc:
        db.connect(url)
    assert 'database "does_not_exist_db" does not exist' in str(exc.value)
