"""The ``syncflow`` command line: parse, call the core, render, map errors to exit codes.

Exit codes: 0 success; 1 a run or request failed; 2 usage, configuration or
database unreachable; 75 try again later (a claim or lock held elsewhere);
130/143 signals. Logs and errors go to stderr; stdout carries tables or, with
``--json``, JSON only. Reporting commands (status, entities, entity show,
runs, history, connector list/show, db status) open a read-only connection.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.table import Table
from rich.text import Text
from typer.core import TyperArgument, TyperGroup, TyperOption

from syncflow import __version__, logs
from syncflow.aftersync import HookOutcome
from syncflow.api import (
    WHERE_KEY_UNSUPPORTED,
    SyncFlow,
    SyncRequest,
    add_connector,
    exit_status,
    remove_connector,
    run_sync,
)
from syncflow.config import EnvFile, load_env_file
from syncflow.discovery import DiscoveryReport
from syncflow.errors import (
    EXIT_FAILED,
    UsageError,
)
from syncflow.runner import Outcome
from syncflow.runtime import Runtime
from syncflow.sync import Progress as SyncProgress

# Piped output (cron logs, CI) gets wide tables instead of rich's 80-column default.
_WIDTH = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 160
out = Console(highlight=False, width=_WIDTH)
err = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_CODES_HELP = (
    "Exit codes: 0 success; 1 a run or request failed, status found an unhealthy entity, doctor a failing check, "
    "or entity set a change the file overrides; 2 usage, "
    "configuration (no configuration file included) or database unreachable; 75 try again later: an entity "
    "named explicitly is being synced by another process, or another session holds a lock SyncFlow needs "
    "beyond lock_timeout_seconds; 130/143 stopped by SIGINT/SIGTERM."
)

# Global options, and whether each takes a value: accepted after the command too (moved before it).
GLOBAL_OPTIONS = {
    "--config": True,
    "-c": True,
    "--database-url": True,
    "--log-format": True,
    "--log-level": True,
    "--tz": True,
    "--quiet": False,
    "-q": False,
    "--no-color": False,
}
_TYPE_WORDS = {"str": "TEXT", "int": "INTEGER", "float": "NUMBER", "path": "PATH", "int range": "INTEGER"}
_TYPE_WORDS["float range"] = "NUMBER"


def _tidy(cmd: Any) -> Any:
    """Help without Python types: no ``<bool>`` after flags, ``TEXT`` instead of ``<str>``."""
    if cmd is None or getattr(cmd, "_tidy", False):
        return cmd
    cmd._tidy = True
    make_help = cmd.get_help_option

    def help_option(ctx: Any) -> Any:
        option = make_help(ctx)
        if option is not None:
            option.display_type_rich = lambda ctx: None
        return option

    cmd.get_help_option = help_option
    for param in getattr(cmd, "params", []):
        if isinstance(param, TyperArgument) or (isinstance(param, TyperOption) and param.is_flag):
            param.display_type_rich = lambda ctx: None  # type: ignore[method-assign]
        elif isinstance(param, TyperOption) and param.metavar is None:
            shown = param.display_type_rich

            def word(ctx: Any, shown: Callable[[Any], str | None] = shown) -> str | None:
                label = shown(ctx) or ""
                return _TYPE_WORDS.get(label.strip("<>"), label.strip("<>"))

            param.display_type_rich = word  # type: ignore[method-assign]
    return cmd


def hoist_global_options(args: list[str]) -> list[str]:
    """``syncflow runs --config F`` as ``syncflow --config F runs``: global options after the command move
    before it (not after ``--``)."""
    head: list[str] = []
    i = 0
    while i < len(args) and args[i].startswith("-"):  # global options already before the command
        name = args[i].split("=", 1)[0]
        takes = GLOBAL_OPTIONS.get(name, False) and "=" not in args[i]
        head += args[i : i + 1 + takes]
        i += 1 + takes
    rest = args[i:]
    if not rest:
        return args
    moved: list[str] = []
    tail: list[str] = []
    j = 0
    while j < len(rest):
        arg = rest[j]
        if arg == "--":
            tail += rest[j:]
            break
        name = arg.split("=", 1)[0]
        if j > 0 and name in GLOBAL_OPTIONS:
            takes = GLOBAL_OPTIONS[name] and "=" not in arg
            moved += rest[j : j + 1 + takes]
            j += 1 + takes
            continue
        tail.append(arg)
        j += 1
    return head + moved + tail


class _Group(TyperGroup):
    """Typer's group, with tidy help for every command and global options accepted anywhere."""

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        return _tidy(super().get_command(ctx, cmd_name))

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        _tidy(self)
        if ctx.parent is None:
            args = hoist_global_options(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: Any) -> Any:
        """The one error boundary (on the root group, around every command): SyncFlow's errors become
        messages on stderr and exit codes; anything else is a bug and keeps its traceback."""
        if ctx.parent is not None:
            return super().invoke(ctx)
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except BaseException as exc:
            status = exit_status(exc)
            if status is None:
                raise
            event = "interrupted" if isinstance(exc, KeyboardInterrupt) else "error"
            for line in status[1]:
                log.error(line, extra={"event": event, "error": type(exc).__name__})
            raise typer.Exit(status[0]) from None


class _RunsGroup(_Group):
    """``runs [list] ...`` lists (the default); ``runs show RUN_ID`` shows one run."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("-h", "--help")):
            args = ["list", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_Group,
    name="syncflow",
    help="Keep PostgreSQL in sync with APISmith REST APIs. One pass per invocation, made for cron.\n\n"
    + EXIT_CODES_HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
connector_app = typer.Typer(cls=_Group, help="Manage APISmith connectors in syncflow.toml.", no_args_is_help=True)
db_app = typer.Typer(cls=_Group, help="Inspect and upgrade SyncFlow's metadata schema.", no_args_is_help=True)
entity_app = typer.Typer(cls=_Group, help="Show and change one entity's sync settings.", no_args_is_help=True)
runs_app = typer.Typer(
    cls=_RunsGroup,
    help="Run history: 'syncflow runs \\[list] [CONNECTOR.SLUG]' lists runs, newest first (the default); "
    "'syncflow runs show RUN_ID' shows one run with its rejected rows.",
)
app.add_typer(connector_app, name="connector")
app.add_typer(db_app, name="db")
app.add_typer(entity_app, name="entity")
app.add_typer(runs_app, name="runs")


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
    env_file: EnvFile | None = None
    quiet: bool = False
    # The zone every time is shown in; None: the machine's local zone (--tz local).
    tz: tzinfo | None = UTC

    def open(self, *, require_file: bool = True) -> SyncFlow:
        """The core, configured from the global options."""
        return SyncFlow(self.runtime(require_file=require_file))

    def runtime(self, *, require_file: bool = True) -> Runtime:
        """The configuration; commands that only read the database can do without the file."""
        return Runtime.load(config_path=self.config_path, database_url=self.database_url, require_file=require_file)


def _state(ctx: typer.Context) -> State:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, State) else State()


def parse_zone(name: str) -> tzinfo | None:
    """``utc``, ``local`` (None: the machine's zone) or an IANA name such as Europe/Paris."""
    if name.strip().lower() in ("utc", "z", ""):
        return UTC
    if name.strip().lower() == "local":
        time.tzset()  # $TZ as it is now
        return None
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(
            f"--tz {name!r}: not a time zone; give utc, local or an IANA name such as Europe/Paris"
        ) from None


def as_zone(value: datetime | str | None, zone: tzinfo | None) -> datetime | None:
    """A time from the database (a datetime or its ISO text, any session zone) in the chosen zone."""
    if value is None:
        return None
    when = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(zone)


def show_time(value: datetime | str | None, zone: tzinfo | None, *, precise: bool = False) -> str | None:
    """One format everywhere: ISO 8601 with the offset, to the second (``precise``: as stored)."""
    when = as_zone(value, zone)
    if when is None:
        return None
    return when.isoformat() if precise else when.isoformat(timespec="seconds")


def zoned(data: dict[str, Any], zone: tzinfo | None, *keys: str) -> dict[str, Any]:
    """``data`` with the times under ``keys`` in the chosen zone, at full precision (for --json)."""
    return {**data, **{k: show_time(data.get(k), zone, precise=True) for k in keys if k in data}}


def note(*objects: Any) -> None:
    """An informational message on stderr; --quiet drops it (warnings and errors always show)."""
    if not _QUIET.is_set():
        err.print(*objects)


_QUIET = threading.Event()


@dataclass(frozen=True)
class Col:
    """A table column: ``drop`` 0 is never dropped nor cut (names, statuses, times); higher ones are
    dropped first when the console is narrow; ``wrap`` columns may fold onto several lines instead."""

    header: str
    drop: int = 0
    wrap: bool = False


def fit_table(title: str, cols: list[Col], rows: list[list[str]], *, caption: str | None = None) -> Table:
    """A table that fits the console: it drops the least important columns, then folds the wrappable
    ones; the others (entity names, statuses, times) are never truncated."""

    def natural(i: int) -> int:
        cells = [cols[i].header, *(r[i] for r in rows)]
        return max(Text.from_markup(line).cell_len for c in cells for line in (c.split("\n") or [""]))

    def least(i: int) -> int:
        return min(natural(i), 12) if cols[i].wrap else natural(i)

    keep = list(range(len(cols)))
    width = out.width
    while sum(least(i) + 3 for i in keep) + 1 > width:
        droppable = [i for i in keep if cols[i].drop > 0]
        if not droppable:
            break
        keep.remove(max(droppable, key=lambda i: (cols[i].drop, i)))
    table = Table(title=title, caption=caption if width >= 60 else None)
    for i in keep:
        c = cols[i]
        if c.wrap:
            table.add_column(c.header, overflow="fold", min_width=least(i))
        else:
            table.add_column(c.header, no_wrap=True, min_width=natural(i))
    for r in rows:
        table.add_row(*(r[i] for i in keep))
    return table


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
    env_file: Annotated[
        Path | None,
        typer.Option(
            "--env-file",
            help="Read KEY=VALUE lines (dotenv syntax, 'export' optional) into the environment before anything "
            "else; variables already set win. Default: $SYNCFLOW_ENV_FILE. A missing file is an error (exit 2).",
            show_default=False,
        ),
    ] = None,
    log_format: Annotated[
        LogFormat, typer.Option("--log-format", help="Logs on stderr: readable text or one JSON object per line.")
    ] = LogFormat.text,
    log_level: Annotated[LogLevel, typer.Option("--log-level", help="Least severe log level shown.")] = LogLevel.info,
    tz: Annotated[
        str,
        typer.Option(
            "--tz",
            envvar="SYNCFLOW_TZ",
            metavar="ZONE",
            help="Zone of the times shown and of an --as-of without offset: utc, local or an IANA name "
            "(Europe/Paris). Times always carry their offset.",
        ),
    ] = "utc",
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet",
            "-q",
            help="Only warnings, errors and each run's summary line on stderr: no progress, no other messages.",
        ),
    ] = False,
    no_color: Annotated[
        bool, typer.Option("--no-color", help="No colours or styles (also when $NO_COLOR is set).")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit."),
    ] = False,
) -> None:
    """Global options go before or after the command: syncflow --config F sync --all."""
    try:
        zone = parse_zone(tz)
    except UsageError as exc:
        logs.setup(log_format.value, log_level.value, timestamps=not sys.stderr.isatty())
        log.error(str(exc), extra={"event": "error", "error": "UsageError"})
        raise typer.Exit(exc.exit_code) from None
    logs.setup(
        log_format.value, log_level.value, timestamps=not sys.stderr.isatty(), tz=zone or _local_zone(), quiet=quiet
    )
    columns = os.environ.get("COLUMNS", "")
    # A pipe (cron logs, CI) gets wide tables instead of rich's 80-column default; $COLUMNS wins.
    if columns.isdigit():
        out.width = int(columns)
    elif sys.stdout.isatty():
        out._width = None  # the terminal's own width
    else:
        out.width = 160
    if quiet:
        _QUIET.set()
    else:
        _QUIET.clear()
    for console in (out, err):
        if no_color or os.environ.get("NO_COLOR"):
            console.no_color = True
            console._color_system = None  # no styles either
    loaded = load_env_file(env_file, os.environ)
    ctx.obj = State(
        config_path=config,
        database_url=database_url,
        log_format=log_format.value,
        tz=zone,
        quiet=quiet,
        env_file=loaded,
    )


def _local_zone() -> tzinfo:
    return datetime.now().astimezone().tzinfo or UTC


# -- connectors -----------------------------------------------------------------------------


@connector_app.command(
    "add",
    epilog="Example: syncflow connector add erp --url https://apismith.example:8007 --token-env ERP_APISMITH_TOKEN",
)
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
    path = add_connector(
        _state(ctx).config_path,
        name,
        url=url,
        token_env=token_env,
        target_schema=target_schema,
        ca_bundle=ca_bundle,
        verify_tls=not no_verify_tls,
    )
    note(f"added connector [bold]{escape(name)}[/] to {escape(str(path))}")
    if no_verify_tls:
        err.print("[yellow]warning:[/] TLS verification is off for this connector")


@connector_app.command("remove", epilog="Example: syncflow connector remove erp")
def connector_remove(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Connector to remove.")]) -> None:
    """Remove a connector from the file; its tables and history stay in PostgreSQL."""
    path = remove_connector(_state(ctx).config_path, name)
    note(
        f"removed connector [bold]{escape(name)}[/] from {escape(str(path))}; it becomes inactive "
        "in the database on the next run, and its tables and history are kept"
    )


@connector_app.command("list", epilog="Example: syncflow connector list --json")
def connector_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the connectors in the configuration file."""
    sf = _state(ctx).open()
    rows = [c.to_json() for c in sf.connectors()]
    if as_json:
        emit_json(rows)
        return
    if not rows:
        note(f"no connectors in {escape(str(sf.config_path))}; add one with 'syncflow connector add'")
        return
    cols = [Col("name"), Col("base URL", wrap=True), Col("token", 2, wrap=True), Col("target schema", 3), Col("TLS", 1)]
    cells = []
    for r in rows:
        token = "-" if not r["token_env"] else f"${r['token_env']} ({'set' if r['token_set'] else 'NOT SET'})"
        cells.append(
            [
                *(escape(str(v)) for v in (r["name"], r["base_url"], token, r["target_schema"])),
                escape(str(r["verify_tls"]).lower()),
            ]
        )
    table = fit_table("Connectors", cols, cells)
    out.print(table)


@connector_app.command("show", epilog="Example: syncflow connector show erp")
def connector_show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Connector name.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show one connector's settings and per-entity overrides."""
    data = _state(ctx).open().connector(name).to_json()
    if as_json:
        emit_json(data)
        return
    for key in ("name", "base_url", "token_env", "token_set", "target_schema", "verify_tls"):
        out.print(f"[bold]{key}[/]: {escape(plain(data[key]))}")
    if data["after_sync_sql"] is not None:
        out.print(f"[bold]after_sync_sql[/] ({data['after_sync_when']}): {escape(data['after_sync_sql'])}")
    for slug, o in data["entities"].items():
        out.print(f"[bold]entities.{escape(slug)}[/]: {escape(json.dumps(o))}")


@connector_app.command("test", epilog="Example: syncflow connector test erp")
def connector_test(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Connector name.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Check reachability, TLS, the token and the API count. Exit 1 when it fails."""
    result = _state(ctx).open().test_connector(name).to_json()
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


@db_app.command("upgrade", epilog="Example: syncflow db upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Apply pending metadata migrations (sync, discover and entity set also do this themselves)."""
    sf = _state(ctx).open(require_file=False)
    applied = sf.upgrade()
    for name in applied:
        note(f"applied {name}")
    if not applied:
        note(f"schema {sf.runtime.schema!r} is up to date")


@db_app.command("status", epilog="Example: syncflow db status --json")
def db_status(ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Show which metadata migrations are applied (read-only)."""
    state = _state(ctx)
    status = state.open(require_file=False).migrations()
    rows: list[dict[str, Any]] = [
        {"version": m.version, "name": m.name, "applied_at": show_time(m.applied_at, state.tz, precise=True)}
        for m in status.migrations
    ]
    if as_json:
        emit_json({"schema": status.schema, "database": status.database, "migrations": rows})
        return
    table = Table(title=f"Migrations in schema {escape(status.schema)}")
    table.add_column("version")
    table.add_column("name")
    table.add_column("applied at")
    for r in rows:
        table.add_row(
            f"{r['version']:04d}",
            escape(r["name"]),
            show_time(r["applied_at"], state.tz) or "[yellow]pending[/]",
        )
    out.print(table)


# -- discovery ------------------------------------------------------------------------------


def _render_report(report: DiscoveryReport) -> None:
    verb = "would" if report.dry_run else "did"
    cols = [
        Col("entity"),
        Col("table", 2, wrap=True),
        Col("strategy", 3),
        Col("keys", 4, wrap=True),
        Col("action"),
        Col("changes", wrap=True),
    ]
    cells: list[list[str]] = []
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
        cells.append(
            [
                escape(p.ref),
                escape(f"{p.target_schema}.{p.target_table}"),
                escape(p.delta_strategy),
                escape(", ".join(p.business_keys)),
                action,
                "\n".join(changes) or "-",
            ]
        )
    title = f"Discovery of {escape(report.connector)}" + (" (dry run)" if report.dry_run else "")
    table = fit_table(title, cols, cells)
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
        note(f"{escape(report.connector)}: APISmith offers no APIs ({verb} nothing)")


@app.command("discover", epilog="Example: syncflow discover erp --dry-run")
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
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print a JSON array, one object per connector (a connector that failed: with its error)."
        ),
    ] = False,
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
    sf = _state(ctx).open()
    result = sf.discover(
        *(connectors or []), dry_run=dry_run, rebuild=rebuild or (), wait=wait, wait_timeout=wait_timeout
    )
    for failure in result.failures:
        log.error(failure.error, extra={"event": "error", "connector": failure.connector, "error": "SourceError"})
    for report in result.reports:
        if not as_json:
            _render_report(report)
        for problem in report.rejected:
            err.print(f"[bold red]error:[/] {escape(report.connector)}: {escape(problem)}")
        for refusal in report.refused:
            err.print(f"[yellow]refused:[/] {escape(refusal)}")
    if as_json:
        emit_json(result.to_json())  # failed connectors included, with their error
    if result.exit_code:
        raise typer.Exit(result.exit_code)


# -- entities -------------------------------------------------------------------------------


@app.command("entities", epilog="Example: syncflow entities --connector erp")
def entities(
    ctx: typer.Context,
    connector: Annotated[str | None, typer.Option("--connector", help="Only this connector.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List discovered entities with strategy, keys, interval and last sync."""
    state = _state(ctx)
    rows = [zoned(e.to_json(), state.tz, "last_sync_at") for e in state.open().entities(connector=connector)]
    if as_json:
        emit_json(rows)
        return
    cols = [
        Col("entity"),
        Col("table", 3, wrap=True),
        Col("strategy", 4),
        Col("keys", 5, wrap=True),
        Col("interval", 6),
        Col("enabled", 7),
        Col("last sync", 2),
        Col("status"),
    ]
    cells = []
    for r in rows:
        status = r["last_sync_status"] or "never"
        if r["needs_attention"]:
            status = "[red]needs attention[/]"
        elif not r["syncable"]:
            status = "[yellow]not syncable[/]"
        elif r["missing_at_source"]:
            status = "[yellow]missing at source[/]"
        mark = " (file)"
        cells.append(
            [
                escape(r["entity"]),
                escape(r["table"]),
                escape(r["delta_strategy"]),
                escape(", ".join(r["business_keys"])),
                f"{r['interval_seconds']}s" + (mark if "interval_seconds" in r["overridden_by_file"] else ""),
                ("yes" if r["enabled"] else "no") + (mark if "enabled" in r["overridden_by_file"] else ""),
                show_time(r["last_sync_at"], state.tz) or "-",
                status,
            ]
        )
    table = fit_table("Entities", cols, cells)
    out.print(table)


@entity_app.command("show", epilog="Example: syncflow entity show erp.items")
def entity_show(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="CONNECTOR.SLUG")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show an entity's columns: source type, PostgreSQL type and name mapping."""
    state = _state(ctx)
    data = zoned(state.open().entity(ref).to_json(), state.tz, "last_sync_at")
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
        note = " (from syncflow.toml)" if key in data["overridden_by_file"] else ""
        out.print(f"[bold]{key}[/]: {escape(plain(data[key]))}{note}")
    for key in ("needs_attention", "unsyncable_reason"):
        if data[key]:
            out.print(f"[bold red]{key}[/]: {escape(plain(data[key]))}")
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


@entity_app.command("set", epilog="Example: syncflow entity set erp.items --interval 60 --history")
def entity_set(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="CONNECTOR.SLUG")],
    interval: Annotated[int | None, typer.Option("--interval", min=1, help="Seconds between syncs.")] = None,
    enable_on: Annotated[bool, typer.Option("--enable", help="Include in 'sync --all'.")] = False,
    enable_off: Annotated[bool, typer.Option("--disable", help="Leave out of 'sync --all'.")] = False,
    page_size: Annotated[int | None, typer.Option("--page-size", min=1, max=100_000, help="Rows per page.")] = None,
    history_on: Annotated[
        bool, typer.Option("--history", help="Keep every version of every record in <table>__history.")
    ] = False,
    history_off: Annotated[
        bool, typer.Option("--no-history", help="Stop recording versions (what was recorded is kept).")
    ] = False,
) -> None:
    """Change an entity's sync settings in the database.

    A setting that syncflow.toml sets for the entity ([connectors.C.entities.SLUG]) wins over the
    database: a change it overrides is stored but has no effect, and the command says so and exits 1.
    Exit 2 for contradicting options (--enable with --disable, --history with --no-history).
    """
    for on, off, names in (
        (enable_on, enable_off, "--enable and --disable"),
        (history_on, history_off, "--history and --no-history"),
    ):
        if on and off:
            raise UsageError(f"conflicting options: {names}; give one of them")
    settings = (
        _state(ctx)
        .open()
        .set_entity(
            ref,
            interval_seconds=interval,
            enabled=True if enable_on else False if enable_off else None,
            page_size=page_size,
            history_on=True if history_on else False if history_off else None,
        )
    )
    note(
        f"{escape(ref)}: interval {settings.interval_seconds}s, enabled {str(settings.enabled).lower()}, "
        f"page size {settings.page_size}, history {'on' if settings.history else 'off'}"
    )
    connector, _, slug = settings.entity.partition(".")
    for key, value in settings.ignored:
        err.print(
            f"[bold red]error:[/] {escape(ref)}: {key} = {escape(json.dumps(value))} in "
            f"{escape(settings.config_path)} \\[connectors.{escape(connector)}.entities."
            f"{escape(slug)}] wins over the database, so the change had no effect; remove it from the "
            "file to use the stored value"
        )
    if settings.ignored:
        raise typer.Exit(EXIT_FAILED)


# -- sync ---------------------------------------------------------------------------------


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
    """

    def __init__(self, *, live: bool, kind: str, quiet: bool, interval: float = 30.0) -> None:
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
        self.bar: Progress | None = None
        if live and not quiet:
            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(bar_width=24),
                TextColumn("{task.fields[rows]}"),
                TextColumn("{task.fields[tail]}"),
                console=err,
                transient=False,
            )

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
        if self.bar is not None and self.started:
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
    state = _state(ctx)
    display = _Display(
        live=err.is_terminal and state.log_format == "text",
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
    """Sync entities with their delta strategy (full, rowversion or hash)."""
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
    """Fetch everything ignoring the checkpoint, reconcile deletes, then reset the checkpoint."""
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


@app.command("status", epilog="Example: syncflow status --json")
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
    state = _state(ctx)
    health = state.open().status(connector=connector, stale_factor=stale_factor)
    rows = [zoned(h.to_json(), state.tz, "last_run_started_at", "last_success_at", "next_due_at") for h in health]
    if as_json:
        emit_json(rows)
    else:
        cols = [
            Col("entity"),
            Col("strategy", 5),
            Col("last run", 2),
            Col("result"),
            Col("rows", 3),
            Col("next due", 6),
            Col("failures", 4),
            Col("health", wrap=True),
        ]
        cells = []
        for r in rows:
            colour = {"success": "green", "partial": "yellow", None: "dim"}.get(r["last_run_status"], "red")
            cells.append(
                [
                    escape(r["entity"]),
                    escape(r["strategy"]),
                    show_time(r["last_run_started_at"], state.tz) or "never",
                    f"[{colour}]{r['last_run_status'] or '-'}[/]",
                    str(r["rows"] if r["rows"] is not None else "-"),
                    show_time(r["next_due_at"], state.tz) or "disabled",
                    str(r["consecutive_failures"]),
                    "[green]ok[/]" if r["healthy"] else f"[red]{escape('; '.join(r['problems']))}[/]",
                ]
            )
        table = fit_table("SyncFlow status", cols, cells)
        out.print(table)
    if any(not r["healthy"] for r in rows):
        raise typer.Exit(EXIT_FAILED)


class RunStatus(enum.StrEnum):
    running = "running"
    success = "success"
    partial = "partial"
    failed = "failed"
    abandoned = "abandoned"
    cancelled = "cancelled"


@runs_app.command(
    "list",
    epilog="Examples: syncflow runs --limit 5 · syncflow runs erp.items --status failed · syncflow runs list --json",
)
def runs_list(
    ctx: typer.Context,
    ref: Annotated[
        str | None, typer.Argument(metavar="[CONNECTOR.SLUG]", help="Only this entity's runs.", show_default=False)
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, metavar="N", help="At most this many runs.")] = 20,
    status: Annotated[RunStatus | None, typer.Option("--status", help="Only runs with this status.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """List runs, newest first (what 'syncflow runs' does)."""
    state = _state(ctx)
    records = state.open(require_file=False).runs(entity=ref, status=status.value if status else None, limit=limit)
    rows = [zoned(r.to_json(), state.tz, "started_at", "completed_at") for r in records]
    if as_json:
        emit_json(rows)
        return
    cols = [
        Col("started"),
        Col("entity"),
        Col("kind", 4),
        Col("status"),
        Col("fetched", 2),
        Col("ins", 5),
        Col("upd", 5),
        Col("unch", 7),
        Col("del", 6),
        Col("rej", 5),
        Col("seconds", 3),
        Col("run", 1),
    ]
    cells = []
    for r in rows:
        colour = {"success": "green", "partial": "yellow", "running": "cyan"}.get(r["status"], "red")
        cells.append(
            [
                show_time(r["started_at"], state.tz) or "-",
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
            ]
        )
    table = fit_table(
        "Sync runs", cols, cells, caption="'syncflow runs show RUN' shows one run (a prefix of its id will do)"
    )
    out.print(table)


@runs_app.command("show", epilog="Example: syncflow runs show 3f2a9c1e  (a prefix of the id will do)")
def runs_show(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="The run's id, or a prefix of it.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False,
) -> None:
    """Show one run with its rejected rows."""
    state = _state(ctx)
    run = state.open(require_file=False).run_record(run_id)
    _show_run(zoned(run.to_json(), state.tz, "started_at", "completed_at"), as_json)


def plain(value: Any) -> str:
    """A value as words for text output: never Python's None/True/False."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(plain(v) for v in value) or "-"
    if isinstance(value, dict):
        return json.dumps(value, default=str, ensure_ascii=False)
    return str(value)


def _show_run(run: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(run)
        return
    for key, value in run.items():
        if key in ("rejects", "error_details"):
            continue
        out.print(f"[bold]{key}[/]: {escape(plain(value))}")
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


@app.command(
    "history", epilog="Example: syncflow history erp.items --key item_number=ABC123 --as-of 2026-11-01T00:00:00Z"
)
def history_command(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="CONNECTOR.SLUG")],
    keys: Annotated[
        list[str],
        typer.Option("--key", help="COLUMN=VALUE of the business key (PostgreSQL column name); repeat per column."),
    ],
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="ISO 8601 time, the version valid then; without an offset it is in the --tz zone (UTC by default).",
        ),
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
        if when.tzinfo is None:  # in the zone times are shown in (--tz, $SYNCFLOW_TZ; UTC by default)
            zone = _state(ctx).tz
            when = when.replace(tzinfo=zone) if zone is not None else when.astimezone()
    given: dict[str, str] = {}
    for item in keys:
        column, eq, value = item.partition("=")
        if not eq:
            raise UsageError(f"--key {item!r}: use COLUMN=VALUE")
        given[column] = value
    record = _state(ctx).open(require_file=False).history(ref, key=given, as_of=when)
    found = [zoned(v.to_json(), _state(ctx).tz, "valid_from", "valid_to") for v in record.versions]
    if as_json:
        emit_json(found)
        return
    if not found:
        if not record.history_on:
            err.print(
                f"[bold red]error:[/] {escape(ref)}: history is off, so no versions are recorded; turn it on with"
                f" 'syncflow entity set {escape(ref)} --history' (or history = true in the file)"
            )
            raise typer.Exit(EXIT_FAILED)
        note(f"{escape(ref)}: no recorded versions for that key" + (" at that time" if when else ""))
        return
    table = Table(title=escape(f"History of {ref} " + ", ".join(f"{k}={v}" for k, v in given.items())))
    for col in ("operation", "valid from", "valid to", "row version", "run", "data"):
        table.add_column(col, overflow="fold")
    for v in found:
        table.add_row(
            v["operation"],
            v["valid_from"],
            v["valid_to"] or "current",
            str(v["row_version"]),
            (v["run_uid"] or "-")[:8],
            escape(json.dumps(v["data"], default=str, ensure_ascii=False)),
        )
    out.print(table)


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["app", "main"]


# Commands kept in their own modules register themselves on ``app`` when imported.
from syncflow import cli_doctor  # noqa: E402, F401
