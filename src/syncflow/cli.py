"""The ``syncflow`` command line: parse, call the core, render, map errors to exit codes.

Exit codes: 0 success; 1 a run or request failed; 2 usage, configuration or
database unreachable; 75 try again later (a claim or lock held elsewhere);
130/143 signals. Logs and errors go to stderr; stdout carries tables or, with
``--json``, JSON only. Reporting commands (status, entities, entity show,
runs, history, connector list/show, db status) open a read-only connection.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import psycopg
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from syncflow import __version__, claims, db, history, inflight, logs, metrics, ping, store, tomledit
from syncflow import runs as runs_mod
from syncflow.aftersync import HookOutcome
from syncflow.config import PING_URL_ENV, ConnectorConfig, config_path
from syncflow.discovery import DiscoveryReport, discover_connector
from syncflow.errors import (
    EXIT_CLAIMED,
    EXIT_FAILED,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    SyncFlowError,
    UsageError,
)
from syncflow.health import entity_health
from syncflow.ping import Pinger
from syncflow.runner import Outcome, due_entities, effective_settings, run_entities
from syncflow.runs import RunResult
from syncflow.runtime import Runtime, check_connector
from syncflow.sync import Progress as SyncProgress
from syncflow.sync import check_backfill

P = ParamSpec("P")
R = TypeVar("R")

# Piped output (cron logs, CI) gets wide tables instead of rich's 80-column default.
_WIDTH = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 160
out = Console(highlight=False, width=_WIDTH)
err = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_CODES_HELP = (
    "Exit codes: 0 success; 1 a run or request failed, or status found an unhealthy entity; 2 usage, "
    "configuration (no configuration file included) or database unreachable; 75 try again later: an entity "
    "named explicitly is being synced by another process, or another session holds a lock SyncFlow needs "
    "beyond lock_timeout_seconds; 130/143 stopped by SIGINT/SIGTERM."
)

app = typer.Typer(
    name="syncflow",
    help="Keep PostgreSQL in sync with APISmith REST APIs. One pass per invocation, made for cron.\n\n"
    + EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
connector_app = typer.Typer(help="Manage APISmith connectors in syncflow.toml.", no_args_is_help=True)
db_app = typer.Typer(help="Inspect and upgrade SyncFlow's metadata schema.", no_args_is_help=True)
entity_app = typer.Typer(help="Show and change one entity's sync settings.", no_args_is_help=True)
app.add_typer(connector_app, name="connector")
app.add_typer(db_app, name="db")
app.add_typer(entity_app, name="entity")


class LogFormat(enum.StrEnum):
    text = "text"
    json = "json"


class LogLevel(enum.StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


log = logging.getLogger("syncflow.cli")


@dataclass
class State:
    """Global options, kept until a command needs the configuration."""

    config_path: Path | None = None
    database_url: str | None = None
    log_format: str = "text"

    def runtime(self, *, require_file: bool = True) -> Runtime:
        """The configuration; commands that only read the database can do without the file."""
        return Runtime.load(config_path=self.config_path, database_url=self.database_url, require_file=require_file)


def _state(ctx: typer.Context) -> State:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, State) else State()


def exit_status(exc: BaseException) -> tuple[int, list[str]] | None:
    """The exit code and message lines of an exception leaving a command; None for one guarded lets through.

    The one mapping of errors to exit codes: :func:`guarded` applies it, the run ping reports it.
    """
    if isinstance(exc, SyncFlowError):
        return exc.exit_code, str(exc).splitlines() or [type(exc).__name__]
    if isinstance(exc, psycopg.Error):
        translated = db.translate(exc, "database error")
        return translated.exit_code, [str(translated)]
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_SIGINT, ["interrupted"]
    if isinstance(exc, typer.Exit):
        return exc.exit_code, []
    return None


def guarded(fn: Callable[P, R]) -> Callable[P, R]:
    """The one place where SyncFlow errors become messages and exit codes."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (SyncFlowError, psycopg.Error, KeyboardInterrupt) as exc:
            status = exit_status(exc)
            assert status is not None
            event = "interrupted" if isinstance(exc, KeyboardInterrupt) else "error"
            for line in status[1]:
                log.error(line, extra={"event": event, "error": type(exc).__name__})
            raise typer.Exit(status[0]) from None

    return wrapper


def emit_json(data: Any) -> None:
    """JSON on stdout, nothing else, for scripts."""
    sys.stdout.write(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")


def _version(value: bool) -> None:
    if value:
        out.print(f"syncflow {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="Configuration file. Default: $SYNCFLOW_CONFIG, else ./syncflow.toml.",
            show_default=False,
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="PostgreSQL URL; overrides url in the \\[database] table and $SYNCFLOW_DATABASE_URL.",
            show_default=False,
        ),
    ] = None,
    log_format: Annotated[
        LogFormat, typer.Option("--log-format", help="Logs on stderr: readable text or one JSON object per line.")
    ] = LogFormat.text,
    log_level: Annotated[LogLevel, typer.Option("--log-level", help="Least severe log level shown.")] = LogLevel.info,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit."),
    ] = False,
) -> None:
    """Global options come before the command: syncflow --config F sync --all."""
    logs.setup(log_format.value, log_level.value)
    ctx.obj = State(config_path=config, database_url=database_url, log_format=log_format.value)


# -- connectors -----------------------------------------------------------------------------


@connector_app.command("add")
@guarded
def connector_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Connector name: lower-case letters, digits, '_'.")],
    url: Annotated[str, typer.Option("--url", help="APISmith base URL, e.g. https://apismith:8007")],
    token_env: Annotated[
        str | None,
        typer.Option("--token-env", help="Name of the environment variable holding the bearer token."),
    ] = None,
    target_schema: Annotated[
        str | None,
        typer.Option(
            "--target-schema", help="PostgreSQL schema for this connector's tables (default: the connector name)."
        ),
    ] = None,
    ca_bundle: Annotated[
        Path | None, typer.Option("--ca-bundle", help="CA bundle that signs the APISmith certificate.")
    ] = None,
    no_verify_tls: Annotated[
        bool, typer.Option("--no-verify-tls", help="Turn TLS verification off (not recommended).")
    ] = False,
) -> None:
    """Add a connector to the configuration file, keeping its comments."""
    state = _state(ctx)
    path = config_path(state.config_path)
    table: dict[str, Any] = {"base_url": url}
    if token_env:
        table["token_env"] = token_env
    if target_schema:
        table["target_schema"] = target_schema
    if ca_bundle and no_verify_tls:
        raise UsageError("give either --ca-bundle or --no-verify-tls, not both")
    if ca_bundle:
        table["verify_tls"] = str(ca_bundle)
    elif no_verify_tls:
        table["verify_tls"] = False
    # Validate the new connector exactly as a later load would, before writing.
    try:
        ConnectorConfig.model_validate(table)
    except ValidationError as exc:
        # The model's field names, as the options that set them (base_url is --url).
        option = {"base_url": "url", "verify_tls": "ca-bundle"}
        raise UsageError(
            "; ".join(
                f"--{'-'.join(option.get(str(p), str(p)) for p in e['loc']).replace('_', '-')}:"
                f" {e['msg'].removeprefix('Value error, ')}"
                for e in exc.errors()
            )
        ) from None
    tomledit.add_connector(path, name, table)
    err.print(f"added connector [bold]{escape(name)}[/] to {escape(str(path))}")
    if no_verify_tls:
        err.print("[yellow]warning:[/] TLS verification is off for this connector")


@connector_app.command("remove")
@guarded
def connector_remove(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Connector to remove.")]) -> None:
    """Remove a connector from the file; its tables and history stay in PostgreSQL."""
    path = config_path(_state(ctx).config_path)
    tomledit.remove_connector(path, name)
    err.print(
        f"removed connector [bold]{escape(name)}[/] from {escape(str(path))}; it becomes inactive "
        "in the database on the next run, and its tables and history are kept"
    )


def _connector_json(name: str, runtime: Runtime) -> dict[str, Any]:
    import os

    c = runtime.config.connector(name)
    return {
        "name": name,
        "base_url": c.base_url,
        "token_env": c.token_env,
        "token_set": bool(c.token_env and os.environ.get(c.token_env)),
        "target_schema": c.target_schema or name,
        "verify_tls": c.verify_tls,
        "after_sync_sql": c.after_sync_sql,
        "after_sync_when": c.after_sync_when,
        "entities": {slug: o.model_dump(exclude_none=True) for slug, o in c.entities.items()},
    }


@connector_app.command("list")
@guarded
def connector_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the connectors in the configuration file."""
    runtime = _state(ctx).runtime()
    rows = [_connector_json(n, runtime) for n in sorted(runtime.config.settings.connectors)]
    if as_json:
        emit_json(rows)
        return
    if not rows:
        err.print(f"no connectors in {escape(str(runtime.config.path))}; add one with 'syncflow connector add'")
        return
    table = Table(title="Connectors")
    for col in ("name", "base URL", "token", "target schema", "TLS"):
        table.add_column(col)
    for r in rows:
        token = "-" if not r["token_env"] else f"${r['token_env']} ({'set' if r['token_set'] else 'NOT SET'})"
        table.add_row(
            *(escape(str(v)) for v in (r["name"], r["base_url"], token, r["target_schema"])),
            escape(str(r["verify_tls"]).lower()),
        )
    out.print(table)


@connector_app.command("show")
@guarded
def connector_show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Connector name.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show one connector's settings and per-entity overrides."""
    runtime = _state(ctx).runtime()
    data = _connector_json(name, runtime)
    if as_json:
        emit_json(data)
        return
    for key in ("name", "base_url", "token_env", "token_set", "target_schema", "verify_tls"):
        out.print(f"[bold]{key}[/]: {escape(str(data[key]))}")
    if data["after_sync_sql"] is not None:
        out.print(f"[bold]after_sync_sql[/] ({data['after_sync_when']}): {escape(data['after_sync_sql'])}")
    for slug, o in data["entities"].items():
        out.print(f"[bold]entities.{escape(slug)}[/]: {escape(json.dumps(o))}")


@connector_app.command("test")
@guarded
def connector_test(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Connector name.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Check reachability, TLS, the token and the API count. Exit 1 when it fails."""
    result = check_connector(_state(ctx).runtime(), name)
    if as_json:
        emit_json(result)
    elif result["ok"]:
        out.print(
            f"[green]ok[/] connector {escape(name)}: {result['apis']} APIs, "
            f"{result['latency_ms']} ms ({escape(result['base_url'])})"
        )
        if "warning" in result:
            err.print(f"[yellow]warning:[/] {escape(result['warning'])}")
    else:
        err.print(f"[bold red]error:[/] {escape(result['error'])}")
    if not result["ok"]:
        raise typer.Exit(EXIT_FAILED)


# -- database -------------------------------------------------------------------------------


@db_app.command("upgrade")
@guarded
def db_upgrade(ctx: typer.Context) -> None:
    """Apply pending metadata migrations (sync, discover and entity set also do this themselves)."""
    runtime = _state(ctx).runtime(require_file=False)
    conn = runtime.connect(autocommit=True)
    try:
        with db.translate_locks(conn, runtime.schema):
            applied = db.upgrade(conn, runtime.schema)
    finally:
        conn.close()
    if applied:
        for mig in applied:
            err.print(f"applied {mig.version:04d}_{mig.name}")
    else:
        err.print(f"schema {runtime.schema!r} is up to date")


@db_app.command("status")
@guarded
def db_status(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Show which metadata migrations are applied (read-only)."""
    runtime = _state(ctx).runtime(require_file=False)
    conn = runtime.connect(autocommit=True, read_only=True)
    try:
        with db.translate_locks(conn, runtime.schema):
            status = db.migration_status(conn, runtime.schema)
    finally:
        conn.close()
    rows: list[dict[str, Any]] = [{"version": m.version, "name": m.name, "applied_at": at} for m, at in status]
    if as_json:
        emit_json(
            {
                "schema": runtime.schema,
                "database": db.describe_target(runtime.config.settings.database.url),
                "migrations": rows,
            }
        )
        return
    table = Table(title=f"Migrations in schema {escape(runtime.schema)}")
    table.add_column("version")
    table.add_column("name")
    table.add_column("applied at")
    for r in rows:
        table.add_row(
            f"{r['version']:04d}",
            escape(r["name"]),
            escape(r["applied_at"]) if r["applied_at"] else "[yellow]pending[/]",
        )
    out.print(table)


# -- discovery ------------------------------------------------------------------------------


def _render_report(report: DiscoveryReport) -> None:
    verb = "would" if report.dry_run else "did"
    table = Table(title=f"Discovery of {escape(report.connector)}" + (" (dry run)" if report.dry_run else ""))
    for col in ("entity", "table", "strategy", "keys", "action", "changes"):
        table.add_column(col)
    for o in report.outcomes:
        p = o.plan
        changes: list[str] = []
        if p.action == "create":
            changes.append(f"create with {len(p.columns)} columns")
        changes += [escape(f"add {c.pg_name} {c.pg_type}") for c in p.add_columns]
        changes += [escape(f"widen {n}: {a} → {b}") for n, a, b in p.widen]
        changes += [escape(f"retire {n}") for n in p.retire]
        changes += [escape(f"restore {n}") for n in p.restore]
        if p.strategy_change:
            changes.append(escape(f"strategy {p.strategy_change[0]} → {p.strategy_change[1]}; checkpoint reset"))
        changes += [f"[red]breaking:[/] {escape(b)}" for b in p.breaking]
        if p.unsyncable_reason:
            changes.append(f"[yellow]not syncable:[/] {escape(p.unsyncable_reason)}")
        if o.backup_table:
            changes.append(f"rebuilt; old rows kept in {escape(o.backup_table)}")
        if o.error:
            changes.append(f"[red]failed:[/] {escape(o.error)}")
        if p.checkpoint_reset and not o.refused:
            changes.append(f"checkpoint reset, the next sync reads every row: {escape('; '.join(p.checkpoint_reset))}")
        if o.refused:
            changes.append("[yellow]refused: a sync is running; nothing changed[/]")
        action = {"breaking": "[red]attention[/]", "unsyncable": "[yellow]skipped[/]"}.get(p.action, p.action)
        table.add_row(
            escape(p.ref),
            escape(f"{p.target_schema}.{p.target_table}"),
            escape(p.delta_strategy),
            escape(", ".join(p.business_keys)),
            action,
            "\n".join(changes) or "-",
        )
    out.print(table)
    for w in report.warnings + [w for o in report.outcomes for w in o.plan.warnings]:
        err.print(f"[yellow]warning:[/] {escape(report.connector)}: {escape(w)}")
    for slug in report.missing:
        err.print(
            f"[yellow]warning:[/] {escape(report.connector)}.{escape(slug)} is no longer offered by APISmith; "
            "its table is kept"
        )
    for o in report.outcomes:
        if o.plan.breaking and not o.backup_table and not report.dry_run and not o.error:
            from syncflow.discovery import attention_message

            err.print(f"[yellow]attention:[/] {escape(o.plan.ref)}: {escape(attention_message(o.plan))}")
    if not report.outcomes:
        err.print(f"{escape(report.connector)}: APISmith offers no APIs ({verb} nothing)")


@app.command("discover")
@guarded
def discover(
    ctx: typer.Context,
    connectors: Annotated[
        list[str] | None, typer.Argument(help="Connectors to discover (default: all in the file).")
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the plan; change nothing (on a database without SyncFlow metadata, only that is created).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan/result as JSON.")] = False,
    rebuild: Annotated[
        list[str] | None,
        typer.Option(
            "--rebuild",
            help="Apply a breaking change to this entity (SLUG or CONNECTOR.SLUG) by building its "
            "table anew; the old table is kept as a backup. Repeatable.",
        ),
    ] = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait", help="When an entity to change is being synced, wait for that sync to end instead of refusing it."
        ),
    ] = False,
    wait_timeout: Annotated[
        float,
        typer.Option("--wait-timeout", min=0.001, help="With --wait: the longest wait per entity, in seconds."),
    ] = 600.0,
) -> None:
    """Ask each APISmith what APIs it has; create or evolve one table per entity.

    A change to an entity that a sync is running on is refused (or, with
    --wait, waited for): the other entities are still applied. When a change
    leaves rows the table lacks (a table created or emptied, a column added or
    restored, a new target, a strategy change, a rebuild), the entity's
    checkpoint is reset and its next sync reads every row again.

    Exit code 1 when a connector cannot be reached or an entity's change fails;
    75 when an entity was refused because a sync of it is running.
    """
    runtime = _state(ctx).runtime()
    names = connectors or sorted(runtime.config.settings.connectors)
    if not names:
        raise UsageError(f"{runtime.config.path}: no connectors configured; add one with 'syncflow connector add'")
    for n in names:
        runtime.config.connector(n)
    reports: list[DiscoveryReport] = []
    failures: list[str] = []
    # --dry-run writes nothing once the metadata schema exists (on a new database it creates it first).
    with runtime.metadata(read_only=dry_run and _metadata_current(runtime)) as conn:
        for name in names:
            wanted = frozenset(
                r.split(".", 1)[1] if r.startswith(f"{name}.") else r
                for r in (rebuild or [])
                if "." not in r or r.startswith(f"{name}.")
            )
            try:
                with runtime.client(name) as client:
                    report = discover_connector(
                        conn,
                        runtime.schema,
                        runtime.config,
                        name,
                        client,
                        dry_run=dry_run,
                        rebuild=wanted,
                        wait_seconds=wait_timeout if wait else None,
                    )
            except SyncFlowError as exc:
                if len(names) == 1:
                    raise
                failures.append(str(exc))
                err.print(f"[bold red]error:[/] {escape(str(exc))}")
                continue
            reports.append(report)
            if not as_json:
                _render_report(report)
            for problem in report.rejected:
                err.print(f"[bold red]error:[/] {escape(name)}: {escape(problem)}")
            failures += report.rejected + [o.error for o in report.outcomes if o.error]
            for refusal in report.refused:
                err.print(f"[yellow]refused:[/] {escape(refusal)}")
    if as_json:
        emit_json([r.to_json() for r in reports])
    found = {(r.connector, o.plan.slug) for r in reports for o in r.outcomes}

    def slug_at(ref: str, name: str) -> str:
        return ref.split(".", 1)[1] if ref.startswith(f"{name}.") else ref

    unknown = [ref for ref in rebuild or [] if not any((n, slug_at(ref, n)) in found for n in names)]
    if unknown and len(reports) == len(names):
        raise UsageError(
            f"--rebuild {', '.join(unknown)}: no such API at {', '.join(names)}; nothing was rebuilt for it"
        )
    if failures:
        raise typer.Exit(EXIT_FAILED)
    if any(r.refused for r in reports):
        raise typer.Exit(EXIT_CLAIMED)


def _metadata_current(runtime: Runtime) -> bool:
    """Whether every metadata migration is applied (read-only look)."""
    conn = runtime.connect(autocommit=True, read_only=True)
    try:
        return all(at is not None for _, at in db.migration_status(conn, runtime.schema))
    finally:
        conn.close()


# -- entities -------------------------------------------------------------------------------


def _entity_json(runtime: Runtime, e: store.Entity, *, columns: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "entity": e.ref,
        "name": e.api_name,
        "description": e.description,
        "table": f"{e.target_schema}.{e.target_table}",
        "delta_strategy": e.delta_strategy,
        "business_keys": e.business_keys,
        **effective_settings(runtime, e),
        "syncable": e.syncable,
        "unsyncable_reason": e.unsyncable_reason,
        "needs_attention": e.needs_attention,
        "missing_at_source": e.missing_at_source,
        "last_sync_at": e.last_sync_at.isoformat() if e.last_sync_at else None,
        "last_sync_status": e.last_sync_status,
        "last_rowversion": e.last_rowversion,
    }
    if columns:
        data["columns"] = [c.to_json() for c in e.columns]
    return data


@app.command("entities")
@guarded
def entities(
    ctx: typer.Context,
    connector: Annotated[str | None, typer.Option("--connector", help="Only this connector.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List discovered entities with strategy, keys, interval and last sync."""
    runtime = _state(ctx).runtime()
    if connector is not None:
        runtime.config.connector(connector)  # a typo must not look like "no entities"
    with runtime.metadata(read_only=True) as conn:
        rows = [_entity_json(runtime, e) for e in store.list_entities(conn, runtime.schema, connector=connector)]
    if as_json:
        emit_json(rows)
        return
    table = Table(title="Entities")
    for col in ("entity", "table", "strategy", "keys", "interval", "enabled", "last sync", "status"):
        table.add_column(col)
    for r in rows:
        status = r["last_sync_status"] or "never"
        if r["needs_attention"]:
            status = "[red]needs attention[/]"
        elif not r["syncable"]:
            status = "[yellow]not syncable[/]"
        elif r["missing_at_source"]:
            status = "[yellow]missing at source[/]"
        mark = " (file)"
        table.add_row(
            escape(r["entity"]),
            escape(r["table"]),
            escape(r["delta_strategy"]),
            escape(", ".join(r["business_keys"])),
            f"{r['interval_seconds']}s" + (mark if "interval_seconds" in r["overridden_by_file"] else ""),
            ("yes" if r["enabled"] else "no") + (mark if "enabled" in r["overridden_by_file"] else ""),
            r["last_sync_at"] or "-",
            status,
        )
    out.print(table)


@entity_app.command("show")
@guarded
def entity_show(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="CONNECTOR.SLUG")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show an entity's columns: source type, PostgreSQL type and name mapping."""
    runtime = _state(ctx).runtime()
    with runtime.metadata(read_only=True) as conn:
        data = _entity_json(runtime, store.get_entity(conn, runtime.schema, ref), columns=True)
    if as_json:
        emit_json(data)
        return
    for key in (
        "entity",
        "table",
        "delta_strategy",
        "business_keys",
        "interval_seconds",
        "enabled",
        "page_size",
        "last_sync_status",
        "last_rowversion",
    ):
        value = data[key]
        shown = ", ".join(value) if isinstance(value, list) else value
        note = " (from syncflow.toml)" if key in data["overridden_by_file"] else ""
        out.print(f"[bold]{key}[/]: {escape(str(shown))}{note}")
    for key in ("needs_attention", "unsyncable_reason"):
        if data[key]:
            out.print(f"[bold red]{key}[/]: {escape(str(data[key]))}")
    table = Table(title="Columns")
    for col in (
        "API name",
        "source name",
        "source type",
        "PostgreSQL name",
        "PostgreSQL type",
        "key",
        "state",
    ):
        table.add_column(col)
    for c in data["columns"]:
        table.add_row(
            escape(c["api_name"]),
            escape(c["source_name"]),
            escape(c["data_type"]),
            escape(c["pg_name"]),
            escape(c["pg_type"]),
            "yes" if c["is_business_key"] else "",
            "retired" if c["retired"] else "",
        )
    out.print(table)


@entity_app.command("set")
@guarded
def entity_set(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="CONNECTOR.SLUG")],
    interval: Annotated[int | None, typer.Option("--interval", min=1, help="Seconds between syncs.")] = None,
    enable: Annotated[
        bool | None,
        typer.Option("--enable/--disable", help="Include in 'sync --all' or not.", show_default=False),
    ] = None,
    page_size: Annotated[int | None, typer.Option("--page-size", min=1, max=100_000, help="Rows per page.")] = None,
    history_flag: Annotated[
        bool | None,
        typer.Option(
            "--history/--no-history",
            help="Keep every version of every record in <table>__history (turning it off keeps what was recorded).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Change an entity's sync settings in the database (syncflow.toml overrides still win)."""
    if interval is None and enable is None and page_size is None and history_flag is None:
        raise UsageError("nothing to change: give --interval, --enable/--disable, --page-size or --history")
    runtime = _state(ctx).runtime()
    with runtime.metadata() as conn:
        entity = store.get_entity(conn, runtime.schema, ref)
        with conn.transaction():
            store.update_settings(
                conn,
                runtime.schema,
                entity,
                interval_seconds=interval,
                enabled=enable,
                page_size=page_size,
                history=history_flag,
            )
            entity = store.get_entity(conn, runtime.schema, ref)
            if effective_settings(runtime, entity)["history"] and entity.syncable:
                history.ensure(conn, entity)  # created and seeded now, in this transaction
        data = _entity_json(runtime, entity)
    err.print(
        f"{escape(ref)}: interval {data['interval_seconds']}s, enabled {str(data['enabled']).lower()}, "
        f"page size {data['page_size']}, history {'on' if data['history'] else 'off'}"
    )
    for key in data["overridden_by_file"]:
        err.print(f"[yellow]note:[/] {key} is set in {escape(str(runtime.config.path))} and wins over the database")


# -- sync ---------------------------------------------------------------------------------


class _Board:
    """Rich progress bars (one per entity) on a terminal; nothing when logs are piped."""

    def __init__(self, enabled: bool) -> None:
        self.bar: Progress | None = None
        if enabled:
            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("rows · {task.fields[pages]} pages"),
                TransferSpeedColumn(),
                TimeElapsedColumn(),
                console=err,
                transient=True,
            )

    def __enter__(self) -> _Board:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def for_entity(self, ref: str) -> Callable[[SyncProgress], None] | None:
        bar = self.bar
        if bar is None:
            return None
        shown = escape(ref)  # the description is rendered as markup
        task = bar.add_task(shown, total=None, pages=0)

        def update(p: SyncProgress) -> None:
            bar.update(task, completed=p.bytes, total=None, pages=p.pages, description=f"{shown} {p.rows} rows")

        return update


def _report(outcome: Outcome, as_json: bool, report: _PingReport | None = None) -> None:
    if report is not None:
        report.outcome(outcome)
    if outcome.error is not None:
        log.error(outcome.error, extra={"event": "entity_error", "entity": outcome.entity})
        if as_json:
            sys.stdout.write(
                json.dumps({"entity": outcome.entity, "status": "error", "error": outcome.error}, ensure_ascii=False)
                + "\n"
            )
            sys.stdout.flush()
        return
    if outcome.result is None:
        log.info(
            "skipped %s: %s", outcome.entity, outcome.skipped, extra={"event": "skipped", "entity": outcome.entity}
        )
        if as_json:
            sys.stdout.write(
                json.dumps({"entity": outcome.entity, "status": "skipped", "reason": outcome.skipped}) + "\n"
            )
            sys.stdout.flush()
        return
    result = outcome.result
    c = result.counts
    if as_json:
        sys.stdout.write(json.dumps(result.to_json(), default=str, ensure_ascii=False) + "\n")
        sys.stdout.flush()
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
    log.info(summary, extra=fields)
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


def _report_after_sync(hook: HookOutcome, as_json: bool, report: _PingReport | None = None) -> None:
    """A connector's after_sync_sql, once its entities are done (entities' own ones come with their runs)."""
    if report is not None:
        report.after_sync(hook)
    if as_json:
        sys.stdout.write(json.dumps({"connector": hook.target, "after_sync": hook.to_json()}) + "\n")
        sys.stdout.flush()
    if hook.status == "failed":
        log.error(
            "%s failed: %s", hook.label, hook.error, extra={"event": "after_sync_failed", "connector": hook.target}
        )
    elif hook.status == "ok":
        log.info("%s ran in %.1fs", hook.label, hook.seconds, extra={"event": "after_sync", "connector": hook.target})


def _run_syncs(
    ctx: typer.Context,
    refs: list[str] | None,
    *,
    full_refresh: bool,
    as_json: bool,
    all_: bool = False,
    force: bool = False,
    connector: str | None = None,
    workers: int | None = None,
    wait: bool = False,
    wait_timeout: float | None = None,
    max_delete_fraction: float | None = None,
    metrics_file: Path | None = None,
    pushgateway: str | None = None,
    backfill_from: str | None = None,
    ping_url: str | None = None,
) -> None:
    report = _PingReport(ctx.info_name or "sync", ping_url)  # a bad --ping-url is a usage error, before anything
    cancel = threading.Event()
    received: list[int] = []
    again = threading.Event()  # a second signal: stop waiting for the final ping too

    def on_signal(signum: int, _frame: object) -> None:
        if received:
            again.set()
        received.append(signum)
        cancel.set()
        # The main thread may itself be blocked in PostgreSQL (a lock on SyncFlow's tables): cancel
        # the statements in flight from another thread, never from inside the handler.
        threading.Thread(target=inflight.interrupt, args=(cancel,), name="interrupt", daemon=True).start()

    # Installed before the first query, so that a signal at any point ends in a recorded, bounded stop.
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        handlers = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        _sync_invocation(
            ctx,
            refs,
            cancel=cancel,
            received=received,
            report=report,
            full_refresh=full_refresh,
            as_json=as_json,
            all_=all_,
            force=force,
            connector=connector,
            workers=workers,
            wait=wait,
            wait_timeout=wait_timeout,
            max_delete_fraction=max_delete_fraction,
            metrics_file=metrics_file,
            pushgateway=pushgateway,
            backfill_from=backfill_from,
        )
        report.finish(0, cancel=cancel, again=again, signalled=bool(received))
    except BaseException as exc:
        status = exit_status(exc)
        if status is not None:
            report.finish(status[0], lines=status[1], cancel=cancel, again=again, signalled=bool(received))
        raise
    finally:
        for sig, old in handlers.items():
            signal.signal(sig, old)


class _PingReport:
    """The run pings of one sync invocation (see syncflow.ping): the URL, what to say, and when."""

    def __init__(self, command: str, cli_url: str | None) -> None:
        self.command = command
        self.cli_url = cli_url
        self.lines: list[str] = []
        self.pinger: Pinger | None = None
        self.secrets: list[str] = [os.environ.get("PGPASSWORD", "")]
        if cli_url is not None:
            try:
                ping.check_url(cli_url)
            except ValueError as exc:
                raise UsageError(f"--ping-url: {exc}") from None
        # Known before the configuration, so that a configuration error is reported too.
        early = cli_url or os.environ.get(PING_URL_ENV)
        if early:
            with contextlib.suppress(ValueError):
                self.pinger = Pinger(ping.check_url(early), secrets=self.secrets)

    def configure(self, runtime: Runtime) -> None:
        """The URL from the configuration (--ping-url wins) and the secrets to blank: the connectors' tokens."""
        for cfg in runtime.config.settings.connectors.values():
            if cfg.token_env:
                self.secrets.append(os.environ.get(cfg.token_env, ""))
        url = self.cli_url or runtime.config.settings.notify.ping_url
        self.pinger = Pinger(url, secrets=self.secrets) if url else None

    def start(self, cancel: threading.Event) -> None:
        if self.pinger is not None:
            self._warn(self.pinger.start(abort=cancel))

    def finish(
        self,
        code: int,
        *,
        lines: list[str] | None = None,
        cancel: threading.Event,
        again: threading.Event,
        signalled: bool,
    ) -> None:
        if self.pinger is None:
            return
        body = [f"syncflow {self.command}: exit {code}", *self.lines]
        if lines:
            body.append(f"error: {lines[0]}")
        if signalled:
            # Stopping: one short try, so that SIGTERM still ends the process at once; a second signal ends it.
            problem = self.pinger.finish(code, "\n".join(body) + "\n", abort=again, timeout=2.0, attempts=1)
        else:
            problem = self.pinger.finish(code, "\n".join(body) + "\n", abort=cancel)
        self._warn(problem)

    @staticmethod
    def _warn(problem: str | None) -> None:
        if problem:
            log.warning(problem, extra={"event": "ping_failed"})

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


def _sync_invocation(
    ctx: typer.Context,
    refs: list[str] | None,
    *,
    cancel: threading.Event,
    received: list[int],
    report: _PingReport,
    full_refresh: bool,
    as_json: bool,
    all_: bool,
    force: bool,
    connector: str | None,
    workers: int | None,
    wait: bool,
    wait_timeout: float | None,
    max_delete_fraction: float | None,
    metrics_file: Path | None,
    pushgateway: str | None,
    backfill_from: str | None,
) -> None:
    refs = list(refs or [])
    if refs and all_:
        raise UsageError("give entity references or --all, not both")
    if not refs and not all_:
        raise UsageError("name the entities to sync (CONNECTOR.SLUG ...) or give --all")
    if (force or connector) and not all_:
        raise UsageError("--force and --connector go with --all")
    state = _state(ctx)
    runtime = state.runtime()
    report.configure(runtime)
    report.start(cancel)
    try:
        outcomes = _sync_pass(
            runtime,
            state,
            refs,
            cancel,
            full_refresh,
            as_json,
            all_,
            force,
            connector,
            workers,
            wait or wait_timeout is not None,
            wait_timeout,
            max_delete_fraction,
            backfill_from,
            report=report,
        )
    except (psycopg.errors.QueryCanceled, SyncFlowError):
        if not received:
            raise
        outcomes = None  # the signal cancelled a wait on SyncFlow's tables before any run began
    results = [o.result for o in (outcomes or []) if o.result is not None]
    _publish_metrics(runtime, results, metrics_file, pushgateway)
    if received:
        raise typer.Exit(EXIT_SIGTERM if received[0] == signal.SIGTERM else EXIT_SIGINT)
    if any(r.status != "success" or r.after_sync_failed for r in results) or any(
        o.error and not o.busy for o in outcomes or []
    ):
        raise typer.Exit(EXIT_FAILED)
    if any(o.busy for o in outcomes or []):
        raise typer.Exit(EXIT_CLAIMED)  # a lock held on SyncFlow's tables: nothing failed, try again later
    if not all_ and any(o.held_elsewhere for o in outcomes or []):
        raise typer.Exit(EXIT_CLAIMED)


def _sync_pass(
    runtime: Runtime,
    state: State,
    refs: list[str],
    cancel: threading.Event,
    full_refresh: bool,
    as_json: bool,
    all_: bool,
    force: bool,
    connector: str | None,
    workers: int | None,
    wait: bool,
    wait_timeout: float | None,
    max_delete_fraction: float | None,
    backfill_from: str | None = None,
    *,
    report: _PingReport | None = None,
) -> list[Outcome] | None:
    """Select the entities and sync them; None when nothing is due or a signal came first."""
    with runtime.metadata() as meta, inflight.watching(meta, cancel):
        if all_:
            if connector is not None:
                runtime.config.connector(connector)
            claims.sweep_abandoned(meta, runtime.schema)
            entities = due_entities(runtime, meta, force=force, connector=connector)
        else:
            entities = [store.get_entity(meta, runtime.schema, ref) for ref in dict.fromkeys(refs)]
            for entity in entities:
                runtime.config.connector(entity.connector)  # naming an entity whose connector is gone: usage
                if backfill_from is not None:
                    check_backfill(entity)
    # A connector's token or CA bundle is checked per entity by the runner: one broken connector
    # fails its own entities (recorded as failed runs), the others still sync.
    if cancel.is_set():
        return None
    if not entities:
        log.info("nothing is due", extra={"event": "nothing_due"})
        if report is not None:
            report.lines.append("nothing was due")
        return None
    with _Board(err.is_terminal and state.log_format == "text") as board:
        return run_entities(
            runtime,
            entities,
            full_refresh=full_refresh,
            workers=workers or runtime.config.settings.sync.workers,
            wait=wait,
            wait_timeout=wait_timeout,
            explicit=not all_,
            max_delete_fraction=max_delete_fraction,
            backfill_from=backfill_from,
            cancel=cancel,
            progress=board.for_entity,
            on_outcome=lambda o: _report(o, as_json, report),
            on_after_sync=lambda h: _report_after_sync(h, as_json, report),
        )


def _publish_metrics(runtime: Runtime, results: list[RunResult], textfile: Path | None, gateway: str | None) -> None:
    """Write/push the pass's metrics; a failure is a warning and never changes the exit code."""
    if textfile is None and not gateway:
        return
    problems: list[str] = []
    entities: dict[str, store.Entity] = {}
    try:
        with runtime.metadata(read_only=True) as meta:
            entities = {e.ref: e for e in store.list_entities(meta, runtime.schema)}
    except (SyncFlowError, psycopg.Error) as exc:
        problems.append(f"metrics: cannot read the entities' state: {exc}")
    problems += metrics.publish(metrics.build_registry(results, entities), textfile=textfile, pushgateway=gateway)
    for problem in problems:
        log.warning(problem, extra={"event": "metrics_failed"})


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
JsonRunsOpt = Annotated[bool, typer.Option("--json", help="Print one JSON summary per run on stdout.")]
DeleteFractionOpt = Annotated[
    float | None,
    typer.Option(
        "--max-delete-fraction",
        min=0.0,
        max=1.0,
        help="Allow a full sync to soft-delete up to this share of the table (default: from the config).",
    ),
]


@app.command("sync", epilog=SYNC_EXIT_HELP)
@guarded
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
    """Sync entities with their delta strategy (full, rowversion or hash)."""
    if where_key:
        raise UsageError(
            "--where-key: the APISmith protocol has no key filter (GET /api/v1/data/{slug} takes only page,"
            " page_size and rowversion_gt), so single records cannot be fetched by key; use --from-rowversion"
            " with a version at or below the record's, or full-refresh"
        )
    if from_rowversion is not None:
        if all_:
            raise UsageError("--from-rowversion backfills named entities; it cannot go with --all")
        if not from_rowversion.strip():
            raise UsageError("--from-rowversion needs a row version, e.g. --from-rowversion 20251208120000")
    _run_syncs(
        ctx,
        refs,
        full_refresh=False,
        as_json=as_json,
        all_=all_,
        force=force,
        connector=connector,
        workers=workers,
        wait=wait,
        wait_timeout=wait_timeout,
        max_delete_fraction=max_delete_fraction,
        metrics_file=metrics_file,
        pushgateway=pushgateway,
        backfill_from=from_rowversion,
        ping_url=ping_url,
    )


@app.command("full-refresh", epilog=SYNC_EXIT_HELP)
@guarded
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
    """Fetch everything ignoring the checkpoint, reconcile deletes, then reset the checkpoint."""
    _run_syncs(
        ctx,
        refs,
        full_refresh=True,
        as_json=as_json,
        workers=workers,
        wait=wait,
        wait_timeout=wait_timeout,
        max_delete_fraction=max_delete_fraction,
        metrics_file=metrics_file,
        pushgateway=pushgateway,
        ping_url=ping_url,
    )


@app.command("status")
@guarded
def status(
    ctx: typer.Context,
    connector: Annotated[str | None, typer.Option("--connector", help="Only this connector.")] = None,
    stale_factor: Annotated[
        float | None,
        typer.Option("--stale-factor", min=0.01, help="Stale after this many intervals (default: from the config)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Health of every entity (read-only; a health check).

    Exit 1 when one failed 3 times in a row, is stale, needs attention, the delete guard held back
    deletes in its last run, or its last run's after_sync_sql failed; 75 when another session holds a
    lock on a SyncFlow table.
    """
    runtime = _state(ctx).runtime()
    if connector is not None:
        runtime.config.connector(connector)  # a typo must not pass a health check
    with runtime.metadata(read_only=True) as conn:
        rows = entity_health(
            runtime, conn, connector=connector, stale_factor=stale_factor or runtime.config.settings.sync.stale_factor
        )
    if as_json:
        emit_json(rows)
    else:
        table = Table(title="SyncFlow status")
        for col in ("entity", "strategy", "last run", "result", "rows", "next due", "failures", "health"):
            table.add_column(col)
        for r in rows:
            colour = {"success": "green", "partial": "yellow", None: "dim"}.get(r["last_run_status"], "red")
            table.add_row(
                escape(r["entity"]),
                escape(r["strategy"]),
                (r["last_run_started_at"] or "never")[:19],
                f"[{colour}]{r['last_run_status'] or '-'}[/]",
                str(r["rows"] if r["rows"] is not None else "-"),
                (r["next_due_at"] or "disabled")[:19],
                str(r["consecutive_failures"]),
                "[green]ok[/]" if r["healthy"] else f"[red]{escape('; '.join(r['problems']))}[/]",
            )
        out.print(table)
    if any(not r["healthy"] for r in rows):
        raise typer.Exit(EXIT_FAILED)


@app.command("runs")
@guarded
def runs_command(
    ctx: typer.Context,
    args: Annotated[
        list[str] | None,
        typer.Argument(help="A CONNECTOR.SLUG to filter by, or 'show RUN_UID' for one run.", show_default=False),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many runs.")] = 20,
    status: Annotated[str | None, typer.Option("--status", help="Only runs with this status.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """Show the history of runs, newest first; 'runs show RUN_UID' shows one with its rejects."""
    args = list(args or [])
    if status is not None and status not in runs_mod.STATUSES:
        raise UsageError(f"--status must be one of {', '.join(runs_mod.STATUSES)}")
    runtime = _state(ctx).runtime(require_file=False)
    with runtime.metadata(read_only=True) as conn:
        if args and args[0] == "show":
            if len(args) != 2:
                raise UsageError("usage: syncflow runs show RUN_UID")
            run = runs_mod.get_run(conn, runtime.schema, args[1])
            if run is None:
                raise UsageError(f"no run {args[1]!r}")
            _show_run(run, as_json)
            return
        if len(args) > 1:
            raise UsageError("give at most one CONNECTOR.SLUG")
        if args:
            store.get_entity(conn, runtime.schema, args[0])
        rows = runs_mod.list_runs(conn, runtime.schema, ref=args[0] if args else None, status=status, limit=limit)
    if as_json:
        emit_json(rows)
        return
    table = Table(title="Sync runs", caption="'syncflow runs show RUN' shows one run (a prefix of its id will do)")
    for col in (
        "started",
        "entity",
        "kind",
        "status",
        "fetched",
        "ins",
        "upd",
        "unch",
        "del",
        "rej",
        "seconds",
        "run",
    ):
        table.add_column(col, overflow="fold")
    for r in rows:
        colour = {"success": "green", "partial": "yellow", "running": "cyan"}.get(r["status"], "red")
        table.add_row(
            (r["started_at"] or "")[:19],
            escape(r["entity"]),
            r["kind"],
            f"[{colour}]{r['status']}[/]",
            str(r["records_fetched"]),
            str(r["records_inserted"]),
            str(r["records_updated"]),
            str(r["records_unchanged"]),
            str(r["records_deleted"]),
            str(r["records_rejected"]),
            f"{r['duration_seconds']:.1f}" if r["duration_seconds"] is not None else "-",
            r["uid"][:8],
        )
    out.print(table)


def _show_run(run: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(run)
        return
    for key, value in run.items():
        if key in ("rejects", "error_details"):
            continue
        out.print(f"[bold]{key}[/]: {escape(str(value))}")
    if run["error_details"]:
        out.print(f"[bold]error_details[/]: {escape(json.dumps(run['error_details'], default=str))}")
    if run["rejects"]:
        table = Table(title=f"Rejected rows ({len(run['rejects'])})")
        for col in ("business key", "column", "value", "reason"):
            table.add_column(col, overflow="fold")
        for rej in run["rejects"]:
            table.add_row(
                escape(json.dumps(rej["business_key"])),
                escape(rej["column"] or "-"),
                escape(str(rej["value"])),
                escape(rej["reason"]),
            )
        out.print(table)


@app.command("history")
@guarded
def history_command(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="CONNECTOR.SLUG")],
    keys: Annotated[
        list[str],
        typer.Option("--key", help="COLUMN=VALUE of the business key (PostgreSQL column name); repeat per column."),
    ],
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="ISO 8601 time (UTC when no offset is given): the version valid then."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array of versions.")] = False,
) -> None:
    """A record's versions, oldest first (the entity needs history turned on)."""
    when = None
    if as_of is not None:
        try:
            when = datetime.fromisoformat(as_of.replace("Z", "+00:00"))
        except ValueError:
            raise UsageError(f"--as-of {as_of!r} is not an ISO 8601 time, e.g. 2026-11-26T09:30:00+00:00") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
    runtime = _state(ctx).runtime(require_file=False)
    with runtime.metadata(read_only=True) as conn:
        entity = store.get_entity(conn, runtime.schema, ref)
        given: dict[str, str] = {}
        for item in keys:
            column, eq, value = item.partition("=")
            if not eq:
                raise UsageError(f"--key {item!r}: use COLUMN=VALUE")
            given[column] = value
        if set(given) != set(entity.business_keys):
            raise UsageError(f"{ref}: give --key for exactly the business key: {', '.join(entity.business_keys)}")
        found = history.versions(conn, entity, given, as_of=when)
    if as_json:
        emit_json(found)
        return
    if not found:
        if not effective_settings(runtime, entity)["history"]:
            err.print(
                f"[bold red]error:[/] {escape(ref)}: history is off, so no versions are recorded; turn it on with"
                f" 'syncflow entity set {escape(ref)} --history' (or history = true in the file)"
            )
            raise typer.Exit(EXIT_FAILED)
        err.print(f"{escape(ref)}: no recorded versions for that key" + (" at that time" if when else ""))
        return
    table = Table(title=escape(f"History of {ref} " + ", ".join(f"{k}={v}" for k, v in given.items())))
    for col in ("operation", "valid from", "valid to", "row version", "run", "data"):
        table.add_column(col, overflow="fold")
    for v in found:
        table.add_row(
            v["operation"],
            v["valid_from"][:26],
            (v["valid_to"] or "current")[:26],
            str(v["row_version"]),
            (v["run_uid"] or "-")[:8],
            escape(json.dumps(v["data"], default=str, ensure_ascii=False)),
        )
    out.print(table)


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["app", "main"]
