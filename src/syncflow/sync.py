"""One sync run of one entity: page stream → stage (COPY) → merge → run record.

Transactions: each batch (pages staged up to ``batch_rows``, merged) commits
on its own, so a crash keeps what was loaded; the checkpoint, the delete
reconciliation and the run's final record are written in the transaction of
the last batch, so they are never ahead of the rows stored. A failed run
rolls back its open batch, records the failure and leaves the checkpoint
where it was.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from syncflow import history, merge, runs
from syncflow.client import APISmithClient
from syncflow.errors import Cancelled, SourceError, SourceNotFound, SyncFlowError
from syncflow.pages import Page, PageStream, prefetch
from syncflow.runs import Reject, RunResult
from syncflow.stage import Row, Stage
from syncflow.store import Conn, Entity

BATCH_ROWS = 25_000


@dataclass(frozen=True)
class SyncOptions:
    """How one run behaves; from the config and the command line."""

    page_size: int = 1000
    full_refresh: bool = False
    max_delete_fraction: float = 0.5
    history: bool = False
    batch_rows: int = BATCH_ROWS
    prefetch_pages: int = 24


@dataclass
class Progress:
    """Reported after each page, for progress bars and logs."""

    entity: str
    pages: int
    rows: int
    bytes: int
    total: int | None


ProgressFn = Callable[[Progress], None]


def sync_entity(
    conn: Conn,
    schema: str,
    entity: Entity,
    client: APISmithClient,
    *,
    options: SyncOptions,
    on_progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    reconnect: Callable[[], Conn] | None = None,
) -> RunResult:
    """Run one sync of ``entity`` and record it; never raises for a failed run."""
    kind = "full_refresh" if options.full_refresh else "sync"
    start_rv = None if options.full_refresh else entity.last_rowversion
    run_uid = runs.start(conn, schema, entity, kind=kind, rowversion_start=entity.last_rowversion)
    result = RunResult(
        uid=run_uid, entity=entity.ref, kind=kind, status="running", rowversion_start=entity.last_rowversion
    )
    started = time.monotonic()
    try:
        _refuse_unsyncable(entity)
        _run(conn, schema, entity, client, options, result, start_rv, on_progress, cancel, started)
    except Exception as exc:
        result.duration = time.monotonic() - started
        _record_failure(conn, schema, entity, result, exc, reconnect)
    return result


def _refuse_unsyncable(entity: Entity) -> None:
    if not entity.syncable:
        raise SyncFlowError(f"{entity.ref} cannot be synced: {entity.unsyncable_reason}")
    if entity.needs_attention:
        raise SyncFlowError(f"{entity.ref} needs attention: {entity.needs_attention}")


def _run(
    conn: Conn,
    schema: str,
    entity: Entity,
    client: APISmithClient,
    options: SyncOptions,
    result: RunResult,
    start_rv: str | None,
    on_progress: ProgressFn | None,
    cancel: threading.Event | None,
    started: float,
) -> None:
    rowversion = entity.delta_strategy == "rowversion"
    reconcile = options.full_refresh or entity.delta_strategy in ("full", "hash")
    columns = entity.active_columns
    keys = entity.business_keys
    key_api = [c.api_name for c in columns if c.pg_name in keys]
    target = sql.Identifier(entity.target_schema, entity.target_table)
    row = conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(target)).fetchone()
    # An empty target has nothing to delete and nothing to compare: skip the seen-key bookkeeping.
    track_seen = bool(row and row[0])
    stage = Stage(
        conn,
        schema=entity.target_schema,
        table=entity.target_table,
        columns=columns,
        keys=keys,
        track_seen=track_seen,
    )
    history_table = history.ensure(conn, entity) if options.history else None
    merge_plain, merge_dedup = (
        merge.merge(
            entity.target_schema,
            entity.target_table,
            columns,
            keys,
            dedup=d,
            prefilter=track_seen,
            history=history_table,
            run_uid=result.uid,
        )
        for d in (False, True)
    )
    # Into a table that was empty when the run began, a plain INSERT is enough until a key repeats.
    merge_fresh = merge.merge(
        entity.target_schema,
        entity.target_table,
        columns,
        keys,
        dedup=False,
        prefilter=False,
        plain_insert=True,
        history=history_table,
        run_uid=result.uid,
    )
    fresh = not track_seen
    seen_sql = merge.seen_insert(keys)
    conn.commit()
    counts = result.counts
    stream = PageStream(
        client,
        entity.slug,
        page_size=options.page_size,
        key_names=key_api,
        rowversion_gt=start_rv if rowversion else None,
        keyset=rowversion,
    )
    rejects: list[Reject] = []
    rows_seen = 0

    def run_merge() -> tuple[Any, ...] | None:
        nonlocal fresh
        if fresh and not stage.has_dups:
            try:
                with conn.transaction():
                    return conn.execute(merge_fresh).fetchone()
            except psycopg.errors.UniqueViolation:
                fresh = False  # a key came again (rows shifted between pages): upsert from now on
        return conn.execute(merge_dedup if stage.has_dups else merge_plain).fetchone()

    def flush() -> None:
        nonlocal rejects
        stage.send(rejects)
        if stage.staged:
            if track_seen:
                conn.execute(seen_sql)
            row = run_merge()
            assert row is not None
            distinct, tombs, inserted, updated, _tomb_deleted = (int(v) for v in row)
            counts.duplicates += stage.staged - distinct
            counts.fetched += distinct
            counts.inserted += inserted
            counts.updated += updated
            counts.tombstones += tombs
            counts.deleted += tombs
            stage.truncate()
        if rejects:
            runs.add_rejects(conn, schema, result.uid, rejects)
            counts.rejected += len(rejects)
            counts.fetched += len(rejects)
            rejects = []

    def prepare(page: Page) -> tuple[Page, list[Row], list[Reject]]:
        bad: list[Reject] = []
        return page, stage.build(page.rows, bad), bad

    for page, tuples, bad in prefetch(stream, options.prefetch_pages, cancel=cancel, prepare=prepare):
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"{entity.ref}: cancelled by a signal")
        rejects += bad
        stage.add(tuples, rejects)
        rows_seen += len(page.rows)
        counts.pages, counts.bytes = stream.state.pages, stream.state.bytes
        if stage.queued >= options.batch_rows:
            flush()
            runs.progress(conn, schema, result.uid, counts)
            conn.commit()
        if on_progress is not None:
            on_progress(Progress(entity.ref, counts.pages, rows_seen, counts.bytes, stream.state.first_total))
    flush()
    if track_seen:
        # Fresh statistics, so that the anti-join of the delete step is planned as a hash join.
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(merge.SEEN)))
        row = conn.execute(merge.seen_stats(keys)).fetchone()
        assert row is not None
        total_keys, distinct_keys = int(row[0]), int(row[1])
        # Keys that came in more than one batch: counted once.
        counts.duplicates += total_keys - distinct_keys
        counts.fetched = distinct_keys + counts.rejected
    st = stream.state
    result.warnings += st.warnings
    if stage.drift:
        result.warnings.append(
            "the source sends columns not in the metadata (ignored this run; run 'syncflow discover'): "
            + ", ".join(sorted(stage.drift))
        )
        result.error_details["schema_drift"] = sorted(stage.drift)
    if reconcile and track_seen:
        _reconcile_deletes(conn, entity, options, result, st.first_total, st.total_changed, history_table)
    partial = counts.rejected > 0
    result.status = "partial" if partial else "success"
    if partial:
        result.error_message = f"{counts.rejected} row(s) rejected; see 'syncflow runs show {result.uid}'"
    set_checkpoint = False
    checkpoint: str | None = entity.last_rowversion
    if rowversion and not partial:
        previous = None if options.full_refresh else entity.last_rowversion
        checkpoint = st.checkpoint(previous)
        set_checkpoint = True
        if st.capped:
            result.warnings.append(
                "the source changed while paging; the checkpoint stays below the unstable part"
                " and the next run reads it again"
            )
    elif options.full_refresh and not partial:
        checkpoint, set_checkpoint = None, True
    result.rowversion_end = checkpoint if set_checkpoint else entity.last_rowversion
    result.duration = time.monotonic() - started
    if result.warnings:
        result.error_details["warnings"] = result.warnings
    runs.finish(conn, schema, entity, result, checkpoint=checkpoint, set_checkpoint=set_checkpoint)
    conn.commit()
    stage.close()
    conn.commit()


def _reconcile_deletes(
    conn: Conn,
    entity: Entity,
    options: SyncOptions,
    result: RunResult,
    first_total: int | None,
    total_changed: bool,
    history_table: str | None,
) -> None:
    """Soft-delete rows not seen in this complete fetch, unless it looks unsafe."""
    counts = result.counts
    reasons = []
    if counts.rejected:
        reasons.append(f"{counts.rejected} row(s) were rejected, so the fetch is incomplete")
    if total_changed:
        reasons.append("the announced total changed during the run")
    if counts.duplicates:
        reasons.append(f"{counts.duplicates} key(s) came more than once (rows shifted between pages)")
    distinct = counts.fetched - counts.rejected
    if first_total is not None and distinct < first_total:
        reasons.append(f"fewer distinct keys arrived ({distinct}) than the total announced ({first_total})")
    row = conn.execute(merge.delete_counts(entity.target_schema, entity.target_table, entity.business_keys)).fetchone()
    assert row is not None
    live, unseen = int(row[0]), int(row[1])
    if unseen == 0:
        return
    if live and unseen / live > options.max_delete_fraction:
        reasons.append(
            f"it would soft-delete {unseen} of {live} rows ({unseen / live:.0%}), more than the allowed "
            f"{options.max_delete_fraction:.0%} (--max-delete-fraction overrides)"
        )
    if reasons:
        result.warnings.append(f"deleted nothing: {'; '.join(reasons)}")
        result.error_details["delete_guard"] = {"would_delete": unseen, "live": live, "reasons": reasons}
        return
    row = conn.execute(
        merge.soft_delete_unseen(
            entity.target_schema,
            entity.target_table,
            entity.business_keys,
            columns=entity.active_columns,
            history=history_table,
            run_uid=result.uid,
        )
    ).fetchone()
    counts.deleted += int(row[0]) if row else 0


def _record_failure(
    conn: Conn,
    schema: str,
    entity: Entity,
    result: RunResult,
    exc: Exception,
    reconnect: Callable[[], Conn] | None,
) -> None:
    """Record the failed (or cancelled) run; nothing here may interrupt or lose that record.

    A signal cancels the statement a worker is blocked in; the resulting
    QueryCanceled is the signal's doing, so the run is ``cancelled``.
    """
    from syncflow import inflight  # the runner watches this connection; recording must not be interrupted

    signalled = inflight.stand_down()
    cancelled = isinstance(exc, Cancelled) or (signalled and isinstance(exc, psycopg.errors.QueryCanceled))
    result.status = "cancelled" if cancelled else "failed"
    details: dict[str, Any] = {"error": type(exc).__name__}
    if isinstance(exc, SyncFlowError):
        message = exc.message
        details.update(exc.details)
        if isinstance(exc, SourceNotFound):
            details["missing_at_source"] = True
            message += f" (the API {entity.slug!r} is gone at the source; 'syncflow discover' confirms)"
    elif cancelled:
        message = f"{entity.ref}: cancelled by a signal while waiting for PostgreSQL"
    elif isinstance(exc, psycopg.Error):
        message = f"{entity.ref}: database error: {str(exc).strip().splitlines()[0]}"
        if exc.sqlstate:
            details["sqlstate"] = exc.sqlstate
    else:
        message = f"{entity.ref}: unexpected error: {type(exc).__name__}: {exc}"
    if isinstance(exc, SourceError) and not message.startswith(entity.ref):
        message = f"{entity.ref}: {message}"
    result.error_message = message
    result.error_details = {**result.error_details, **details}
    with contextlib.suppress(psycopg.Error):
        conn.rollback()
    # A cancel request that crossed the rollback may still hit the next statement: then record on a new connection.
    for attempt in (conn, None):
        target = attempt
        if target is None or target.closed or target.broken:
            if reconnect is None:
                return
            try:
                target = reconnect()
            except SyncFlowError:
                return
        try:
            runs.finish(target, schema, entity, result, checkpoint=None, set_checkpoint=False)
            target.commit()
            return
        except psycopg.Error:
            with contextlib.suppress(psycopg.Error):
                target.rollback()
        finally:
            if target is not conn:
                target.close()
