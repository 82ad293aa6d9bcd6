"""`syncflow status`: is every entity healthy? Made for health checks and alerting.

An entity is unhealthy when its last three runs or more failed in a row,
when it is stale (its last success, or, never synced, its discovery, is older
than ``stale_factor`` times its interval), when it needs attention, or when
the delete guard held back deletes in its last completed run: rows gone at
the source stay live in the table until someone looks; or when its last
run's ``after_sync_sql`` (its own or its connector's) failed.

Read-only: a run left ``running`` by a dead process (its claim is free) is
shown as ``abandoned`` without being marked; the next sync marks it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import sql
from psycopg.rows import dict_row

from syncflow import aftersync, claims, store
from syncflow.runtime import Runtime
from syncflow.schedule import effective_settings
from syncflow.store import Conn

EXACT_BELOW = 1_000_000  # tables estimated smaller than this are counted exactly by status

FAILURE_THRESHOLD = 3


def entity_health(
    runtime: Runtime, conn: Conn, *, stale_factor: float, connector: str | None = None
) -> list[dict[str, Any]]:
    """One row per entity with its last run, next due time and health verdict."""
    schema = runtime.schema
    now = datetime.now(UTC)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            sql.SQL(
                "SELECT DISTINCT ON (entity_uid) entity_uid::text AS uid, status, started_at, completed_at,"
                " records_fetched, error_details, status = 'running' AND NOT EXISTS (SELECT 1 FROM pg_locks l"
                "   WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.classid = %s::oid"
                "   AND l.objid = (hashtext(entity_uid::text)::bigint & 4294967295)::oid) AS dead"
                " FROM {} ORDER BY entity_uid, started_at DESC"
            ).format(sql.Identifier(schema, "sync_runs")),
            [claims.LOCK_NAMESPACE],
        )
        last_runs = {r["uid"]: r for r in cur.fetchall()}
        cur.execute(
            sql.SQL(
                "SELECT DISTINCT ON (entity_uid) entity_uid::text AS uid, error_details -> 'delete_guard' AS guard"
                " FROM {} WHERE status IN ('success', 'partial') ORDER BY entity_uid, started_at DESC"
            ).format(sql.Identifier(schema, "sync_runs"))
        )
        guards = {r["uid"]: r["guard"] for r in cur.fetchall()}
        cur.execute(
            sql.SQL(
                "SELECT e.uid::text AS uid, e.discovered_at, c.reltuples::bigint AS rows FROM {} e"
                " LEFT JOIN pg_namespace n ON n.nspname = e.target_schema"
                " LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = e.target_table"
            ).format(sql.Identifier(schema, "entities"))
        )
        extra = {r["uid"]: r for r in cur.fetchall()}
        for e in store.list_entities(conn, schema, connector=connector):
            found = extra.get(e.uid)
            estimate = found.get("rows") if found else None
            if found is not None and estimate is not None and estimate < EXACT_BELOW:
                # reltuples is -1 until the first ANALYZE (a fresh load showed "0"): count small tables exactly.
                cur.execute(
                    sql.SQL("SELECT count(*) AS n FROM {} WHERE NOT _bridge_deleted").format(
                        sql.Identifier(e.target_schema, e.target_table)
                    )
                )
                counted = cur.fetchone()
                found["rows"] = counted["n"] if counted else estimate
    out = []
    for e in store.list_entities(conn, schema, connector=connector):
        eff = effective_settings(runtime, e)
        interval = timedelta(seconds=eff.interval_seconds)
        run = last_runs.get(e.uid)
        reference = e.last_success_at or extra.get(e.uid, {}).get("discovered_at")
        active = eff.enabled and e.syncable and e.connector in runtime.config.settings.connectors
        stale = bool(active and reference is not None and now - reference > interval * stale_factor)
        failing = e.consecutive_failures >= FAILURE_THRESHOLD
        problems = []
        if failing:
            problems.append(f"{e.consecutive_failures} failures in a row")
        if stale:
            problems.append(f"no success for more than {stale_factor:g} × {eff.interval_seconds}s")
        if e.needs_attention:
            problems.append(f"needs attention: {e.needs_attention}")
        guard = guards.get(e.uid)
        held = _held(guard)
        if held:
            why = _guard_reason(guard)
            problems.append(f"attention: delete guard held back {held} deletes" + (f" ({why})" if why else ""))
        hook_failure = aftersync.failure(run["error_details"]) if run else None
        if hook_failure:
            problems.append(hook_failure)
        next_due = (e.last_sync_at + interval) if e.last_sync_at else now
        rows = extra.get(e.uid, {}).get("rows")
        out.append(
            {
                "entity": e.ref,
                "strategy": e.delta_strategy,
                "enabled": eff.enabled,
                "last_run_status": ("abandoned" if run["dead"] else run["status"]) if run else None,
                "last_run_started_at": run["started_at"].isoformat() if run else None,
                "last_run_fetched": run["records_fetched"] if run else None,
                "last_success_at": e.last_success_at.isoformat() if e.last_success_at else None,
                "next_due_at": next_due.isoformat() if active else None,
                "consecutive_failures": e.consecutive_failures,
                "rows": max(int(rows), 0) if rows is not None else None,
                "stale": stale,
                "delete_guard_held": held,
                "healthy": not problems,
                "problems": problems,
            }
        )
    return out


def _guard_reason(guard: Any) -> str:
    """The guard's first reason (rows rejected, too many deletes, ...), so the operator knows where to look."""
    reasons = guard.get("reasons") if isinstance(guard, dict) else None
    return str(reasons[0])[:200] if isinstance(reasons, list) and reasons else ""


def _held(guard: Any) -> int:
    """Rows the delete guard held back, from a run's error details; 0 when absent or unreadable."""
    value = guard.get("would_delete") if isinstance(guard, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
