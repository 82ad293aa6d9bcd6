"""Run records: one ``sync_runs`` row per run, its rejects, and the entity's last_sync_*."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from syncflow.claims import LOCK_NAMESPACE
from syncflow.errors import UsageError
from syncflow.models import Entity
from syncflow.store import Conn, hostname, one


@dataclass
class Counts:
    """Outcome counters of one run; each fetched row counts once."""

    fetched: int = 0
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    rejected: int = 0
    tombstones: int = 0  # part of ``deleted``: rows the source reported as deleted
    duplicates: int = 0
    pages: int = 0
    bytes: int = 0

    @property
    def unchanged(self) -> int:
        return max(self.fetched - self.inserted - self.updated - self.rejected - self.tombstones, 0)


@dataclass
class Reject:
    business_key: dict[str, Any] | None
    column: str | None
    reason: str
    value: str | None


@dataclass
class RunResult:
    """What a run did, for the CLI and for tests."""

    uid: str
    entity: str
    kind: str
    status: str
    counts: Counts = field(default_factory=Counts)
    rowversion_start: str | None = None
    rowversion_end: str | None = None
    error_message: str | None = None
    error_details: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    duration: float = 0.0
    http_requests: int = 0
    http_retries: int = 0
    http_seconds: float = 0.0
    # The connector pushing back, and the concurrency the run's requests were admitted at (syncflow.limiter).
    http_throttled: int = 0
    concurrency_max: int | None = None
    concurrency_avg: float | None = None
    in_flight_max: int | None = None
    # Outcomes of after_sync_sql by scope ("entity", "connector"); see syncflow.aftersync.
    after_sync: dict[str, dict[str, Any]] = field(default_factory=dict)
    # A resumed first load: the dead run it continued, and the rows loaded before it began.
    resumed_from: str | None = None
    resumed_at_rows: int | None = None

    @property
    def after_sync_failed(self) -> bool:
        return any(h.get("status") == "failed" for h in self.after_sync.values())

    def to_json(self) -> dict[str, Any]:
        c = self.counts
        data = {
            "uid": self.uid,
            "entity": self.entity,
            "kind": self.kind,
            "status": self.status,
            "records_fetched": c.fetched,
            "records_inserted": c.inserted,
            "records_updated": c.updated,
            "records_unchanged": c.unchanged,
            "records_deleted": c.deleted,
            "records_rejected": c.rejected,
            "pages": c.pages,
            "bytes": c.bytes,
            "rowversion_start": self.rowversion_start,
            "rowversion_end": self.rowversion_end,
            "duration_seconds": round(self.duration, 3),
            "http_requests": self.http_requests,
            "http_retries": self.http_retries,
            "http_throttled": self.http_throttled,
            "concurrency_max": self.concurrency_max,
            "concurrency_avg": self.concurrency_avg,
            "in_flight_max": self.in_flight_max,
            "error_message": self.error_message,
            "warnings": self.warnings,
        }
        if self.resumed_from is not None:
            data["resumed_from"] = self.resumed_from
            data["resumed_at_rows"] = self.resumed_at_rows
        if self.after_sync:
            data["after_sync"] = self.after_sync
        return data


def _t(schema: str, name: str) -> sql.Identifier:
    return sql.Identifier(schema, name)


def start(conn: Conn, schema: str, entity: Entity, *, kind: str, rowversion_start: str | None) -> str:
    """Insert the run as ``running`` and commit, so it is visible while it runs."""
    row = conn.execute(
        sql.SQL(
            "INSERT INTO {} (entity_uid, kind, status, rowversion_start, hostname, pid)"
            " VALUES (%s, %s, 'running', %s, %s, %s) RETURNING uid::text"
        ).format(_t(schema, "sync_runs")),
        [entity.uid, kind, rowversion_start, hostname(), os.getpid()],
    ).fetchone()
    conn.commit()
    return str(one(row, "starting the run")[0])


def progress(conn: Conn, schema: str, run_uid: str, counts: Counts) -> None:
    """Counters so far, written in the batch's own transaction."""
    conn.execute(
        sql.SQL(
            "UPDATE {} SET records_fetched = %s, records_inserted = %s, records_updated = %s,"
            " records_unchanged = %s, records_deleted = %s, records_rejected = %s, pages = %s, bytes = %s"
            " WHERE uid = %s"
        ).format(_t(schema, "sync_runs")),
        [
            counts.fetched,
            counts.inserted,
            counts.updated,
            counts.unchanged,
            counts.deleted,
            counts.rejected,
            counts.pages,
            counts.bytes,
            run_uid,
        ],
    )


def save_resume(conn: Conn, schema: str, run_uid: str, resume: dict[str, Any]) -> None:
    """The progress a running run has committed, in the batch's own transaction (see :func:`resumable`)."""
    conn.execute(
        sql.SQL("UPDATE {} SET resume = %s WHERE uid = %s").format(_t(schema, "sync_runs")), [Jsonb(resume), run_uid]
    )


def advance_checkpoint(conn: Conn, schema: str, entity_uid: str, rowversion: str) -> None:
    """Commit a keyset read's progress as the entity's checkpoint, with the batch it covers."""
    conn.execute(
        sql.SQL("UPDATE {} SET last_rowversion = %s, updated_at = now() WHERE uid = %s").format(_t(schema, "entities")),
        [rowversion, entity_uid],
    )


# A run that ended so can have left committed progress behind it (``running``: dead, not yet marked).
UNFINISHED = ("failed", "cancelled", "abandoned", "running")


def resumable(conn: Conn, schema: str, entity_uid: str, run_uid: str) -> tuple[str, dict[str, Any]] | None:
    """(run uid, its progress): the latest run that died with committed progress since the entity's last
    finished run; runs that died before committing anything (a source still down) do not hide it."""
    row = conn.execute(
        sql.SQL(
            "SELECT uid::text, status, resume FROM {runs} WHERE entity_uid = %s AND uid <> %s AND resume IS NOT NULL"
            " AND started_at > coalesce((SELECT max(started_at) FROM {runs} WHERE entity_uid = %s"
            " AND status IN ('success', 'partial')), '-infinity')"
            " ORDER BY started_at DESC, created_at DESC LIMIT 1"
        ).format(runs=_t(schema, "sync_runs")),
        [entity_uid, run_uid, entity_uid],
    ).fetchone()
    if row is None or row[1] not in UNFINISHED or not isinstance(row[2], dict):
        return None
    return str(row[0]), row[2]


def add_rejects(conn: Conn, schema: str, run_uid: str, rejects: list[Reject]) -> None:
    if not rejects:
        return
    with conn.cursor() as cur:
        cur.executemany(
            sql.SQL(
                "INSERT INTO {} (run_uid, business_key, column_name, reason, value) VALUES (%s, %s, %s, %s, %s)"
            ).format(_t(schema, "sync_rejects")),
            [
                [
                    run_uid,
                    Jsonb(r.business_key) if r.business_key is not None else None,
                    r.column,
                    r.reason,
                    r.value,
                ]
                for r in rejects
            ],
        )


def finish(
    conn: Conn,
    schema: str,
    entity: Entity,
    result: RunResult,
    *,
    checkpoint: str | None,
    set_checkpoint: bool,
) -> None:
    """Close the run and update the entity, in the caller's transaction."""
    progress(conn, schema, result.uid, result.counts)
    conn.execute(
        sql.SQL(
            "UPDATE {} SET status = %s, completed_at = clock_timestamp(), rowversion_end = %s, duration_seconds = %s,"
            " error_message = %s, error_details = %s, http_requests = %s, http_retries = %s, http_seconds = %s,"
            " resumed_from = %s, resumed_at_rows = %s,"
            " http_throttled = %s, concurrency_max = %s, concurrency_avg = %s, in_flight_max = %s"
            " WHERE uid = %s"
        ).format(_t(schema, "sync_runs")),
        [
            result.status,
            result.rowversion_end,
            result.duration,
            result.error_message,
            Jsonb(result.error_details) if result.error_details else None,
            result.http_requests,
            result.http_retries,
            result.http_seconds,
            result.resumed_from,
            result.resumed_at_rows,
            result.http_throttled,
            result.concurrency_max,
            result.concurrency_avg,
            result.in_flight_max,
            result.uid,
        ],
    )
    ok = result.status == "success"
    conn.execute(
        sql.SQL(
            "UPDATE {} SET last_sync_at = clock_timestamp(), last_sync_status = %s,"
            " last_success_at = CASE WHEN %s THEN clock_timestamp() ELSE last_success_at END,"
            " consecutive_failures = CASE WHEN %s THEN 0 ELSE consecutive_failures + 1 END,"
            " last_rowversion = CASE WHEN %s THEN %s ELSE last_rowversion END,"
            " missing_at_source = missing_at_source OR %s, updated_at = now() WHERE uid = %s"
        ).format(_t(schema, "entities")),
        [
            result.status,
            ok,
            ok,
            set_checkpoint,
            checkpoint,
            bool(result.error_details.get("missing_at_source")),
            entity.uid,
        ],
    )


def _select_runs(schema: str, where: sql.Composable, tail: sql.Composable) -> sql.Composed:
    return sql.SQL(
        "SELECT r.uid::text AS uid, c.name || '.' || e.slug AS entity, r.kind,"
        # A run still 'running' whose claim nobody holds belongs to a dead process (as status says);
        # the next sync of the entity records it as abandoned. Read-only: nothing is marked here.
        " CASE WHEN r.status = 'running' AND NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory'"
        " AND l.granted AND l.objsubid = 2 AND l.classid = {namespace}::oid"
        " AND l.objid = (hashtext(r.entity_uid::text)::bigint & 4294967295)::oid) THEN 'abandoned'"
        " ELSE r.status END AS status, r.started_at,"
        " r.completed_at, r.records_fetched, r.records_inserted, r.records_updated, r.records_unchanged,"
        " r.records_deleted, r.records_rejected, r.rowversion_start, r.rowversion_end, r.pages, r.bytes,"
        " r.duration_seconds, r.error_message, r.error_details, r.hostname, r.pid, r.http_requests, r.http_retries,"
        " r.http_seconds, r.resumed_from::text AS resumed_from, r.resumed_at_rows,"
        " r.http_throttled, r.concurrency_max, r.concurrency_avg, r.in_flight_max"
        " FROM {runs} r JOIN {entities} e ON e.uid = r.entity_uid JOIN {connectors} c ON c.uid = e.connector_uid"
        " {where} {tail}"
    ).format(
        runs=_t(schema, "sync_runs"),
        entities=_t(schema, "entities"),
        connectors=_t(schema, "connectors"),
        namespace=sql.Literal(LOCK_NAMESPACE),
        where=where,
        tail=tail,
    )


def list_runs(
    conn: Conn,
    schema: str,
    *,
    ref: str | None = None,
    status: str | None = None,
    limit: int = 20,
) -> list[dict[str, Any]]:
    """Runs, newest first, as plain dicts ready for JSON."""
    where = []
    params: list[Any] = []
    if ref:
        connector, _, slug = ref.partition(".")
        where.append("c.name = %s AND e.slug = %s")
        params += [connector, slug]
    if status:
        where.append("r.status = %s")
        params.append(status)
    query = _select_runs(
        schema,
        sql.SQL("WHERE " + " AND ".join(where)) if where else sql.SQL(""),
        sql.SQL("ORDER BY r.started_at DESC, r.created_at DESC LIMIT %s"),
    )
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, [*params, limit])
        rows = cur.fetchall()
    for r in rows:
        for key in ("started_at", "completed_at"):
            r[key] = r[key].isoformat() if r[key] else None
    return rows


def get_run(conn: Conn, schema: str, uid: str) -> dict[str, Any] | None:
    """One run with its rejects, or None; a prefix that several runs share is a UsageError."""
    query = _select_runs(
        schema, sql.SQL("WHERE starts_with(r.uid::text, %s)"), sql.SQL("ORDER BY r.started_at DESC LIMIT 2")
    )
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, [uid.strip().lower()])
        found = cur.fetchall()
        if len(found) > 1 and uid.strip():
            cur.execute(
                sql.SQL("SELECT count(*) AS n FROM {} WHERE starts_with(uid::text, %s)").format(
                    _t(schema, "sync_runs")
                ),
                [uid.strip().lower()],
            )
            counted = cur.fetchone()
            n = counted["n"] if counted else len(found)
            raise UsageError(f"run id {uid.strip()!r} is ambiguous: {n} runs match; give more characters")
        if len(found) != 1 or not uid.strip():
            return None
        run = found[0]
        uid = run["uid"]
        cur.execute(
            sql.SQL(
                "SELECT business_key, column_name AS column, reason, value FROM {} WHERE run_uid = %s ORDER BY id"
            ).format(_t(schema, "sync_rejects")),
            [uid],
        )
        run["rejects"] = cur.fetchall()
    for key in ("started_at", "completed_at"):
        run[key] = run[key].isoformat() if run[key] else None
    return run
