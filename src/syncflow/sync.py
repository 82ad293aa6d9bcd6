"""One sync run of one entity: page stream → stage (COPY) → merge → run record.

Transactions: each batch (pages staged up to ``batch_rows``, merged) commits
on its own, with the run's progress and what a later run may resume from
(syncflow.resume), so a crash keeps what was loaded; the checkpoint, the delete
reconciliation and the run's final record are written in the transaction of
the last batch, so they are never ahead of the rows stored. A failed run
rolls back its open batch, records the failure and leaves the checkpoint
where it was.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from syncflow import guard, history, merge, records
from syncflow.client import APISmithClient
from syncflow.errors import Cancelled, SourceError, SourceNotFound, SyncFlowError, UsageError
from syncflow.models import ColumnPolicy, Entity
from syncflow.pages import AHEAD_BYTES, MAX_PASSES, PREFETCH_BYTES, Page, PageStream, prefetch, rowversion_before
from syncflow.ranges import RangeStream
from syncflow.records import Reject, RunResult
from syncflow.resume import Resume
from syncflow.stage import Row, Stage
from syncflow.store import Conn, one

BATCH_ROWS = 25_000
MAX_TRACEBACK = 8000  # characters of an unexpected error's traceback kept in the run record

log = logging.getLogger("syncflow.sync")


@dataclass(frozen=True)
class SyncOptions:
    """How one run behaves; from the config and the command line."""

    page_size: int = 1000
    full_refresh: bool = False
    max_delete_fraction: float = 0.5
    history: bool = False
    batch_rows: int = BATCH_ROWS
    # What one run may hold fetched ahead of its loader: pages and JSON bytes waiting for the loader, and
    # JSON bytes of pages being fetched in parallel. An invocation syncing several entities at once shares
    # them out (syncflow.workers), so that memory is bounded per process, not per entity.
    prefetch_pages: int = 24
    prefetch_bytes: int = PREFETCH_BYTES
    ahead_bytes: int = AHEAD_BYTES
    # A targeted backfill: re-read the rows above this row version (rowversion entities only).
    backfill_from: str | None = None
    # The file's column policies; None: not checked against what discovery applied.
    policy: ColumnPolicy | None = None
    # The HMAC key of hashed columns; never shown (repr) or recorded.
    hash_key: bytes | None = field(default=None, repr=False)

    @property
    def kind(self) -> str:
        """The run kind recorded in ``sync_runs``."""
        if self.backfill_from is not None:
            return "backfill"
        return "full_refresh" if self.full_refresh else "sync"


@dataclass
class Progress:
    """Reported after each page, for progress bars and logs.

    ``rows``, ``pages`` and ``bytes`` span the whole run; ``read`` numbers the
    read of the entity (a full or hash entity may be read again to confirm
    deletions), ``read_rows`` counts the rows of that read and ``total`` is the
    row count the source announced for it (None when it announces none).
    """

    entity: str
    pages: int
    rows: int
    bytes: int
    total: int | None
    read: int = 1
    read_rows: int = 0


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
    kind = options.kind
    start_rv = None if options.full_refresh else entity.last_rowversion
    if options.backfill_from is not None:
        start_rv = options.backfill_from
    run_uid = records.start(conn, schema, entity, kind=kind, rowversion_start=entity.last_rowversion)
    result = RunResult(
        uid=run_uid, entity=entity.ref, kind=kind, status="running", rowversion_start=entity.last_rowversion
    )
    started = time.monotonic()
    try:
        _refuse_unsyncable(entity)
        if options.policy is not None:
            refuse_policy_drift(entity, options.policy)
        if options.backfill_from is not None:
            check_backfill(entity)
            result.error_details["backfill"] = {"from_rowversion": options.backfill_from}
        _Run(
            conn=conn,
            schema=schema,
            entity=entity,
            client=client,
            options=options,
            result=result,
            start_rv=start_rv,
            on_progress=on_progress,
            cancel=cancel,
            started=started,
        ).execute()
    except Exception as exc:
        result.duration = time.monotonic() - started
        note_http(result, client)
        _record_failure(conn, schema, entity, result, exc, reconnect)
    return result


def check_backfill(entity: Entity) -> None:
    """A backfill re-reads rows above a row version: only a rowversion entity has them."""
    if entity.delta_strategy != "rowversion":
        raise UsageError(
            f"{entity.ref}: --from-rowversion needs a rowversion entity; its delta strategy is"
            f" {entity.delta_strategy} (use 'syncflow full-refresh {entity.ref}' to read it all again)"
        )


def note_http(result: RunResult, client: APISmithClient) -> None:
    """What the run asked of the source, into its record (written by ``records.finish``)."""
    result.http_requests = client.stats.requests
    result.http_retries = client.stats.retries
    result.http_seconds = round(client.stats.seconds, 3)
    result.http_throttled = client.stats.throttled
    if client.stats.admitted:
        result.concurrency_max = client.stats.limit_max
        avg = client.stats.limit_avg
        result.concurrency_avg = None if avg is None else round(avg, 2)
        result.in_flight_max = client.stats.in_flight_max


def _refuse_unsyncable(entity: Entity) -> None:
    if not entity.syncable:
        raise SyncFlowError(f"{entity.ref} cannot be synced: {entity.unsyncable_reason}")
    if entity.needs_attention:
        raise SyncFlowError(f"{entity.ref} needs attention: {entity.needs_attention}")


def refuse_policy_drift(entity: Entity, policy: ColumnPolicy) -> None:
    """The file's column policies must be the ones discovery applied: else the table has the wrong form.

    Syncing anyway would store a value the file says to hash or exclude, or a hash into a
    column of the source's type; the run fails until ``discover`` applies the change.
    """
    applied = {c.api_name: c.policy for c in entity.columns if c.policy is not None}
    current = {c.api_name for c in entity.columns if not c.retired or c.policy == "exclude"}
    wanted = {name: policy.of(name) for name in (policy.exclude | policy.hash) & current}
    if applied != wanted:
        differ = sorted(set(applied.items()) ^ set(wanted.items()))
        names = ", ".join(dict.fromkeys(name for name, _ in differ))
        raise SyncFlowError(
            f"{entity.ref}: the column policies in the file differ from the table's ({names});"
            f" run 'syncflow discover {entity.connector}' to apply them, then sync again",
            details={"policy_columns": sorted({name for name, _ in differ})},
        )


class _Loader:
    """Stages pages and merges them into the target, one committed batch at a time.

    One loader serves every pass of a run (a verification pass goes through
    it too), so counts, rejects and the seen-key table span the whole run.
    """

    def __init__(
        self,
        conn: Conn,
        schema: str,
        entity: Entity,
        result: RunResult,
        options: SyncOptions,
        *,
        track_seen: bool,
        history_table: str | None,
    ) -> None:
        self.conn = conn
        self.schema = schema
        self.entity = entity
        self.result = result
        self.options = options
        self.track_seen = track_seen
        keys = entity.business_keys
        columns = entity.active_columns
        self.stage = Stage(
            conn,
            schema=entity.target_schema,
            table=entity.target_table,
            columns=columns,
            keys=keys,
            track_seen=track_seen,
            ignored=[n for c in entity.columns if c.policy == "exclude" for n in (c.api_name, c.source_name)],
            hash_key=options.hash_key,
        )

        # The database's clock when the run began: a row written at or after it was written by this run,
        # so a later read that rewrites it does not count it again (merge.merge's ``since``).
        since = one(conn.execute("SELECT now()").fetchone(), "the database clock")[0]

        def build(**kw: Any) -> sql.Composed:
            target = (entity.target_schema, entity.target_table)
            return merge.merge(*target, columns, keys, history=history_table, run_uid=result.uid, since=since, **kw)

        self._build = build
        self._history = history_table is not None
        self.versioned = False
        self._statements(versioned=False)
        self.fresh = not track_seen
        self.rejects: list[Reject] = []
        self.rows_seen = 0
        self.pages = 0
        self.bytes = 0
        self.reads = 0
        # Called with the last page taken before each batch commits (in its transaction): how a run
        # records the progress a later run resumes from.
        self.on_commit: Callable[[Page, PageStream], None] | None = None

    def _statements(self, *, versioned: bool) -> None:
        build, track_seen = self._build, self.track_seen
        self.versioned = versioned
        self.merge_plain = build(dedup=False, prefilter=track_seen, versioned=versioned)
        self.merge_dedup = build(dedup=True, prefilter=track_seen, versioned=versioned)
        # Into a table that was empty when the run began, a plain INSERT is enough until a key repeats.
        self.merge_fresh = build(dedup=False, prefilter=False, plain_insert=True, versioned=versioned)
        # A batch of live rows only needs no merge at all there: a plain INSERT ... SELECT (merge.insert_new),
        # unless history rows are written with it or a versioned run's tombstones must be respected.
        self.insert_new = (
            None
            if versioned or self._history
            else merge.insert_new(self.entity.target_schema, self.entity.target_table, self.entity.active_columns)
        )

    def start_tracking(self) -> None:
        """Record seen keys from now on (see :meth:`Stage.start_seen`)."""
        if not self.track_seen:
            self.stage.start_seen()
            self.track_seen = True

    def _merge(self) -> tuple[Any, ...] | None:
        conn, stage = self.conn, self.stage
        if self.fresh and not stage.has_dups:
            try:
                with conn.transaction():
                    if self.insert_new is not None and not stage.has_tombs:
                        inserted = conn.execute(self.insert_new).rowcount
                        return (inserted, 0, inserted, 0, 0)  # every staged row, live and new
                    return conn.execute(self.merge_fresh).fetchone()
            except psycopg.errors.UniqueViolation:
                self.fresh = False  # a key came again (rows shifted between pages): upsert from now on
        if not stage.has_dups:
            try:
                with conn.transaction():
                    return conn.execute(self.merge_plain).fetchone()
            except psycopg.errors.CardinalityViolation:
                pass  # one key spelled two ways (1 and "1"): PostgreSQL sees the repeat, deduplicate
        return conn.execute(self.merge_dedup).fetchone()

    def flush(self) -> None:
        """Stage what is queued and merge it (the caller commits)."""
        stage, counts = self.stage, self.result.counts
        if self.conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
            # Open the batch's transaction now: the COPY's and the merge's transaction() blocks are then
            # savepoints in it, so the merged rows commit with the run's progress, its resume record and
            # (last batch) its checkpoint, never before them.
            self.conn.execute("SELECT 1")
        stage.send(self.rejects)
        if stage.staged:
            stage.record_seen()
            stage.record_dead()
            row = one(self._merge(), "the merge")
            distinct, tombs, inserted, updated, tomb_deleted = (int(v) for v in row)
            counts.duplicates += stage.staged - distinct
            counts.fetched += distinct
            counts.inserted += inserted
            counts.updated += updated
            counts.tombstones += tombs
            counts.deleted += tomb_deleted  # a tombstone for a row already soft-deleted deletes nothing
            stage.truncate()
        if self.rejects:
            records.add_rejects(self.conn, self.schema, self.result.uid, self.rejects)
            counts.rejected += len(self.rejects)
            counts.fetched += len(self.rejects)
            self.rejects = []

    def load(self, stream: PageStream, *, cancel: threading.Event | None, on_progress: ProgressFn | None) -> None:
        """Consume one stream: stage its pages, merge and commit every ``batch_rows`` rows."""
        counts, stage = self.result.counts, self.stage
        pages0, bytes0, rows0 = self.pages, self.bytes, self.rows_seen
        self.reads += 1
        if isinstance(stream, RangeStream) and not self.versioned:
            self._statements(versioned=True)  # its pages come out of row-version order
            self.stage.start_versioned()

        def prepare(page: Page) -> tuple[Page, list[Row], list[Reject]]:
            bad: list[Reject] = []
            return page, stage.build(page.rows, bad), bad

        last: list[Page] = []  # the last page taken since the last commit

        def commit() -> None:
            """Merge what is staged and commit it with the run's progress and resume record."""
            self.flush()
            records.progress(self.conn, self.schema, self.result.uid, counts)
            if self.on_commit is not None:
                self.on_commit(last[0], stream)
            self.conn.commit()
            last.clear()

        def on_idle() -> None:  # the source is silent: keep what was read (see pages.prefetch)
            if last:
                commit()

        pages = prefetch(
            stream,
            self.options.prefetch_pages,
            max_bytes=self.options.prefetch_bytes,
            cancel=cancel,
            prepare=prepare,
            on_idle=on_idle,
        )
        for page, tuples, bad in pages:
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"{self.entity.ref}: cancelled by a signal")
            if page.restart:
                self.flush()  # merge what the abandoned read staged; only the new read's keys count from here
                stage.forget_seen()
                last.clear()  # the abandoned read's progress is not the new read's
                continue
            self.rejects += bad
            stage.add(tuples, self.rejects)
            self.rows_seen += len(page.rows)
            counts.pages, counts.bytes = pages0 + stream.state.pages, bytes0 + stream.state.bytes
            last[:] = [page]
            if stage.queued >= self.options.batch_rows:
                commit()
            if on_progress is not None:
                total = stream.state.first_total
                on_progress(
                    Progress(
                        self.entity.ref,
                        counts.pages,
                        self.rows_seen,
                        counts.bytes,
                        total,
                        read=self.reads,
                        read_rows=self.rows_seen - rows0,
                    )
                )
        self.flush()
        self.pages, self.bytes = pages0 + stream.state.pages, bytes0 + stream.state.bytes
        counts.pages, counts.bytes = self.pages, self.bytes


@dataclass
class _Run:
    """One run's read, delete step and record, after :func:`sync_entity` has opened it."""

    conn: Conn
    schema: str
    entity: Entity
    client: APISmithClient
    options: SyncOptions
    result: RunResult
    start_rv: str | None
    on_progress: ProgressFn | None
    cancel: threading.Event | None
    started: float
    resume: Resume | None = None

    @property
    def rowversion(self) -> bool:
        return self.entity.delta_strategy == "rowversion"

    @property
    def stored(self) -> str | None:
        """The entity's checkpoint as committed: batches of a keyset read move it as they commit."""
        return self.resume.stored if self.resume is not None else self.entity.last_rowversion

    def execute(self) -> None:
        entity, options, counts = self.entity, self.options, self.result.counts
        # A rowversion entity read from the start (first run, or a checkpoint reset by discover) is a
        # complete read like a full one: rows gone at the source without a tombstone are found then.
        # A backfill reads only the rows above its row version: it never knows what is gone.
        backfill = options.backfill_from is not None
        reconcile = not backfill and (options.full_refresh or not self.rowversion or self.start_rv is None)
        target = sql.Identifier(entity.target_schema, entity.target_table)
        row = self.conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(target)).fetchone()
        empty = not (row and row[0])
        resume = self.resume = Resume.plan(
            self.conn,
            self.schema,
            entity,
            self.result,
            page_size=options.page_size,
            full_refresh=options.full_refresh,
            backfill=backfill,
            empty=empty,
            reconcile=reconcile,
        )
        # An empty target has nothing to delete and nothing to compare: skip the seen-key bookkeeping.
        # So for a resumed first load: its table holds only the rows of the load it continues.
        track_seen = not empty and not (resume.resuming and not self.rowversion)
        history_table = history.ensure(self.conn, entity) if options.history else None
        loader = _Loader(
            self.conn,
            self.schema,
            entity,
            self.result,
            options,
            track_seen=track_seen,
            history_table=history_table,
        )
        # Each committed batch records the progress a later run resumes from (syncflow.resume).
        loader.on_commit = lambda page, stream: resume.commit(page, stream, rows=loader.rows_seen)
        self.conn.commit()
        stream = self._stream(loader, first_page=resume.first_page)
        loader.load(stream, cancel=self.cancel, on_progress=self.on_progress)
        resume.record = resume.record and self.rowversion  # later reads record nothing to resume
        if resume.resuming and not self.rowversion:
            # The pages before the resume point were read by the dead run, before whatever changed since:
            # the table is complete now, and a complete read (an ordinary sync's) decides what is live and
            # current before the run may end success (docs/correctness.md, "Resumed loads").
            self.conn.commit()
            loader.start_tracking()
            stream = self._stream(loader)
            loader.load(stream, cancel=self.cancel, on_progress=self.on_progress)
        st = stream.state
        hold: list[str] = []
        stable, total = not st.unstable, st.first_total
        if not self.rowversion:
            stable, hold, total = _confirm(
                loader,
                stream,
                lambda: self._stream(loader),
                cancel=self.cancel,
                on_progress=self.on_progress,
            )
        if loader.track_seen:
            staged, distinct = loader.stage.seen_counts()
            if track_seen:  # a first load counted its distinct rows as it inserted them (see _confirm)
                counts.duplicates += staged - distinct  # keys that came in more than one batch: once
                counts.fetched = loader.stage.distinct_seen_all() + counts.rejected
            elif resume.resuming:  # read again whole: its rows were fetched, not only those it inserted
                counts.fetched = max(counts.fetched, loader.stage.distinct_seen_all() + counts.rejected)
        self._note_warnings(st.warnings, loader.stage.drift)
        held = False
        if reconcile and loader.track_seen:
            if not stable:
                hold.append(
                    "the source kept changing while it was read, so rows missing from the fetch may still exist"
                )
            held = self._reconcile_deletes(loader.stage, total, hold, history_table)
        self._record(st.checkpoint(None if options.full_refresh else resume.stored), stable, deletes_held=held)
        loader.stage.close()
        self.conn.commit()

    def _stream(self, loader: _Loader, *, first_page: int = 1) -> PageStream:
        """A read of the entity: by keyset from the checkpoint (rowversion) or every page by number."""
        request_rv = self.start_rv
        if self.rowversion and self.start_rv is not None and self.options.backfill_from is None:
            # Re-read the checkpoint's own version: a row written (or rewritten) later in the same second
            # carries it too. The rows read again unchanged are not written (the merge compares hashes).
            request_rv = rowversion_before(self.start_rv) or self.start_rv
        stream: PageStream
        if self.rowversion and (self.client.max_concurrency > 1 or (self.resume is not None and self.resume.skip)):
            stream = RangeStream(
                self.client,
                self.entity.slug,
                page_size=self.options.page_size,
                key_fn=loader.stage.raw_key,
                rowversion_gt=request_rv,
                workers=self.client.max_concurrency,
                skip=self.resume.skip if self.resume is not None else (),
            )
        else:
            stream = PageStream(
                self.client,
                self.entity.slug,
                page_size=self.options.page_size,
                key_fn=loader.stage.raw_key,
                rowversion_gt=request_rv if self.rowversion else None,
                keyset=self.rowversion,
                first_page=first_page,
                rows_before=self.resume.read if self.resume is not None and first_page > 1 else 0,
            )
        stream.ahead_bytes = self.options.ahead_bytes
        return stream

    def _note_warnings(self, stream_warnings: list[str], drift: set[str]) -> None:
        result = self.result
        result.warnings += stream_warnings
        if drift:
            result.warnings.append(
                "the source sends columns not in the metadata (ignored this run; run 'syncflow discover'): "
                + ", ".join(sorted(drift))
            )
            result.error_details["schema_drift"] = sorted(drift)

    def _reconcile_deletes(self, stage: Stage, total: int | None, hold: list[str], history_table: str | None) -> bool:
        """Soft-delete rows not seen in this complete read, unless the delete guard holds them back (True)."""
        entity, result = self.entity, self.result
        counts = result.counts
        live, unseen = stage.unseen_counts()
        if unseen == 0:
            return False
        reasons = guard.delete_hold_reasons(
            hold=hold,
            rejected=counts.rejected,
            fetched=counts.fetched,
            first_total=total,
            live=live,
            unseen=unseen,
            max_delete_fraction=self.options.max_delete_fraction,
        )
        if reasons:
            result.warnings.append(f"deleted nothing: {'; '.join(reasons)}")
            result.error_details["delete_guard"] = {"would_delete": unseen, "live": live, "reasons": reasons}
            return True
        stage.analyze_seen()
        row = self.conn.execute(
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
        return False

    def _record(self, earned: str | None, stable: bool, *, deletes_held: bool) -> None:
        """The run's status and checkpoint (guard.outcome), recorded in the last batch's transaction."""
        entity, result, options = self.entity, self.result, self.options
        counts = result.counts
        verdict = guard.outcome(
            rowversion=self.rowversion,
            full_refresh=options.full_refresh,
            rejected=counts.rejected,
            stable=stable,
            stored=self.stored,
            earned=earned,
            backfill_from=options.backfill_from,
            deletes_held=deletes_held,
        )
        result.status = verdict.status
        if counts.rejected:
            result.error_message = f"{counts.rejected} row(s) rejected; see 'syncflow runs show {result.uid}'"
        elif not stable:
            result.error_message = (
                f"{entity.ref}: the source kept changing while it was read (rows shifted between pages in"
                f" {MAX_PASSES} reads); rows may be missing, so the checkpoint stays and the next run reads them"
                " again"
            )
        result.rowversion_end = verdict.checkpoint if verdict.set_checkpoint else self.stored
        result.duration = time.monotonic() - self.started
        if result.warnings:
            result.error_details["warnings"] = result.warnings
        note_http(result, self.client)
        records.finish(
            self.conn,
            self.schema,
            entity,
            result,
            checkpoint=verdict.checkpoint,
            set_checkpoint=verdict.set_checkpoint,
        )
        self.conn.commit()


def _confirm(
    loader: _Loader,
    stream: PageStream,
    new_stream: Callable[[], PageStream],
    *,
    cancel: threading.Event | None,
    on_progress: ProgressFn | None,
) -> tuple[bool, list[str], int | None]:
    """Full / hash: read the entity again when the first read may have missed rows.

    Page-number paging over a changing source can skip a row that shifts
    across a page boundary. That matters when rows would be soft-deleted
    (one of them may be such a row) or when the read showed signs of
    movement (a key twice, the total changed). The run then reads again
    until two consecutive reads return the same keys in the same order — a
    moment when nothing moved, so every live row was read. The delete step
    then compares the table with that last read alone (its keys and its
    total): a row an earlier read saw before it was deleted is gone. Returns
    (stable, reasons to hold deletions back, the total the delete step checks).
    """
    st = stream.state
    repeats = loader.result.counts.duplicates  # within batches
    unseen = 0
    if loader.track_seen:
        staged, distinct = loader.stage.seen_counts()
        repeats = staged - distinct  # across the whole read
        unseen = loader.stage.unseen_counts()[1]
    elif not loader.fresh:
        repeats = max(repeats, 1)  # the plain INSERT of a first load met a key twice
    signs = guard.movement_signs(total_changed=st.total_changed, repeats=repeats)
    if (not signs and not unseen) or loader.result.counts.rejected:
        return True, [], st.first_total  # with rejects, deletions are held anyway; a second read would not change that
    counts = loader.result.counts
    digest = st.digest
    total = st.first_total
    stable = False
    first_load = not loader.track_seen
    loader.conn.commit()  # the first read's last batch is kept even if a verification read fails
    # Into a table that was empty, the first read may have stored a row deleted since: the reads that
    # follow record their keys, so that the delete step can compare the table with the one that proves stable.
    loader.start_tracking()
    for _ in range(MAX_PASSES - 1):
        again = new_stream()
        # The delete step compares the table with the pass that proves stable, not with every
        # pass pooled: a row seen by an earlier pass and gone since is gone from the source.
        loader.stage.forget_seen()
        loader.load(again, cancel=cancel, on_progress=on_progress)
        total = again.state.first_total
        # Agreeing keys are not enough when a total moved within a read: a row can leave and come
        # back to its place between two page requests, in both reads alike.
        if again.state.complete and again.state.digest == digest and not again.state.total_changed:
            stable = True
            break
        digest = again.state.digest
    if first_load:
        # A first load: every distinct row is an insert; the second read's rows are not rows again.
        counts.fetched = counts.inserted + counts.rejected + counts.tombstones
    return stable, [] if stable else signs, total


def _failure(entity: Entity, exc: Exception, *, cancelled: bool) -> tuple[str, dict[str, Any]]:
    """What a failed run says (its message) and keeps (its details) about ``exc``."""
    details: dict[str, Any] = {"error": type(exc).__name__}
    if isinstance(exc, SyncFlowError):
        message = exc.message
        details.update(exc.details)
        if isinstance(exc, SourceNotFound):
            details["missing_at_source"] = True
            message += f" (the API {entity.slug!r} is gone at the source; 'syncflow discover' confirms)"
        if isinstance(exc, SourceError) and not message.startswith(entity.ref):
            message = f"{entity.ref}: {message}"
    elif cancelled:
        message = f"{entity.ref}: cancelled by a signal while waiting for PostgreSQL"
    elif isinstance(exc, psycopg.errors.LockNotAvailable):
        message = (
            f"{entity.ref}: another session holds a lock on {entity.target_schema}.{entity.target_table}"
            " (waited lock_timeout_seconds); the run stopped and changed nothing more"
        )
        details["sqlstate"] = exc.sqlstate
    elif isinstance(exc, psycopg.Error):
        message = f"{entity.ref}: database error: {str(exc).strip().splitlines()[0]}"
        if exc.sqlstate:
            details["sqlstate"] = exc.sqlstate
    else:
        # A bug, not a condition SyncFlow knows: keep where it happened, in the log (debug) and the run record.
        message = f"{entity.ref}: unexpected error: {type(exc).__name__}: {exc}"
        details["traceback"] = "".join(traceback.format_exception(exc))[-MAX_TRACEBACK:]
        log.debug("%s", message, exc_info=exc, extra={"event": "run_bug", "entity": entity.ref})
    return message, details


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
    from syncflow import inflight  # the worker pool watches this connection; recording must not be interrupted

    signalled = inflight.stand_down()
    cancelled = isinstance(exc, Cancelled) or (signalled and isinstance(exc, psycopg.errors.QueryCanceled))
    result.status = "cancelled" if cancelled else "failed"
    message, details = _failure(entity, exc, cancelled=cancelled)
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
            records.finish(target, schema, entity, result, checkpoint=None, set_checkpoint=False)
            target.commit()
            return
        except psycopg.Error:
            with contextlib.suppress(psycopg.Error):
                target.rollback()
        finally:
            if target is not conn:
                target.close()
