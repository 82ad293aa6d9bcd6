"""Connections to PostgreSQL and the metadata schema's migrations.

The one place that knows how to reach the database: it turns libpq's
connection failures into :class:`DatabaseUnreachable` with host, port and
database named (never the password), and applies the numbered SQL migrations
shipped in ``syncflow/migrations`` under an advisory lock.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from syncflow.errors import DatabaseError, DatabaseUnreachable, MigrationError

APPLICATION_NAME = "syncflow"
_MIGRATION_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Any fixed number works; it only has to be the same in every SyncFlow process.
_MIGRATION_LOCK_KEY = 0x5F1C_F10D


def describe_target(url: str | None) -> str:
    """``host:port/dbname`` as libpq would resolve it, without credentials."""
    try:
        params = conninfo_to_dict(url or "")
    except psycopg.ProgrammingError:
        return "(unparsable database URL)"
    host = params.get("host") or os.environ.get("PGHOST") or "localhost"
    port = params.get("port") or os.environ.get("PGPORT") or "5432"
    user = params.get("user") or os.environ.get("PGUSER") or ""
    dbname = params.get("dbname") or os.environ.get("PGDATABASE") or user or "(default)"
    return f"host {host}, port {port}, database {dbname}"


def connect(
    url: str | None,
    *,
    autocommit: bool = False,
    lock_timeout: float | None = None,
    statement_timeout: float | None = None,
) -> psycopg.Connection[tuple[object, ...]]:
    """Open a connection; every failure to connect becomes DatabaseUnreachable.

    Sync workers pass timeouts so that a lock held by someone else, or a
    statement that never ends, fails the run with a named error instead of
    hanging a cron job forever.
    """
    options = []
    if lock_timeout:
        options.append(f"-c lock_timeout={int(lock_timeout * 1000)}")
    if statement_timeout:
        options.append(f"-c statement_timeout={int(statement_timeout * 1000)}")
    params: dict[str, Any] = {
        "application_name": APPLICATION_NAME,
        "connect_timeout": int(os.environ.get("PGCONNECT_TIMEOUT", "10")),
    }
    if options:
        params["options"] = " ".join(options)
    try:
        return psycopg.connect(url or "", autocommit=autocommit, **params)
    except psycopg.ProgrammingError as exc:
        raise DatabaseUnreachable(f"invalid database URL: {_first_line(exc)}") from None
    except psycopg.OperationalError as exc:
        raise DatabaseUnreachable(f"cannot connect to PostgreSQL at {describe_target(url)}: {_reason(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__


def _reason(exc: BaseException) -> str:
    # libpq prefixes every line with 'connection to server at "h" (ip), port p failed:'.
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    reasons = []
    for ln in lines:
        ln = re.sub(r"^connection to server (at|on) .*? failed:\s*", "", ln)
        if ln and ln not in reasons:
            reasons.append(ln)
    text = "; ".join(reasons) or exc.__class__.__name__
    # Defensive: a password must never reach a message.
    return re.sub(r"password=\S+", "password=***", text)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql_text: str


def available_migrations() -> list[Migration]:
    """The migrations shipped in the package, in order."""
    found = []
    for item in resources.files("syncflow.migrations").iterdir():
        m = _MIGRATION_RE.match(item.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), item.read_text(encoding="utf-8")))
    return sorted(found, key=lambda mig: mig.version)


def _applied(conn: psycopg.Connection[tuple[object, ...]], schema: str) -> dict[int, str]:
    row = conn.execute("SELECT to_regclass(format('%%I.schema_migrations', %s::text)) IS NOT NULL", [schema]).fetchone()
    if not row or not row[0]:
        return {}
    rows = conn.execute(
        sql.SQL("SELECT version, applied_at::text FROM {}").format(sql.Identifier(schema, "schema_migrations"))
    ).fetchall()
    return {int(str(v)): str(at) for v, at in rows}


def migration_status(conn: psycopg.Connection[tuple[object, ...]], schema: str) -> list[tuple[Migration, str | None]]:
    """Each shipped migration with the time it was applied, or None."""
    applied = _applied(conn, schema)
    return [(mig, applied.get(mig.version)) for mig in available_migrations()]


def upgrade(conn: psycopg.Connection[tuple[object, ...]], schema: str) -> list[Migration]:
    """Apply pending migrations, each in its own transaction, under an advisory lock.

    Two processes starting at once both take the lock in turn; the second sees
    the first one's work and applies nothing. Returns what this call applied.
    """
    done: list[Migration] = []
    for mig in available_migrations():
        try:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", [_MIGRATION_LOCK_KEY])
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
                conn.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} (version int PRIMARY KEY, name text NOT NULL,"
                        " applied_at timestamptz NOT NULL DEFAULT now())"
                    ).format(sql.Identifier(schema, "schema_migrations"))
                )
                if mig.version in _applied(conn, schema):
                    continue
                conn.execute(sql.SQL("SET LOCAL search_path TO {}, public").format(sql.Identifier(schema)))
                conn.execute(mig.sql_text.encode())
                conn.execute(
                    sql.SQL("INSERT INTO {} (version, name) VALUES (%s, %s)").format(
                        sql.Identifier(schema, "schema_migrations")
                    ),
                    [mig.version, mig.name],
                )
                done.append(mig)
        except psycopg.Error as exc:
            raise MigrationError(
                f"migration {mig.version:04d}_{mig.name} on schema {schema!r} failed: {_first_line(exc)}"
            ) from exc
    return done


def open_metadata(url: str | None, schema: str) -> psycopg.Connection[tuple[object, ...]]:
    """A connection with the metadata schema migrated: what every command starts with."""
    conn = connect(url, autocommit=True)
    try:
        upgrade(conn, schema)
    except BaseException:
        conn.close()
        raise
    return conn


def translate(exc: psycopg.Error, what: str) -> DatabaseError:
    """A psycopg error outside a sync run, as a SyncFlow error naming ``what``."""
    if isinstance(exc, psycopg.OperationalError):
        return DatabaseUnreachable(f"{what}: lost the database connection: {_first_line(exc)}")
    return DatabaseError(f"{what}: {_first_line(exc)}")
