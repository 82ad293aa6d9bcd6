"""Connections to PostgreSQL and the metadata schema's migrations.

The one place that knows how to reach the database: it turns libpq's
connection failures into :class:`DatabaseUnreachable` with host, port and
database named (never the password), and applies the numbered SQL migrations
shipped in ``syncflow/migrations`` under an advisory lock.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from syncflow.errors import EXIT_CLAIMED, DatabaseError, DatabaseUnreachable, MigrationError

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


class DatabaseBusy(DatabaseError):
    """Another session holds a lock SyncFlow needs: a temporary failure, try again later (75).

    ``row_lock``: the lock is on rows (one entity's), not on a whole table, so
    only what touches those rows is affected.
    """

    exit_code = EXIT_CLAIMED

    def __init__(self, message: str, *, row_lock: bool = False) -> None:
        super().__init__(message)
        self.row_lock = row_lock


def connect(
    url: str | None,
    *,
    autocommit: bool = False,
    lock_timeout: float | None = None,
    statement_timeout: float | None = None,
    read_only: bool = False,
) -> psycopg.Connection[tuple[object, ...]]:
    """Open a connection; every failure to connect becomes DatabaseUnreachable.

    Every connection SyncFlow opens passes the configured timeouts, so that a
    lock held by someone else, or a statement that never ends, fails with a
    named error instead of hanging a cron job forever. ``read_only`` makes
    PostgreSQL itself refuse any write: what reporting commands use.
    """
    options = []
    if lock_timeout:
        options.append(f"-c lock_timeout={max(int(lock_timeout * 1000), 1)}")
    if statement_timeout:
        options.append(f"-c statement_timeout={max(int(statement_timeout * 1000), 1)}")
    if read_only:
        options.append("-c default_transaction_read_only=on")
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


def _pending(conn: psycopg.Connection[tuple[object, ...]], schema: str) -> bool:
    """Whether a shipped migration is not applied yet: two queries, where :func:`upgrade` takes five per
    migration even when there is nothing to do (every command's start, issue 16)."""
    applied = _applied(conn, schema)
    return any(mig.version not in applied for mig in available_migrations())


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


def open_metadata(
    url: str | None,
    schema: str,
    *,
    lock_timeout: float | None = None,
    statement_timeout: float | None = None,
    read_only: bool = False,
) -> psycopg.Connection[tuple[object, ...]]:
    """A connection with the metadata schema migrated: what every command starts with.

    A read-only connection migrates nothing: reporting commands must not
    write, so a schema that is missing or behind is an error naming the fix.
    """
    conn = connect(
        url, autocommit=True, lock_timeout=lock_timeout, statement_timeout=statement_timeout, read_only=read_only
    )
    try:
        with translate_locks(conn, schema):
            if read_only:
                _require_migrated(conn, schema)
            elif _pending(conn, schema):  # one look first: a schema that is up to date takes no lock
                upgrade(conn, schema)
    except BaseException:
        conn.close()
        raise
    return conn


def _require_migrated(conn: psycopg.Connection[tuple[object, ...]], schema: str) -> None:
    status = migration_status(conn, schema)
    pending = [f"{m.version:04d}_{m.name}" for m, at in status if at is None]
    if len(pending) == len(status):
        raise DatabaseError(
            f"schema {schema!r} holds no SyncFlow metadata yet: run 'syncflow discover' (or 'syncflow db upgrade')"
        )
    if pending:
        raise DatabaseError(
            f"schema {schema!r} needs migrations {', '.join(pending)}: run 'syncflow db upgrade' (or any sync)"
        )


# Table locks that block the reads and writes SyncFlow does on its metadata tables.
_STRONG_LOCKS = ("ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock")


def lock_conflict(conn: psycopg.Connection[Any], exc: psycopg.Error, schema: str) -> DatabaseBusy:
    """A lock or statement timeout as a message naming the lock held, when it can be found.

    PostgreSQL names the relation for row locks (in the error's context); for
    table locks it does not, so the metadata tables that another session
    holds a blocking lock on are looked up in ``pg_locks``.
    """
    relations: list[str] = []
    context = exc.diag.context or ""
    # 'while locking tuple (0,3) in relation "entities"', or a foreign key check 'FROM ONLY "s"."t" x ...'.
    row = re.search(r'in relation "([^"]+)"', context)
    fk = re.search(r'FROM ONLY "([^"]+)"\."([^"]+)"', context)
    if row:
        relations.append(f"{schema}.{row.group(1)}")
    elif fk:
        relations.append(f"{fk.group(1)}.{fk.group(2)}")
    else:
        try:
            if not conn.closed and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.rollback()  # a failed transaction must end before the next query
            rows = conn.execute(
                "SELECT DISTINCT n.nspname || '.' || c.relname FROM pg_locks l"
                " JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE l.granted AND l.pid <> pg_backend_pid() AND n.nspname = %s AND l.mode = ANY(%s)"
                " ORDER BY 1",
                [schema, list(_STRONG_LOCKS)],
            ).fetchall()
            relations += [str(r[0]) for r in rows]
        except psycopg.Error:
            pass
    what = " and ".join(relations) if relations else f"a table in schema {schema!r}"
    row_lock = bool(row or fk)
    if isinstance(exc, psycopg.errors.LockNotAvailable):
        return DatabaseBusy(
            f"another session holds a lock on {what}{' (on rows)' if row_lock else ''}; gave up after "
            "lock_timeout_seconds; try again later",
            row_lock=row_lock,
        )
    return DatabaseBusy(
        f"a statement on {what} ran longer than statement_timeout_seconds (another session may hold a lock "
        "on it); try again later",
        row_lock=row_lock,
    )


def is_timeout(exc: BaseException) -> bool:
    """A lock timeout or a statement timeout; not a cancel asked for by a signal."""
    if isinstance(exc, psycopg.errors.LockNotAvailable):
        return True
    return isinstance(exc, psycopg.errors.QueryCanceled) and "statement timeout" in str(exc)


@contextmanager
def translate_locks(conn: psycopg.Connection[Any], schema: str) -> Iterator[None]:
    """Turn a lock or statement timeout inside the block into :class:`DatabaseBusy`."""
    try:
        yield
    except psycopg.Error as exc:
        if is_timeout(exc):
            raise lock_conflict(conn, exc, schema) from None
        raise


def translate(exc: psycopg.Error, what: str) -> DatabaseError:
    """A psycopg error outside a sync run, as a SyncFlow error naming ``what``."""
    if is_timeout(exc):
        return DatabaseBusy(
            f"{what}: {_first_line(exc)} (another session holds a lock SyncFlow needs); try again later"
        )
    # Only connection failures (SQLSTATE class 08, or none at all) mean the connection is gone.
    if isinstance(exc, psycopg.OperationalError) and (exc.sqlstate is None or exc.sqlstate.startswith("08")):
        return DatabaseUnreachable(f"{what}: lost the database connection: {_first_line(exc)}")
    return DatabaseError(f"{what}: {_first_line(exc)}")
