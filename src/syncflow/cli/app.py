"""The ``syncflow`` application: its groups, global options, and the one error boundary."""

from __future__ import annotations

import enum
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperArgument, TyperGroup, TyperOption

from syncflow import __version__, logs
from syncflow.api import (
    SyncFlow,
    exit_status,
)
from syncflow.cli import GLOBAL_OPTIONS, render  # global options are accepted after the command too
from syncflow.cli.render import (
    QUIET,
    emit_json,
    log,
    parse_zone,
)
from syncflow.config import EnvFile, load_env_file
from syncflow.errors import (
    UsageError,
)
from syncflow.runtime import Runtime

EXIT_CODES_HELP = (
    "Exit codes: 0 success; 1 a run or request failed, status found an unhealthy entity, doctor a failing check, "
    "or entity set a change the file overrides; 2 usage, "
    "configuration (no configuration file included) or database unreachable; 75 try again later: an entity "
    "named explicitly is being synced by another process, or another session holds a lock SyncFlow needs "
    "beyond lock_timeout_seconds; 130/143 stopped by SIGINT/SIGTERM."
)

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
            option.display_type_rich = lambda ctx: None  # noqa: ARG005 - click's signature
        return option

    cmd.get_help_option = help_option
    for param in getattr(cmd, "params", []):
        if isinstance(param, TyperArgument) or (isinstance(param, TyperOption) and param.is_flag):
            param.display_type_rich = lambda ctx: None  # type: ignore[method-assign]  # noqa: ARG005
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
            ctx.meta["syncflow.json"] = "--json" in args
        return super().parse_args(ctx, args)

    def invoke(self, ctx: Any) -> Any:
        """The one error boundary (on the root group, around every command): SyncFlow's errors become
        messages on stderr and exit codes; anything else is a bug and keeps its traceback."""
        if ctx.parent is not None:
            return super().invoke(ctx)
        try:
            return super().invoke(ctx)
        except BaseException as exc:  # typer's Exit and usage errors map to None below and go on up
            status = exit_status(exc)
            if status is None:
                raise
            event = "interrupted" if isinstance(exc, KeyboardInterrupt) else "error"
            for line in status[1]:
                log.error(line, extra={"event": event, "error": type(exc).__name__})
            if ctx.meta.get("syncflow.json"):
                # A script reading --json gets one document on stdout whatever happened.
                emit_json({"error": "\n".join(status[1]), "error_type": type(exc).__name__, "exit_code": status[0]})
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


JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


class LogFormat(enum.StrEnum):
    text = "text"
    json = "json"


class LogLevel(enum.StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


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


def current_state(ctx: typer.Context) -> State:
    obj = ctx.find_root().obj
    return obj if isinstance(obj, State) else State()


def _version(value: bool) -> None:
    if value:
        render.out.print(f"syncflow {__version__}")
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
    version: Annotated[  # noqa: ARG001 - --version is eager: its callback acts, the value is unused
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit."),
    ] = False,
) -> None:
    """Global options go before or after the command: syncflow --config F sync --all."""
    try:
        zone = parse_zone(tz)
    except UsageError as exc:
        source = ctx.get_parameter_source("tz")
        if source is not None and source.name == "ENVIRONMENT":
            exc = UsageError(str(exc).replace("--tz", "$SYNCFLOW_TZ", 1))
        logs.setup(log_format.value, log_level.value, timestamps=not sys.stderr.isatty())
        log.error(str(exc), extra={"event": "error", "error": "UsageError"})
        raise typer.Exit(exc.exit_code) from None
    logs.setup(
        log_format.value, log_level.value, timestamps=not sys.stderr.isatty(), tz=zone or _local_zone(), quiet=quiet
    )
    render.style(no_color=no_color)
    if quiet:
        QUIET.set()
    else:
        QUIET.clear()
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
