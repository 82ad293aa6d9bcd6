"""SyncFlow as a library: the one core the command line is an adapter of.

::

    import syncflow

    sf = syncflow.open("syncflow.toml")          # file < environment < keyword overrides
    plan = sf.discover(dry_run=True)              # DiscoverResult
    report = sf.sync("erp.items", "erp.orders")   # SyncReport: one outcome per entity
    report = sf.sync_all(workers=4)               # what `syncflow sync --all` does, claims included
    sf.full_refresh("erp.items")
    sf.runs(entity="erp.items", limit=20); sf.status(); sf.history("erp.items", key={"item_number": "A1"})

Every method opens what it needs and closes it before returning; errors are
the :class:`~syncflow.errors.SyncFlowError` tree (a database error is
translated once, here, at the boundary). Nothing is printed: progress goes to
an optional :class:`SyncObserver`. Signal handlers are installed only when
asked (``handle_signals=True``, as the command line does).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar

import psycopg
from pydantic import ValidationError

from syncflow import claims, db, inflight, ping, store
from syncflow.config import PING_URL_ENV, ConnectorConfig, config_path
from syncflow.errors import EXIT_SIGINT, SyncFlowError, UsageError
from syncflow.models import Entity
from syncflow.runtime import Runtime, check_connector
from syncflow.schedule import check_policies, due_entities, effective_settings
from syncflow.store import Conn
from syncflow.sync_report import EntityResult, SyncReport

# The engine (the HTTP client, paging, staging, the worker pool), discovery and the metrics exporter are
# imported where they are used: a command that does not reach them (a nothing-due ``sync --all``, every
# read-only command) does not pay their imports (issue 16). So are the modules only one or two
# commands use: health (status), records (runs), history, tomledit (connector add/remove), and the results
# of every call but a sync (their dataclasses are built when syncflow.results is imported).
if TYPE_CHECKING:
    from syncflow.aftersync import HookOutcome
    from syncflow.discovery import DiscoveryReport
    from syncflow.records import RunResult
    from syncflow.results import (
        ConnectorCheck,
        ConnectorInfo,
        DiscoverResult,
        EntityHealth,
        EntityInfo,
        EntitySettings,
        History,
        MigrationStatus,
        RunRecord,
    )
    from syncflow.sync import Progress, ProgressFn
    from syncflow.workers import Outcome

log = logging.getLogger("syncflow")

P = ParamSpec("P")
R = TypeVar("R")

WHERE_KEY_UNSUPPORTED = (
    "--where-key: the APISmith protocol has no key filter (GET /api/v1/data/{slug} takes only page,"
    " page_size and rowversion_gt), so single records cannot be fetched by key; use --from-rowversion"
    " with a version at or below the record's, or full-refresh"
)


def exit_status(exc: BaseException) -> tuple[int, list[str]] | None:
    """The exit code and message lines of an error leaving a call; None for an error that is a bug.

    The one mapping of errors to exit codes: the command line's error boundary applies it, the run
    ping reports it.
    """
    if isinstance(exc, SyncFlowError):
        return exc.exit_code, str(exc).splitlines() or [type(exc).__name__]
    if isinstance(exc, psycopg.Error):
        translated = db.translate(exc, "database error")
        return translated.exit_code, [str(translated)]
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_SIGINT, ["interrupted"]
    return None


def _translated(fn: Callable[P, R]) -> Callable[P, R]:
    """The API's error boundary: a database error leaves as the SyncFlowError it means."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except psycopg.Error as exc:
            raise db.translate(exc, "database error") from exc

    return wrapper


class SyncObserver(Protocol):
    """What a caller may watch while entities sync (the command line draws progress bars from it)."""

    def progress(self, entity: str) -> ProgressFn | None:
        """A callback for one entity's progress, or None."""

    def finished(self, outcome: Outcome) -> None:
        """An entity is done (a run, a skip, or an error before its run)."""

    def after_sync(self, hook: HookOutcome) -> None:
        """A connector's after_sync_sql ran (or was skipped or failed)."""

    def nothing_due(self) -> None:
        """``sync_all`` found nothing to do."""


class _Quiet:
    """The observer of a caller that watches nothing."""

    def progress(self, entity: str) -> ProgressFn | None:  # noqa: ARG002 - SyncObserver's signature
        return None

    def finished(self, outcome: Outcome) -> None:
        pass

    def after_sync(self, hook: HookOutcome) -> None:
        pass

    def nothing_due(self) -> None:
        pass


@dataclass
class _Stop:
    """A stop request: set by a signal (or by the caller), seen by every wait of the call."""

    event: threading.Event = field(default_factory=threading.Event)
    received: list[int] = field(default_factory=list)
    again: threading.Event = field(default_factory=threading.Event)  # a second signal: stop waiting at all


@contextlib.contextmanager
def _signals(stop: _Stop, install: bool) -> Iterator[None]:
    """SIGTERM/SIGINT set ``stop`` (and cancel the statements in flight) while the block runs."""

    def on_signal(signum: int, _frame: object) -> None:
        if stop.received:
            stop.again.set()
        stop.received.append(signum)
        stop.event.set()
        # The main thread may itself be blocked in PostgreSQL (a lock on SyncFlow's tables): cancel
        # the statements in flight from another thread, never from inside the handler.
        threading.Thread(target=inflight.interrupt, args=(stop.event,), name="interrupt", daemon=True).start()

    handlers = {}
    if install and threading.current_thread() is threading.main_thread():
        handlers = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in handlers.items():
            signal.signal(sig, old)


class PingReport:
    """The run pings of one sync call (healthchecks.io convention, see :mod:`syncflow.ping`)."""

    def __init__(self, command: str, url: str | None) -> None:
        self.command = command
        self.cli_url = url
        self.lines: list[str] = []
        self.pinger: ping.Pinger | None = None
        self.secrets: list[str] = [os.environ.get("PGPASSWORD", "")]
        if url is not None:
            try:
                ping.check_url(url)
            except ValueError as exc:
                raise UsageError(f"--ping-url: {exc}") from None
        # Known before the configuration, so that a configuration error is reported too.
        early = url or os.environ.get(PING_URL_ENV)
        if early:
            with contextlib.suppress(ValueError):
                self.pinger = ping.Pinger(ping.check_url(early), secrets=self.secrets)

    def configure(self, runtime: Runtime) -> None:
        """The URL from the configuration (the explicit one wins) and the secrets to blank: the tokens."""
        for cfg in runtime.config.settings.connectors.values():
            if cfg.token_env:
                self.secrets.append(os.environ.get(cfg.token_env, ""))
        url = self.cli_url or runtime.config.settings.notify.ping_url
        self.pinger = ping.Pinger(url, secrets=self.secrets) if url else None

    def start(self, cancel: threading.Event) -> str | None:
        return self.pinger.start(abort=cancel) if self.pinger is not None else None

    def finish(self, code: int, *, lines: Sequence[str] | None, stop: _Stop) -> str | None:
        if self.pinger is None:
            return None
        body = [f"syncflow {self.command}: exit {code}", *self.lines]
        if lines:
            body.append(f"error: {lines[0]}")
        if stop.received:
            # Stopping: one short try, so that SIGTERM still ends the process at once; a second signal ends it.
            return self.pinger.finish(code, "\n".join(body) + "\n", abort=stop.again, timeout=2.0, attempts=1)
        return self.pinger.finish(code, "\n".join(body) + "\n", abort=stop.event)

    def outcome(self, o: Outcome) -> None:
        """One line per entity for the final ping's body."""
        if o.error is not None:
            self.lines.append(f"error {o.error}")
        elif o.result is None:
            self.lines.append(f"skipped {o.entity}: {o.skipped}")
        else:
            r, c = o.result, o.result.counts
            line = (
                f"{r.status} {r.entity}: {c.fetched} fetched, {c.inserted} inserted, {c.updated} updated, "
                f"{c.unchanged} unchanged, {c.deleted} deleted, {c.rejected} rejected in {r.duration:.1f}s"
            )
            if r.error_message:
                line += f"; {r.error_message.splitlines()[0]}"
            self.lines.append(line)
            hook = r.after_sync.get("entity")
            if hook is not None and hook.get("status") == "failed":
                self.lines.append(f"after_sync_sql of {r.entity} failed: {hook.get('error')}")

    def after_sync(self, hook: HookOutcome) -> None:
        if hook.status == "failed":
            self.lines.append(f"{hook.label} failed: {hook.error}")


@dataclass(frozen=True)
class SyncRequest:
    """One sync call's parameters (what ``sync``, ``sync --all`` and ``full-refresh`` take)."""

    refs: tuple[str, ...] = ()
    all_: bool = False
    force: bool = False
    connector: str | None = None
    full_refresh: bool = False
    workers: int | None = None
    wait: bool = False
    wait_timeout: float | None = None
    max_delete_fraction: float | None = None
    from_rowversion: str | None = None
    metrics_file: Path | None = None
    pushgateway: str | None = None
    ping_url: str | None = None

    def check(self) -> None:
        """Usage errors, found before anything is opened."""
        if self.refs and self.all_:
            raise UsageError("give entity references or --all, not both")
        if not self.refs and not self.all_:
            raise UsageError("name the entities to sync (CONNECTOR.SLUG ...) or give --all")
        if (self.force or self.connector) and not self.all_:
            raise UsageError("--force and --connector go with --all")
        if self.from_rowversion is not None:
            if self.all_:
                raise UsageError("--from-rowversion backfills named entities; it cannot go with --all")
            if not self.from_rowversion.strip():
                raise UsageError("--from-rowversion needs a row version, e.g. --from-rowversion 20251208120000")

    @property
    def command(self) -> str:
        return "full-refresh" if self.full_refresh else "sync"


class SyncFlow:
    """A configured SyncFlow: its settings, its database, its connectors.

    Build it with :func:`open`. Methods are safe to call one after another;
    each opens and closes its own connections.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @property
    def config_path(self) -> Path:
        return self.runtime.config.path

    # -- discovery -------------------------------------------------------------------------------

    @_translated
    def discover(
        self,
        *connectors: str,
        dry_run: bool = False,
        rebuild: Sequence[str] = (),
        wait: bool = False,
        wait_timeout: float = 600.0,
    ) -> DiscoverResult:
        """Read each connector's APIs and create or evolve one table per entity (``dry_run``: plan only).

        A connector that cannot be read is reported in ``failures``; the others are still discovered.
        ``rebuild`` names entities (SLUG or CONNECTOR.SLUG) whose breaking change is applied by
        building the table anew.
        """
        runtime = self.runtime
        names = list(connectors) or sorted(runtime.config.settings.connectors)
        if not names:
            raise UsageError(f"{runtime.config.path}: no connectors configured; add one with 'syncflow connector add'")
        for n in names:
            runtime.config.connector(n)
        from syncflow.discovery import discover_connector
        from syncflow.results import ConnectorFailure, DiscoverResult

        reports: list[DiscoveryReport] = []
        failures: list[ConnectorFailure] = []
        # A dry run writes nothing once the metadata schema exists (on a new database it creates it first).
        with runtime.metadata(read_only=dry_run and self._metadata_current()) as conn:
            for name in names:
                try:
                    with runtime.client(name) as client:
                        reports.append(
                            discover_connector(
                                conn,
                                runtime.schema,
                                runtime.config,
                                name,
                                client,
                                dry_run=dry_run,
                                rebuild=_slugs_at(rebuild, name),
                                wait_seconds=wait_timeout if wait else None,
                            )
                        )
                except SyncFlowError as exc:
                    failures.append(ConnectorFailure(name, str(exc), exc.exit_code))
        found = {(r.connector, o.plan.slug) for r in reports for o in r.outcomes}
        unknown = [ref for ref in rebuild if not any((n, _slug_at(ref, n)) in found for n in names)]
        if unknown and not failures:
            raise UsageError(
                f"--rebuild {', '.join(unknown)}: no such API at {', '.join(names)}; nothing was rebuilt for it"
            )
        return DiscoverResult(tuple(reports), tuple(failures), tuple(names))

    def _metadata_current(self) -> bool:
        """Whether every metadata migration is applied (read-only look)."""
        conn = self.runtime.connect(autocommit=True, read_only=True)
        try:
            return all(at is not None for _, at in db.migration_status(conn, self.runtime.schema))
        finally:
            conn.close()

    # -- syncing ---------------------------------------------------------------------------------

    def sync(
        self,
        *refs: str,
        workers: int | None = None,
        wait: bool = False,
        wait_timeout: float | None = None,
        max_delete_fraction: float | None = None,
        from_rowversion: str | None = None,
        observer: SyncObserver | None = None,
        cancel: threading.Event | None = None,
    ) -> SyncReport:
        """Sync the named entities (CONNECTOR.SLUG) now, whatever their interval.

        ``from_rowversion`` backfills: re-reads the rows above that row version (rowversion entities).
        """
        return self.run(
            SyncRequest(
                refs=refs,
                workers=workers,
                wait=wait,
                wait_timeout=wait_timeout,
                max_delete_fraction=max_delete_fraction,
                from_rowversion=from_rowversion,
            ),
            observer=observer,
            cancel=cancel,
        )

    def sync_all(
        self,
        *,
        force: bool = False,
        connector: str | None = None,
        workers: int | None = None,
        observer: SyncObserver | None = None,
        cancel: threading.Event | None = None,
    ) -> SyncReport:
        """Sync every enabled entity that is due (``force``: all of them), sharing them with other processes."""
        return self.run(
            SyncRequest(all_=True, force=force, connector=connector, workers=workers), observer=observer, cancel=cancel
        )

    def full_refresh(
        self,
        *refs: str,
        workers: int | None = None,
        wait: bool = False,
        wait_timeout: float | None = None,
        max_delete_fraction: float | None = None,
        observer: SyncObserver | None = None,
        cancel: threading.Event | None = None,
    ) -> SyncReport:
        """Read the named entities whole, ignoring their checkpoints; reconcile deletes; reset the checkpoints."""
        return self.run(
            SyncRequest(
                refs=refs,
                full_refresh=True,
                workers=workers,
                wait=wait,
                wait_timeout=wait_timeout,
                max_delete_fraction=max_delete_fraction,
            ),
            observer=observer,
            cancel=cancel,
        )

    def run(
        self,
        request: SyncRequest,
        *,
        observer: SyncObserver | None = None,
        cancel: threading.Event | None = None,
        handle_signals: bool = False,
    ) -> SyncReport:
        """One sync call with every option the command line has (pings, metrics, signal handling)."""
        return run_sync(lambda: self, request, observer=observer, cancel=cancel, handle_signals=handle_signals)

    def _run(self, request: SyncRequest, watcher: SyncObserver, stop: _Stop, pings: PingReport) -> SyncReport:
        runtime = self.runtime
        # "Synced by another process meanwhile" is measured from the start of this call, not of the object.
        runtime.started_at = None
        pings.configure(runtime)
        _warn(pings.start(stop.event))
        hooks: list[HookOutcome] = []
        notes: list[str] = []
        outcomes: list[Outcome] | None
        try:
            outcomes = self._sync_pass(request, watcher, stop, pings, hooks, notes)
        except (psycopg.errors.QueryCanceled, SyncFlowError):
            if not stop.received:
                raise
            outcomes = None  # the signal cancelled a wait on SyncFlow's tables before any run began
        except psycopg.Error as exc:
            raise db.translate(exc, "database error") from exc
        results = [o.result for o in outcomes or [] if o.result is not None]
        problems = self._publish_metrics(results, request.metrics_file, request.pushgateway)
        return SyncReport(
            outcomes=tuple(EntityResult.of(o) for o in outcomes or ()),
            after_sync=tuple(hooks),
            signal=stop.received[0] if stop.received else None,
            warnings=tuple(problems),
            notes=tuple(notes),
            explicit=not request.all_,
            cancelled=stop.event.is_set(),
        )

    def _sync_pass(
        self,
        request: SyncRequest,
        watcher: SyncObserver,
        stop: _Stop,
        pings: PingReport,
        hooks: list[HookOutcome],
        notes: list[str],
    ) -> list[Outcome] | None:
        """Select the entities and sync them; None when nothing is due or a signal came first."""
        runtime = self.runtime
        with runtime.metadata() as meta, inflight.watching(meta, stop.event):
            entities = self._select(meta, request)
            notes += self._unused_overrides(meta, request.connector)
        # A connector's token or CA bundle is checked per entity by the worker pool: one broken connector
        # fails its own entities (recorded as failed runs), the others still sync.
        if stop.event.is_set():
            return None
        if not entities:
            pings.lines.append("nothing was due")
            watcher.nothing_due()
            return None

        def finished(o: Outcome) -> None:
            pings.outcome(o)
            watcher.finished(o)

        def after_sync(h: HookOutcome) -> None:
            hooks.append(h)
            pings.after_sync(h)
            watcher.after_sync(h)

        from syncflow.workers import run_entities

        return run_entities(
            runtime,
            entities,
            full_refresh=request.full_refresh,
            workers=request.workers or runtime.config.settings.sync.workers,
            wait=request.wait or request.wait_timeout is not None,
            wait_timeout=request.wait_timeout,
            explicit=not request.all_,
            max_delete_fraction=request.max_delete_fraction,
            backfill_from=request.from_rowversion,
            cancel=stop.event,
            progress=watcher.progress,
            on_outcome=finished,
            on_after_sync=after_sync,
        )

    def _select(self, meta: Conn, request: SyncRequest) -> list[Entity]:
        runtime = self.runtime
        if request.all_:
            if request.connector is not None:
                runtime.config.connector(request.connector)
            claims.sweep_abandoned(meta, runtime.schema)
            due = due_entities(runtime, meta, force=request.force, connector=request.connector)
            check_policies(runtime, due)
            return due
        entities = [store.get_entity(meta, runtime.schema, ref) for ref in dict.fromkeys(request.refs)]
        for entity in entities:
            runtime.config.connector(entity.connector)  # naming an entity whose connector is gone: usage
            if request.from_rowversion is not None:
                from syncflow.sync import check_backfill

                check_backfill(entity)
        check_policies(runtime, entities)
        return entities

    def _unused_overrides(self, meta: Conn, connector: str | None) -> list[str]:
        """Entity tables in the file that name no discovered entity: a typo there must not pass in silence."""
        runtime = self.runtime
        checked = {n: c for n, c in runtime.config.settings.connectors.items() if connector is None or n == connector}
        if not any(cfg.entities for cfg in checked.values()):
            return []  # the file has no entity tables: nothing to look up
        known = {(e.connector, e.slug) for e in store.list_entities(meta, runtime.schema, connector=connector)}
        return [
            f"{runtime.config.path}: [connectors.{name}.entities.{slug}] names no discovered entity of {name};"
            " its settings are not used (see 'syncflow entities')"
            for name, cfg in sorted(checked.items())
            for slug in sorted(cfg.entities)
            if (name, slug) not in known
        ]

    def _publish_metrics(self, results: list[RunResult], textfile: Path | None, gateway: str | None) -> list[str]:
        """Write/push the call's metrics; what failed comes back as warnings (never a failure)."""
        if textfile is None and not gateway:
            return []
        from syncflow import metrics  # prometheus_client: only for a call that writes or pushes metrics

        problems: list[str] = []
        entities: dict[str, Entity] = {}
        try:
            with self.runtime.metadata(read_only=True) as meta:
                entities = {e.ref: e for e in store.list_entities(meta, self.runtime.schema)}
        except (SyncFlowError, psycopg.Error) as exc:
            problems.append(f"metrics: cannot read the entities' state: {exc}")
        return problems + metrics.publish(
            metrics.build_registry(results, entities), textfile=textfile, pushgateway=gateway
        )

    # -- settings --------------------------------------------------------------------------------

    @_translated
    def set_entity(
        self,
        ref: str,
        *,
        interval_seconds: int | None = None,
        enabled: bool | None = None,
        page_size: int | None = None,
        history_on: bool | None = None,
    ) -> EntitySettings:
        """Change an entity's settings in the database (turning history on creates and seeds its table).

        A key the configuration file sets for the entity wins over the database: such a change is
        stored but has no effect, and is listed in ``ignored``.
        """
        if interval_seconds is None and enabled is None and page_size is None and history_on is None:
            raise UsageError("nothing to change: give --interval, --enable/--disable, --page-size or --history")
        runtime = self.runtime
        with runtime.metadata() as conn:
            entity = store.get_entity(conn, runtime.schema, ref)
            with conn.transaction():
                store.update_settings(
                    conn,
                    runtime.schema,
                    entity,
                    interval_seconds=interval_seconds,
                    enabled=enabled,
                    page_size=page_size,
                    history=history_on,
                )
                entity = store.get_entity(conn, runtime.schema, ref)
                eff = effective_settings(runtime, entity)
                if eff.history and entity.syncable:
                    from syncflow import history

                    history.ensure(conn, entity)  # created and seeded now, in this transaction
        requested = {
            "interval_seconds": interval_seconds,
            "enabled": enabled,
            "page_size": page_size,
            "history": history_on,
        }
        from syncflow.results import EntitySettings

        ignored = tuple(
            (key, eff.get(key))
            for key, value in requested.items()
            if value is not None and key in eff.overridden_by_file and eff.get(key) != value
        )
        return EntitySettings(
            entity=entity.ref,
            interval_seconds=eff.interval_seconds,
            enabled=eff.enabled,
            page_size=eff.page_size,
            history=eff.history,
            overridden_by_file=eff.overridden_by_file,
            ignored=ignored,
            config_path=str(runtime.config.path),
        )

    # -- connectors and the metadata schema -----------------------------------------------------

    def connectors(self) -> list[ConnectorInfo]:
        """The connectors in the configuration file, by name."""
        return [self.connector(n) for n in sorted(self.runtime.config.settings.connectors)]

    def connector(self, name: str) -> ConnectorInfo:
        c = self.runtime.config.connector(name)
        from syncflow.results import ConnectorInfo

        return ConnectorInfo(
            name=name,
            base_url=c.base_url,
            token_env=c.token_env,
            token_set=bool(c.token_env and os.environ.get(c.token_env)),
            target_schema=c.target_schema or name,
            verify_tls=c.verify_tls,
            after_sync_sql=c.after_sync_sql,
            after_sync_when=c.after_sync_when,
            entities={slug: o.model_dump(exclude_none=True) for slug, o in c.entities.items()},
            max_concurrent_requests=c.max_concurrent_requests,
            max_requests_per_second=c.max_requests_per_second,
            parallel_reads=c.parallel_reads,
        )

    def test_connector(self, name: str) -> ConnectorCheck:
        """One request to the connector's APISmith: reachability, TLS, the token, the number of APIs."""
        from syncflow.results import ConnectorCheck

        return ConnectorCheck(**check_connector(self.runtime, name))

    @_translated
    def upgrade(self) -> list[str]:
        """Apply pending metadata migrations; returns what was applied (``0004_backfill_runs``)."""
        runtime = self.runtime
        conn = runtime.connect(autocommit=True)
        try:
            with db.translate_locks(conn, runtime.schema):
                return [f"{m.version:04d}_{m.name}" for m in db.upgrade(conn, runtime.schema)]
        finally:
            conn.close()

    @_translated
    def migrations(self) -> MigrationStatus:
        """Which metadata migrations are applied (read-only)."""
        runtime = self.runtime
        conn = runtime.connect(autocommit=True, read_only=True)
        try:
            with db.translate_locks(conn, runtime.schema):
                status = db.migration_status(conn, runtime.schema)
        finally:
            conn.close()
        from syncflow.results import MigrationInfo, MigrationStatus

        return MigrationStatus(
            schema=runtime.schema,
            database=db.describe_target(runtime.config.settings.database.url),
            migrations=tuple(
                MigrationInfo(m.version, m.name, datetime.fromisoformat(at) if isinstance(at, str) else at)
                for m, at in status
            ),
        )

    # -- reading ---------------------------------------------------------------------------------

    @_translated
    def entities(self, *, connector: str | None = None) -> list[EntityInfo]:
        """The discovered entities with their effective settings (read-only)."""
        runtime = self.runtime
        if connector is not None:
            runtime.config.connector(connector)  # a typo must not look like "no entities"
        with runtime.metadata(read_only=True) as conn:
            found = store.list_entities(conn, runtime.schema, connector=connector)
        return [self._info(e) for e in found]

    @_translated
    def entity(self, ref: str) -> EntityInfo:
        """One entity with its columns' mapping (read-only)."""
        with self.runtime.metadata(read_only=True) as conn:
            return self._info(store.get_entity(conn, self.runtime.schema, ref), columns=True)

    def _info(self, e: Entity, *, columns: bool = False) -> EntityInfo:
        eff = effective_settings(self.runtime, e)
        from syncflow.results import EntityInfo

        return EntityInfo(
            entity=e.ref,
            name=e.api_name,
            description=e.description,
            table=f"{e.target_schema}.{e.target_table}",
            delta_strategy=e.delta_strategy,
            business_keys=tuple(e.business_keys),
            interval_seconds=eff.interval_seconds,
            enabled=eff.enabled,
            page_size=eff.page_size,
            history=eff.history,
            overridden_by_file=eff.overridden_by_file,
            syncable=e.syncable,
            unsyncable_reason=e.unsyncable_reason,
            needs_attention=e.needs_attention,
            missing_at_source=e.missing_at_source,
            last_sync_at=e.last_sync_at,
            last_sync_status=e.last_sync_status,
            last_rowversion=e.last_rowversion,
            columns=tuple(c.to_json() for c in e.columns) if columns else None,
        )

    @_translated
    def status(self, *, connector: str | None = None, stale_factor: float | None = None) -> list[EntityHealth]:
        """Every entity's health, as ``syncflow status`` shows it (read-only)."""
        runtime = self.runtime
        if connector is not None:
            runtime.config.connector(connector)  # a typo must not pass a health check
        factor = stale_factor or runtime.config.settings.sync.stale_factor
        from syncflow.health import entity_health

        with runtime.metadata(read_only=True) as conn:
            rows = entity_health(runtime, conn, connector=connector, stale_factor=factor)
        from syncflow.results import EntityHealth

        return [EntityHealth.from_row(r) for r in rows]

    @_translated
    def runs(self, *, entity: str | None = None, status: str | None = None, limit: int = 20) -> list[RunRecord]:
        """Run history, newest first (read-only)."""
        runtime = self.runtime
        from syncflow import records

        with runtime.metadata(read_only=True) as conn:
            if entity:
                store.get_entity(conn, runtime.schema, entity)
            rows = records.list_runs(conn, runtime.schema, ref=entity, status=status, limit=limit)
        from syncflow.results import RunRecord

        return [RunRecord.from_row(r) for r in rows]

    @_translated
    def run_record(self, run_id: str) -> RunRecord:
        """One run with its rejected rows; a prefix of its id will do."""
        from syncflow import records

        with self.runtime.metadata(read_only=True) as conn:
            run = records.get_run(conn, self.runtime.schema, run_id)
        if run is None:
            raise UsageError(f"no run {run_id!r}")
        from syncflow.results import RunRecord

        return RunRecord.from_row(run)

    @_translated
    def history(self, ref: str, *, key: dict[str, str], as_of: datetime | None = None) -> History:
        """A record's versions, oldest first (``as_of``: the one valid then); the entity needs history on."""
        runtime = self.runtime
        from syncflow import history

        with runtime.metadata(read_only=True) as conn:
            entity = store.get_entity(conn, runtime.schema, ref)
            if set(key) != set(entity.business_keys):
                raise UsageError(f"{ref}: give --key for exactly the business key: {', '.join(entity.business_keys)}")
            found = history.versions(conn, entity, key, as_of=as_of)
        from syncflow.results import History, Version

        return History(
            entity=entity.ref,
            key=dict(key),
            versions=tuple(Version.from_row(v) for v in found),
            history_on=effective_settings(runtime, entity).history,
            as_of=as_of,
        )


def run_sync(
    opener: Callable[[], SyncFlow],
    request: SyncRequest,
    *,
    observer: SyncObserver | None = None,
    cancel: threading.Event | None = None,
    handle_signals: bool = False,
) -> SyncReport:
    """One sync call: usage checked, then the ping started, then ``opener`` (so that a configuration
    error is pinged too), then the entities synced.

    A signal (with ``handle_signals``) or ``cancel`` stops every wait; the runs in progress are
    recorded as cancelled and the report says which signal came.
    """
    request.check()
    pings = PingReport(request.command, request.ping_url)  # a bad ping URL is a usage error, before anything
    stop = _Stop(event=cancel or threading.Event())
    with _signals(stop, handle_signals):
        try:
            report = opener()._run(request, observer or _Quiet(), stop, pings)
        except BaseException as exc:
            status = exit_status(exc)
            if status is not None:
                _warn(pings.finish(status[0], lines=status[1], stop=stop))
            raise
        _warn(pings.finish(report.exit_code, lines=None, stop=stop))
    return report


def add_connector(
    config: Path | None,
    name: str,
    *,
    url: str,
    token_env: str | None = None,
    target_schema: str | None = None,
    ca_bundle: Path | None = None,
    verify_tls: bool = True,
) -> Path:
    """Add a connector to the configuration file (comments kept); returns the file's path.

    The new table is validated exactly as a later load would, before anything is written; an
    invalid value is a UsageError naming the command-line option that set it.
    """
    if ca_bundle and not verify_tls:
        raise UsageError("give either --ca-bundle or --no-verify-tls, not both")
    table: dict[str, Any] = {"base_url": url}
    if token_env:
        table["token_env"] = token_env
    if target_schema:
        table["target_schema"] = target_schema
    if ca_bundle:
        table["verify_tls"] = str(ca_bundle)
    elif not verify_tls:
        table["verify_tls"] = False
    try:
        ConnectorConfig.model_validate(table)
    except ValidationError as exc:
        option = {"base_url": "url", "verify_tls": "ca-bundle"}  # the model's fields as the options that set them
        raise UsageError(
            "; ".join(
                f"--{'-'.join(option.get(str(p), str(p)) for p in e['loc']).replace('_', '-')}:"
                f" {e['msg'].removeprefix('Value error, ')}"
                for e in exc.errors()
            )
        ) from None
    path = config_path(config)
    from syncflow import tomledit

    tomledit.add_connector(path, name, table)
    return path


def remove_connector(config: Path | None, name: str) -> Path:
    """Remove a connector from the configuration file; its tables and history stay in PostgreSQL."""
    path = config_path(config)
    from syncflow import tomledit

    tomledit.remove_connector(path, name)
    return path


def _slug_at(ref: str, name: str) -> str:
    return ref.split(".", 1)[1] if ref.startswith(f"{name}.") else ref


def _slugs_at(refs: Sequence[str], name: str) -> frozenset[str]:
    """The slugs among ``refs`` (SLUG or CONNECTOR.SLUG) that may belong to connector ``name``."""
    return frozenset(_slug_at(r, name) for r in refs if "." not in r or r.startswith(f"{name}."))


def _warn(problem: str | None) -> None:
    if problem:
        log.warning(problem, extra={"event": "ping_failed"})


def open(
    config: str | Path | None = None,
    *,
    database_url: str | None = None,
    env: dict[str, str] | None = None,
    require_file: bool = True,
) -> SyncFlow:
    """A SyncFlow configured as the command line would be: ``config`` (else ``$SYNCFLOW_CONFIG``, else
    ``./syncflow.toml``) < the environment (``env``, default ``os.environ``) < keyword overrides.

    Raises :class:`~syncflow.errors.ConfigError` for a missing or invalid file.
    """
    return SyncFlow(
        Runtime.load(
            config_path=Path(config) if config is not None else None,
            database_url=database_url,
            env=env,
            require_file=require_file,
        )
    )


def __getattr__(name: str) -> Any:
    """``syncflow.api.Progress`` (a page's progress, what an observer's callback receives), from the engine."""
    if name == "Progress":
        from syncflow.sync import Progress

        return Progress
    raise AttributeError(f"module 'syncflow.api' has no attribute {name!r}")


__all__ = [
    "Progress",
    "SyncFlow",
    "SyncObserver",
    "SyncRequest",
    "add_connector",
    "exit_status",
    "open",
    "remove_connector",
    "run_sync",
]
