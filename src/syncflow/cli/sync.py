"""``syncflow sync`` and ``full-refresh``: progress drawn from the core's observer calls, results printed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from syncflow.api import (
    WHERE_KEY_UNSUPPORTED,
    SyncFlow,
    SyncRequest,
    run_sync,
)
from syncflow.cli import render
from syncflow.cli.app import (
    app,
    current_state,
)
from syncflow.cli.render import (
    emit_json,
    log,
)
from syncflow.errors import (
    UsageError,
)

if TYPE_CHECKING:  # the engine's and rich's types only: a command line that syncs nothing imports neither
    from rich.progress import Progress, TaskID

    from syncflow.aftersync import HookOutcome
    from syncflow.sync import Progress as SyncProgress
    from syncflow.workers import Outcome


def _clock(seconds: float) -> str:
    seconds = max(int(seconds + 0.5), 0)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@dataclass
class _Track:
    """One running entity as the display knows it: the latest progress and when its read began."""

    ref: str
    started: float
    read: int = 1
    read_started: float = 0.0
    latest: SyncProgress | None = None

    def update(self, p: SyncProgress) -> None:
        if p.read != self.read:
            self.read, self.read_started = p.read, time.monotonic()
        self.latest = p

    @property
    def name(self) -> str:
        return self.ref if self.read == 1 else f"{self.ref} (read {self.read})"

    def rate(self) -> float:
        """Rows per second of the current read."""
        done = self.latest.read_rows if self.latest else 0
        took = time.monotonic() - (self.read_started or self.started)
        return done / took if took > 0 else 0.0

    def describe(self) -> str:
        """``erp.items: 400/1200 rows (33%), 250 rows/s, ETA 0:00:03``, as logged without a terminal."""
        p = self.latest
        if p is None:
            return f"{self.name}: waiting for the first page ({_clock(time.monotonic() - self.started)} so far)"
        rate = self.rate()
        text = f"{self.name}: {p.read_rows}"
        if p.total is None:
            return f"{text} rows, {rate:.0f} rows/s"
        share = min(100 * p.read_rows // p.total, 100) if p.total else 100
        eta = _clock(max(p.total - p.read_rows, 0) / rate) if rate > 0 else "unknown"
        return f"{text}/{p.total} rows ({share}%), {rate:.0f} rows/s, ETA {eta}"


class _Display:
    """What a sync shows while it runs; the core reports through callbacks and never prints.

    On a terminal (text logs): one live line per entity, rows done / announced total, rate and
    ETA, frozen with its status when the entity ends; the summaries are printed once the live
    display has stopped. Otherwise (cron, pods, JSON logs): a log line when an entity starts,
    one per running entity every ``progress_interval_seconds``, and the summary.

    ``live`` says whether it is a terminal; it is asked when an entity first needs the display,
    so that a run with nothing due never makes the console nor imports rich.
    """

    def __init__(self, *, live: Callable[[], bool], kind: str, quiet: bool, interval: float = 30.0) -> None:
        self.kind = kind
        self.quiet = quiet
        self.interval = interval
        self.started = False
        self.lock = threading.Lock()
        self.tracks: dict[str, _Track] = {}
        self.tasks: dict[str, TaskID] = {}
        self.pending: list[Outcome] = []
        self.stop = threading.Event()
        self.ticker: threading.Thread | None = None
        self.live = live
        self._bar: Progress | None = None
        self._bar_known = False
        self._bar_lock = threading.Lock()  # entities may start in several worker threads at once

    @property
    def bar(self) -> Progress | None:
        """rich's live display on a terminal (not with --quiet), made the first time it is asked for."""
        with self._bar_lock:
            if not self._bar_known:
                if not self.quiet and self.live():
                    from rich.progress import BarColumn, Progress, TextColumn

                    self._bar = Progress(
                        TextColumn("{task.description}"),
                        BarColumn(bar_width=24),
                        TextColumn("{task.fields[rows]}"),
                        TextColumn("{task.fields[tail]}"),
                        console=render.err,
                        transient=False,
                    )
                self._bar_known = True
            return self._bar

    def __enter__(self) -> _Display:
        return self

    def _start(self) -> None:
        """The live display (or the progress log) starts with the first entity, not before."""
        with self.lock:
            if self.started:
                return
            self.started = True
        if self.bar is not None:
            self.bar.start()
        elif not self.quiet:
            self.ticker = threading.Thread(target=self._tick, name="progress-log", daemon=True)
            self.ticker.start()

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.ticker is not None:
            self.ticker.join(timeout=5)
        if self.started and self.bar is not None:
            self.bar.stop()
        for outcome in self.pending:  # after the live display: each summary on its own line
            _report(outcome)
        self.pending.clear()

    def _tick(self) -> None:
        while not self.stop.wait(self.interval):
            with self.lock:
                tracks = list(self.tracks.values())
            for t in tracks:
                p = t.latest
                counts = {"rows": p.read_rows, "total": p.total, "pages": p.pages, "read": p.read} if p else None
                log.info(t.describe(), extra={"event": "run_progress", "entity": t.ref, "counts": counts})

    def nothing_due(self) -> None:
        log.info("nothing is due", extra={"event": "nothing_due"})

    def after_sync(self, hook: HookOutcome) -> None:
        _report_after_sync(hook)

    def progress(self, ref: str) -> Callable[[SyncProgress], None] | None:
        """Called by the runner as the entity's run begins; returns its progress callback."""
        self._start()
        track = _Track(ref, started=time.monotonic())
        with self.lock:
            self.tracks[ref] = track
        bar = self.bar
        if bar is None:
            if not self.quiet:
                log.info("started %s of %s", self.kind, ref, extra={"event": "run_started", "entity": ref})
            return track.update
        from rich.markup import escape

        task = bar.add_task(escape(ref), total=None, rows="0 rows", tail="")
        self.tasks[ref] = task

        def update(p: SyncProgress) -> None:
            new_read = p.read != track.read
            track.update(p)
            if new_read:
                bar.reset(task, total=p.total, completed=p.read_rows)
            rate = track.rate()
            eta = ""
            if p.total is not None and rate > 0:
                eta = f"  ETA {_clock(max(p.total - p.read_rows, 0) / rate)}"
            bar.update(
                task,
                description=escape(track.name),
                total=p.total,
                completed=p.read_rows,
                rows=f"{p.read_rows}/{p.total} rows" if p.total is not None else f"{p.read_rows} rows",
                tail=f"{rate:.0f} rows/s{eta}",
            )

        return update

    def finished(self, outcome: Outcome) -> None:
        """The entity ended: freeze its line with the status; report now, or after the live display."""
        with self.lock:
            track = self.tracks.pop(outcome.entity, None)
        bar, task = self.bar, self.tasks.get(outcome.entity)
        if bar is None or task is None:
            if bar is None:
                _report(outcome)
            else:
                self.pending.append(outcome)
            return
        self.pending.append(outcome)
        result = outcome.result
        status = result.status if result else ("error" if outcome.error else "skipped")
        colour = {"success": "green", "partial": "yellow", "skipped": "dim"}.get(status, "red")
        took = result.duration if result else (time.monotonic() - track.started if track else 0.0)
        rate = f"{track.rate():.0f} rows/s  " if track and track.latest else ""
        bar.update(task, tail=f"{rate}[{colour}]{status}[/] in {took:.1f}s")
        bar.stop_task(task)


def _report(outcome: Outcome) -> None:
    if outcome.error is not None:
        log.error(outcome.error, extra={"event": "entity_error", "entity": outcome.entity})
        return
    if outcome.result is None:
        log.info(
            "skipped %s: %s", outcome.entity, outcome.skipped, extra={"event": "skipped", "entity": outcome.entity}
        )
        return
    result = outcome.result
    c = result.counts
    fields = {
        "event": "run_finished",
        "entity": result.entity,
        "connector": result.entity.split(".", 1)[0],
        "run_id": result.uid,
        "status": result.status,
        "duration_seconds": round(result.duration, 3),
        "counts": {k: v for k, v in result.to_json().items() if k.startswith("records_")},
    }
    summary = (
        f"{result.status} {result.entity}: {c.fetched} fetched, {c.inserted} inserted, {c.updated} updated, "
        f"{c.unchanged} unchanged, {c.deleted} deleted, {c.rejected} rejected in {result.duration:.1f}s "
        f"(run {result.uid})"
    )
    log.info(summary, extra={**fields, "summary": True})
    for w in result.warnings:
        log.warning(
            "%s: %s", result.entity, w, extra={"event": "run_warning", "entity": result.entity, "run_id": result.uid}
        )
    if result.error_message:
        log.error(
            result.error_message,
            extra={
                "event": "run_failed",
                "entity": result.entity,
                "run_id": result.uid,
                "error": result.error_details.get("error"),
            },
        )
    hook = result.after_sync.get("entity")
    if hook is not None and hook.get("status") == "failed":
        log.error(
            "after_sync_sql of %s failed: %s",
            result.entity,
            hook.get("error"),
            extra={"event": "after_sync_failed", "entity": result.entity, "run_id": result.uid},
        )


def _report_after_sync(hook: HookOutcome) -> None:
    """A connector's after_sync_sql, once its entities are done (entities' own ones come with their runs)."""
    if hook.status == "failed":
        log.error(
            "%s failed: %s", hook.label, hook.error, extra={"event": "after_sync_failed", "connector": hook.target}
        )
    elif hook.status == "ok":
        log.info("%s ran in %.1fs", hook.label, hook.seconds, extra={"event": "after_sync", "connector": hook.target})


def _run_syncs(ctx: typer.Context, request: SyncRequest, *, as_json: bool) -> None:
    """``sync`` and ``full-refresh``: one core call (signals handled), its progress drawn, its result printed."""
    state = current_state(ctx)
    display = _Display(
        live=lambda: state.log_format == "text" and render.err.is_terminal,
        kind=request.command,
        quiet=state.quiet,
    )

    def opener() -> SyncFlow:
        sf = SyncFlow(state.runtime())
        display.interval = sf.runtime.config.settings.sync.progress_interval_seconds
        return sf

    with display:
        report = run_sync(opener, request, observer=display, handle_signals=True)
    if as_json:
        emit_json(report.to_json())  # one document; [] when nothing was due
    for note_ in report.notes:
        log.warning(note_, extra={"event": "config_warning"})
    for problem in report.warnings:
        log.warning(problem, extra={"event": "metrics_failed"})
    if report.exit_code:
        raise typer.Exit(report.exit_code)


SYNC_EXIT_HELP = (
    "Exit codes: 0 every run succeeded, nothing was due, or --all left an entity to the process that holds it "
    "(metrics that cannot be written or pushed are a warning, never a failure); "
    "1 a run failed or was partial, or an after_sync_sql statement failed (a connector's missing token or "
    "unreadable CA bundle fails that "
    "connector's entities; the others still sync); 2 usage, configuration (no configuration file) or database "
    "unreachable; 75 an entity named explicitly is being synced by another process (use --wait), or another "
    "session holds a lock on a SyncFlow table beyond lock_timeout_seconds; 130/143 stopped by SIGINT/SIGTERM "
    "(queries in flight are cancelled; the run is recorded as cancelled)."
)
FULL_REFRESH_EXIT_HELP = (
    "Exit codes: 0 every run succeeded (metrics that cannot be written or pushed are a warning, never a "
    "failure); 1 a run failed or was partial; 2 usage, configuration (no configuration file) or database "
    "unreachable; 75 an entity is being synced by another process (use --wait), or another session holds a "
    "lock on a SyncFlow table beyond lock_timeout_seconds; 130/143 stopped by SIGINT/SIGTERM (queries in "
    "flight are cancelled; the run is recorded as cancelled)."
)
MetricsFileOpt = Annotated[
    Path | None,
    typer.Option("--metrics-file", help="Write Prometheus metrics to this node_exporter textfile (atomically)."),
]
PushgatewayOpt = Annotated[
    str | None, typer.Option("--pushgateway", help="Push Prometheus metrics to this Pushgateway URL.")
]
WorkersOpt = Annotated[
    int | None, typer.Option("--workers", min=1, max=64, help="Entities synced at once (default: from the config).")
]
WaitOpt = Annotated[
    bool,
    typer.Option(
        "--wait",
        help="Wait for an entity another process is syncing, instead of skipping it (until it is free or a "
        "signal comes; bound it with --wait-timeout).",
    ),
]
WaitTimeoutOpt = Annotated[
    float | None,
    typer.Option(
        "--wait-timeout",
        min=0.001,
        help="Wait at most this many seconds for each claim (implies --wait); then skip it, exit 75.",
    ),
]
PingUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--ping-url",
        metavar="URL",
        help="Ping this monitor (healthchecks.io convention): GET URL/start, then POST URL on success, URL/fail "
        "on exit 1, URL/CODE otherwise, with a short summary. Default: $SYNCFLOW_PING_URL, else ping_url in "
        "\\[notify]. A ping never changes the exit code.",
        show_default=False,
    ),
]
JsonRunsOpt = Annotated[
    bool,
    typer.Option("--json", help="Print a JSON array on stdout: one object per entity ([] when nothing is due)."),
]
DeleteFractionOpt = Annotated[
    float | None,
    typer.Option(
        "--max-delete-fraction",
        min=0.0,
        max=1.0,
        help="Allow a full sync to soft-delete up to this share of the table (default: from the config).",
    ),
]


@app.command(
    "sync",
    epilog="Examples: syncflow sync erp.items · syncflow sync --all --connector erp · "
    "syncflow sync --all --json --metrics-file /var/lib/node_exporter/syncflow.prom\n\n" + SYNC_EXIT_HELP,
)
def sync(
    ctx: typer.Context,
    refs: Annotated[list[str] | None, typer.Argument(help="Entities as CONNECTOR.SLUG.", show_default=False)] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every enabled entity that is due.")] = False,
    force: Annotated[bool, typer.Option("--force", help="With --all: ignore the intervals.")] = False,
    connector: Annotated[str | None, typer.Option("--connector", help="With --all: only this connector.")] = None,
    workers: WorkersOpt = None,
    wait: WaitOpt = False,
    wait_timeout: WaitTimeoutOpt = None,
    as_json: JsonRunsOpt = False,
    max_delete_fraction: DeleteFractionOpt = None,
    metrics_file: MetricsFileOpt = None,
    pushgateway: PushgatewayOpt = None,
    from_rowversion: Annotated[
        str | None,
        typer.Option(
            "--from-rowversion",
            metavar="V",
            help="Backfill: re-read the named rowversion entities' rows above row version V (run kind "
            "'backfill'). The checkpoint never moves back; deletes are not reconciled; other entities are "
            "untouched. Not with --all.",
            show_default=False,
        ),
    ] = None,
    where_key: Annotated[
        list[str] | None,
        typer.Option(
            "--where-key",
            metavar="COL=VALUE",
            help="Not supported: the APISmith protocol has no key filter (exits 2 saying so).",
            show_default=False,
        ),
    ] = None,
    ping_url: PingUrlOpt = None,
) -> None:
    """Sync entities with their delta strategy (full, rowversion or hash).

    A first load killed part-way resumes at its last committed batch ('runs' says where).
    """
    if where_key:
        raise UsageError(WHERE_KEY_UNSUPPORTED)
    request = SyncRequest(
        refs=tuple(refs or ()),
        all_=all_,
        force=force,
        connector=connector,
        workers=workers,
        wait=wait,
        wait_timeout=wait_timeout,
        max_delete_fraction=max_delete_fraction,
        from_rowversion=from_rowversion,
        metrics_file=metrics_file,
        pushgateway=pushgateway,
        ping_url=ping_url,
    )
    _run_syncs(ctx, request, as_json=as_json)


@app.command(
    "full-refresh",
    epilog="Example: syncflow full-refresh erp.items erp.orders\n\n" + FULL_REFRESH_EXIT_HELP,
)
def full_refresh(
    ctx: typer.Context,
    refs: Annotated[list[str], typer.Argument(help="Entities as CONNECTOR.SLUG.", show_default=False)],
    workers: WorkersOpt = None,
    wait: WaitOpt = False,
    wait_timeout: WaitTimeoutOpt = None,
    as_json: JsonRunsOpt = False,
    max_delete_fraction: DeleteFractionOpt = None,
    metrics_file: MetricsFileOpt = None,
    pushgateway: PushgatewayOpt = None,
    ping_url: PingUrlOpt = None,
) -> None:
    """Fetch everything ignoring the checkpoint, reconcile deletes, then reset the checkpoint.

    Never resumes a dead run's load: it reads every page again.
    """
    request = SyncRequest(
        refs=tuple(refs),
        full_refresh=True,
        workers=workers,
        wait=wait,
        wait_timeout=wait_timeout,
        max_delete_fraction=max_delete_fraction,
        metrics_file=metrics_file,
        pushgateway=pushgateway,
        ping_url=ping_url,
    )
    _run_syncs(ctx, request, as_json=as_json)
