"""Per-entity claims, so two processes (or two pods) never sync one entity at once.

A claim is a session-level PostgreSQL advisory lock keyed by the entity's
uid, held on the connection that runs the sync. It needs no table and no
cleanup: when a process dies (SIGKILL, out of memory, lost node) its
connection closes and PostgreSQL frees the lock. A run still marked
``running`` whose claim is free therefore belongs to a dead process, and is
marked ``abandoned`` by whoever takes the claim next.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from syncflow.store import Conn

# Namespace for SyncFlow's advisory locks (two-int form: namespace, hash of the uid).
LOCK_NAMESPACE = 0x5F1C


def try_claim(conn: Conn, entity_uid: str) -> bool:
    """Take the entity's claim without waiting; False when another session holds it."""
    row = conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))", [LOCK_NAMESPACE, entity_uid]).fetchone()
    conn.commit()
    return bool(row and row[0])


def wait_claim(conn: Conn, entity_uid: str, *, timeout_seconds: float | None = None) -> bool:
    """Wait for the claim (``--wait``); False if ``timeout_seconds`` passed first.

    The worker connection's lock_timeout and statement_timeout guard table locks
    during a sync; waiting for a claim is meant to outlast them, so they are
    lifted for this one statement (``SET LOCAL``: only this transaction).
    """
    limit = int(timeout_seconds * 1000) if timeout_seconds is not None else 0
    try:
        conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(limit)))
        conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(limit)))
        conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", [LOCK_NAMESPACE, entity_uid])
        conn.commit()
        return True
    except psycopg.errors.QueryCanceled:
        conn.rollback()
        return False
    except psycopg.errors.LockNotAvailable:
        conn.rollback()
        return False


def release(conn: Conn, entity_uid: str) -> None:
    if conn.closed or conn.broken:
        return
    if conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR:
        conn.rollback()
    conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", [LOCK_NAMESPACE, entity_uid])
    conn.commit()


def abandon_dead_runs(conn: Conn, schema: str, entity_uid: str) -> int:
    """With the claim held: any run of this entity still ``running`` is dead. Mark it."""
    cur = conn.execute(
        sql.SQL(
            "UPDATE {} SET status = 'abandoned', completed_at = now(),"
            " error_message = 'the process running this sync died (its claim was free); nothing was"
            " checkpointed' WHERE entity_uid = %s AND status = 'running'"
        ).format(sql.Identifier(schema, "sync_runs")),
        [entity_uid],
    )
    n = cur.rowcount
    if n:
        conn.execute(
            sql.SQL(
                "UPDATE {} SET last_sync_status = 'abandoned', consecutive_failures = consecutive_failures + 1"
                " WHERE uid = %s AND last_sync_status IS DISTINCT FROM 'abandoned'"
            ).format(sql.Identifier(schema, "entities")),
            [entity_uid],
        )
    conn.commit()
    return n


def sweep_abandoned(conn: Conn, schema: str) -> int:
    """Mark every dead ``running`` run as abandoned (used by ``status`` and ``sync --all``)."""
    rows = conn.execute(
        sql.SQL("SELECT DISTINCT entity_uid::text FROM {} WHERE status = 'running'").format(
            sql.Identifier(schema, "sync_runs")
        )
    ).fetchall()
    conn.commit()
    total = 0
    for (uid,) in rows:
        if try_claim(conn, str(uid)):
            try:
                total += abandon_dead_runs(conn, schema, str(uid))
            finally:
                release(conn, str(uid))
    return total


def claim_for_change(conn: Conn, entity_uid: str, *, wait_seconds: float | None = None) -> bool:
    """Take the claim before changing an entity's schema; False when a sync still holds it.

    A schema change under a running sync loses rows (the sync writes its own
    checkpoint over a reset one, or merges into a table that was swapped), so
    discovery takes the same claim the sync workers hold for the whole run.
    Without ``wait_seconds`` it does not wait; with it, the wait is bounded
    (cron jobs must end). Works in autocommit and in transaction mode: the
    timeouts are ``SET LOCAL`` in a transaction of their own, and the session
    lock outlives it.
    """
    if not wait_seconds or wait_seconds <= 0:
        return try_claim(conn, entity_uid)
    limit = max(1, int(wait_seconds * 1000))
    try:
        with conn.transaction():
            conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(limit)))
            conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(limit + 1000)))
            conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", [LOCK_NAMESPACE, entity_uid])
    except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled):
        return False
    return True
