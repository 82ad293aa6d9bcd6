"""Many entities in one invocation: selection, claims, a bounded worker pool.

Each worker has its own database connection, on which it holds the claim of
the entity it is syncing. Several processes started together share the due
entities between them: whoever claims an entity first syncs it, and a
process that gets a claim only after another process finished that entity
in the meantime skips it, so ``sync --all`` from many pods syncs each
entity once.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import psycopg

from syncflow import aftersync, claims, db, inflight, records, store
from syncflow.aftersync import HookOutcome
from syncflow.errors import SyncFlowError
from syncflow.models import Entity
from syncflow.records import RunResult
from syncflow.runtime import Runtime
from syncflow.schedule import after_sync_settings, effective_settings, sync_policy
from syncflow.store import Conn
from syncflow.sync import ProgressFn, SyncOptions, sync_entity

log = logging.getLogger("syncflow.workers")


@dataclass(frozen=True)
class Outcome:
    """One entity's result in this invocation: a run, or a reason it was skipped."""

    entity: str
    result: RunResult | None = None
    skipped: str | None = None
    held_elsewhere: bool = False
    # Could not even start a run (no run record); ``busy``: because of a lock held on SyncFlow's own tables.
    error: str | None = None
    busy: bool = False

    def to_json(self) -> dict[str, Any]:
        """One element of ``sync --json``'s array: a run, an entity that could not start, or a skip."""
        return outcome_document(self.entity, self.result.to_json() if self.result else None, self.error, self.skipped)


def outcome_document(entity: str, run: dict[str, Any] | None, error: str | None, skipped: str | None) -> dict[str, Any]:
    """The JSON of one entity's outcome, wherever it comes from (the engine, or the API's frozen copy)."""
    if run is not None:
        return run
    if error is not None:
        return {"entity": entity, "status": "error", "error": error}
    return {"entity": entity, "status": "skipped", "reason": skipped}


def run_entities(  # noqa: PLR0913 - keyword-only options of one call, passed on as one _Job
    runtime: Runtime,
    entities: list[Entity],
    *,
    full_refresh: bool = False,
    workers: int = 1,
    wait: bool = False,
    wait_timeout: float | None = None,
    explicit: bool = False,
    max_delete_fraction: float | None = None,
    backfill_from: str | None = None,
    cancel: threading.Event | None = None,
    progress: Callable[[str], ProgressFn | None] | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
    on_after_sync: Callable[[HookOutcome], None] | None = None,
) -> list[Outcome]:
    """Sync the entities on up to ``workers`` threads; returns one outcome per entity, in their order.

    ``backfill_from``: re-read each (rowversion) entity's rows above this row
    version, recorded as a ``backfill`` run (see :func:`syncflow.sync.check_backfill`).
    """
    job = _Job(
        runtime=runtime,
        started=runtime.started_at or datetime.now(UTC),
        full_refresh=full_refresh,
        wait=wait,
        wait_timeout=wait_timeout,
        explicit=explicit,
        max_delete_fraction=max_delete_fraction,
        backfill_from=backfill_from,
        cancel=cancel or threading.Event(),
        progress=progress,
        share=max(1, min(workers, len(entities))),
    )
    pool = _Pool(job, entities, on_outcome)
    pool.run(workers)
    if not job.cancel.is_set():
        _after_sync_connectors(runtime, pool.outcomes, job.cancel, on_after_sync)
    pool.skip_the_rest()
    order = {e.ref: i for i, e in enumerate(entities)}
    return sorted(pool.outcomes, key=lambda o: order.get(o.entity, 0))


class _Pool:
    """Worker threads taking entities from one queue, each on its own connection."""

    def __init__(self, job: _Job, entities: list[Entity], on_outcome: Callable[[Outcome], None] | None) -> None:
        self.job = job
        self.todo: queue.Queue[Entity] = queue.Queue()
        for e in entities:
            self.todo.put(e)
        self.size = len(entities)
        self.outcomes: list[Outcome] = []
        self.lock = threading.Lock()
        self.errors: list[BaseException] = []
        self.on_outcome = on_outcome
        # A whole SyncFlow table locked by another session: every entity would wait lock_timeout_seconds in turn.
        self.halt = threading.Event()

    def record(self, outcome: Outcome) -> None:
        with self.lock:
            self.outcomes.append(outcome)
        if self.on_outcome is not None:
            self.on_outcome(outcome)

    def run(self, workers: int) -> None:
        count = max(1, min(workers, self.size))
        threads = [threading.Thread(target=self._work, name=f"sync-worker-{i}") for i in range(count)]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(timeout=0.2)
                # A signal sets ``cancel``; workers blocked in PostgreSQL only notice when their statement ends.
                inflight.interrupt(self.job.cancel)
        if self.errors:
            raise self.errors[0]

    def _work(self) -> None:
        conn: Conn | None = None
        try:
            while not self.job.cancel.is_set() and not self.halt.is_set():
                try:
                    entity = self.todo.get_nowait()
                except queue.Empty:
                    return
                if conn is None or conn.closed or conn.broken:
                    if conn is not None:
                        conn.close()
                    conn = self.job.runtime.connect()
                self.record(self._one_entity(conn, entity))
        except BaseException as exc:
            self.errors.append(exc)
            self.job.cancel.set()
        finally:
            if conn is not None and not conn.closed:
                conn.close()

    def _one_entity(self, conn: Conn, entity: Entity) -> Outcome:
        try:
            return _one(self.job, conn, entity)
        except db.DatabaseBusy as exc:
            if not exc.row_lock:
                self.halt.set()
            return Outcome(entity.ref, error=f"{entity.ref}: {exc.message}", busy=True)
        except SyncFlowError as exc:
            # Before a run could start (the entity vanished, the connection dropped): this entity only.
            text = exc.message if exc.message.startswith(entity.ref) else f"{entity.ref}: {exc.message}"
            return Outcome(entity.ref, error=text)

    def skip_the_rest(self) -> None:
        """After a halt, the entities never tried are reported as such."""
        if not self.halt.is_set():
            return
        reason = next((o.error for o in self.outcomes if o.error), "")
        while True:
            try:
                left = self.todo.get_nowait()
            except queue.Empty:
                return
            self.record(Outcome(left.ref, skipped=f"not tried: {reason}"))


@dataclass(frozen=True)
class _Job:
    """What every entity of one invocation is synced with."""

    runtime: Runtime
    started: datetime  # the database clock when the invocation began: "synced meanwhile" is after it
    full_refresh: bool
    wait: bool
    wait_timeout: float | None
    explicit: bool  # named one by one (not --all): synced even if another process just did
    max_delete_fraction: float | None
    backfill_from: str | None
    cancel: threading.Event
    progress: Callable[[str], ProgressFn | None] | None
    share: int = 1  # entities synced at once: each gets this share of the memory a run may fetch ahead


def _one(job: _Job, conn: Conn, entity: Entity) -> Outcome:
    try:
        return _claimed(job, conn, entity)
    except psycopg.Error as exc:
        # Outside a run's own failure handling: taking the claim, marking dead runs, starting the run.
        # A signal's cancel comes first: it shows up as the same QueryCanceled as a statement timeout.
        if job.cancel.is_set() and isinstance(exc, psycopg.errors.QueryCanceled):
            return Outcome(entity.ref, skipped="cancelled before it started")
        if db.is_timeout(exc):
            raise db.lock_conflict(conn, exc, job.runtime.schema) from None
        raise


def _claimed(job: _Job, conn: Conn, entity: Entity) -> Outcome:
    with inflight.watching(conn, job.cancel):  # a signal ends a --wait for the claim too
        if job.wait:
            got = claims.wait_claim(conn, entity.uid, timeout_seconds=job.wait_timeout)
        else:
            got = claims.try_claim(conn, entity.uid)
    if not got:
        # Reported once, by whoever renders outcomes.
        waited = f" (waited {job.wait_timeout:g}s)" if job.wait and job.wait_timeout is not None else ""
        return Outcome(entity.ref, skipped=f"another process is syncing it{waited}", held_elsewhere=True)
    try:
        with db.translate_locks(conn, job.runtime.schema):
            return _run_claimed(job, conn, entity)
    finally:
        try:
            claims.release(conn, entity.uid)
        except Exception:
            conn.close()


def _run_claimed(job: _Job, conn: Conn, entity: Entity) -> Outcome:
    runtime, cancel = job.runtime, job.cancel
    schema = runtime.schema
    with inflight.watching(conn, cancel):  # these wait on SyncFlow's own tables: a signal ends the wait
        dead = claims.abandon_dead_runs(conn, schema, entity.uid)
        fresh = store.get_entity(conn, schema, entity.ref)  # the checkpoint as it is now
        conn.commit()
    if dead:
        log.warning(
            "%s: marked %d run(s) left running by a dead process as abandoned",
            entity.ref,
            dead,
            extra={"event": "abandoned", "entity": entity.ref},
        )
    if not job.explicit and fresh.last_sync_at is not None and fresh.last_sync_at >= job.started:
        return Outcome(entity.ref, skipped="another process synced it meanwhile")
    eff = effective_settings(runtime, fresh)
    sync = runtime.config.settings.sync
    options = SyncOptions(
        page_size=eff.page_size,
        batch_rows=sync.batch_rows,
        history=eff.history,
        full_refresh=job.full_refresh,
        max_delete_fraction=sync.max_delete_fraction if job.max_delete_fraction is None else job.max_delete_fraction,
        backfill_from=job.backfill_from,
        # The bounds of what is fetched ahead hold for the process: each entity syncing at once gets a share.
        prefetch_pages=max(4, SyncOptions.prefetch_pages // job.share),
        prefetch_bytes=SyncOptions.prefetch_bytes // job.share,
        ahead_bytes=SyncOptions.ahead_bytes // job.share,
    )
    try:
        policy, hash_key = sync_policy(runtime, fresh)
        options = replace(options, policy=policy, hash_key=hash_key)
        client = runtime.client(fresh.connector, cancel=cancel)
    except SyncFlowError as exc:
        # The connector's problem (token unset, CA bundle unreadable) fails its entities, not the invocation.
        return Outcome(entity.ref, result=_failed_before_start(conn, schema, fresh, options.kind, exc))
    with client, inflight.watching(conn, cancel):
        result = sync_entity(
            conn,
            schema,
            fresh,
            client,
            options=options,
            on_progress=job.progress(fresh.ref) if job.progress else None,
            cancel=cancel,
            reconnect=runtime.connect,
        )
    statement, when = after_sync_settings(runtime, fresh)
    if statement is not None and result.status == "success" and not cancel.is_set():
        # Still holding the entity's claim: no other sync of it runs until the statement ends.
        if aftersync.qualifies(result, when):
            with inflight.watching(conn, cancel):
                hook = aftersync.execute(conn, statement, scope="entity", target=fresh.ref, cancel=cancel)
        else:
            hook = aftersync.skipped("entity", fresh.ref, "no row changed")
        result.after_sync["entity"] = hook.to_json()
        # Not watched: a signal must not cancel the record of what the statement did (like a run's own record).
        aftersync.record(conn, schema, [result.uid], hook)
    return Outcome(entity.ref, result=result)


def _after_sync_connectors(
    runtime: Runtime,
    outcomes: list[Outcome],
    cancel: threading.Event,
    on_after_sync: Callable[[HookOutcome], None] | None,
) -> None:
    """Each connector's after_sync_sql, once, after all of its entities in this invocation.

    It runs when at least one of the connector's runs qualifies (a success that
    changed a row, or any success with ``after_sync_when = "always"``) and is
    recorded on those runs.
    """
    by_connector: dict[str, list[RunResult]] = {}
    for o in outcomes:
        if o.result is not None:
            by_connector.setdefault(o.entity.split(".", 1)[0], []).append(o.result)
    for name, results in sorted(by_connector.items()):
        cfg = runtime.config.settings.connectors.get(name)
        if cfg is None or cfg.after_sync_sql is None or cancel.is_set():
            continue
        qualified = [r for r in results if aftersync.qualifies(r, cfg.after_sync_when)]
        if qualified:
            conn = runtime.connect()
            try:
                with db.translate_locks(conn, runtime.schema):
                    with inflight.watching(conn, cancel):
                        hook = aftersync.execute(
                            conn, cfg.after_sync_sql, scope="connector", target=name, cancel=cancel
                        )
                    aftersync.record(conn, runtime.schema, [r.uid for r in qualified], hook)
            finally:
                conn.close()
        else:
            why = "no run succeeded" if all(r.status != "success" for r in results) else "no row changed"
            hook = aftersync.skipped("connector", name, why)
        for r in qualified:
            r.after_sync["connector"] = hook.to_json()
        if on_after_sync is not None:
            on_after_sync(hook)


def _failed_before_start(conn: Conn, schema: str, entity: Entity, kind: str, exc: SyncFlowError) -> RunResult:
    """A run recorded as failed without reaching the source, so ``status`` and ``runs`` show why."""
    uid = records.start(conn, schema, entity, kind=kind, rowversion_start=entity.last_rowversion)
    message = exc.message if exc.message.startswith(entity.ref) else f"{entity.ref}: {exc.message}"
    result = RunResult(
        uid=uid,
        entity=entity.ref,
        kind=kind,
        status="failed",
        rowversion_start=entity.last_rowversion,
        rowversion_end=entity.last_rowversion,
        error_message=message,
        error_details={"error": type(exc).__name__, **exc.details},
    )
    records.finish(conn, schema, entity, result, checkpoint=None, set_checkpoint=False)
    conn.commit()
    return result
