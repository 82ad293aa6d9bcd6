"""The ``syncflow`` command line: parse, call one core function (:mod:`syncflow.api`), render, map errors to exit codes.

Exit codes: 0 success; 1 a run or request failed; 2 usage, configuration or
database unreachable; 75 try again later (a claim or lock held elsewhere);
130/143 signals. Logs and errors go to stderr; stdout carries tables or, with
``--json``, JSON only. Each command lives in the module named after it; they
register themselves on :data:`app` when imported (on first use of ``app``), in
the order ``--help`` lists them. The wiring (groups, global options, the one
error boundary) is in :mod:`syncflow.cli.app`; what every command prints with
is in :mod:`syncflow.cli.render`.

Importing this package is cheap: typer and the commands are loaded when
:data:`app` is first used, so that a lone ``syncflow --version`` answers
without them (issue 16: every cron invocation pays its imports). The console
script loads only the module of the command it is given (``sync --all`` from
cron builds two commands, not all eighteen); help, a typo or a command line it
cannot read for sure loads them all.
"""

from __future__ import annotations

import importlib
import os
import sys

TYPE_CHECKING = False  # not typing's: see syncflow/__init__.py
if TYPE_CHECKING:
    from typing import Any

    import typer

    from syncflow.cli.app import app

# Each command module with the commands (and groups) it registers, in the order --help lists them.
COMMANDS = {
    "discover": ("discover",),
    "entities": ("entities", "entity"),
    "sync": ("sync", "full-refresh"),
    "runs": ("status", "runs", "history"),
    "connectors": ("connector",),
    "database": ("db",),
    "doctor": ("doctor",),
}
COMMAND_MODULES = tuple(COMMANDS)
_HOME = {command: module for module, commands in COMMANDS.items() for command in commands}

# Global options (before or after the command: see app.hoist_global_options), and whether each takes a value.
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
# The root's options that may come before the command when only its module is loaded.
_BEFORE_COMMAND = {**GLOBAL_OPTIONS, "--env-file": True}


def command_module(args: list[str]) -> str | None:
    """The module of the command ``args`` name, or None when that is not certain (help, no command, a
    typo, an option this does not know before the command): then every command is loaded."""
    i = 0
    while i < len(args) and args[i].startswith("-"):
        name, eq, _ = args[i].partition("=")
        if name not in _BEFORE_COMMAND:
            return None
        i += 2 if _BEFORE_COMMAND[name] and not eq else 1
    return _HOME.get(args[i]) if i < len(args) else None


def _load(modules: tuple[str, ...] = COMMAND_MODULES) -> typer.Typer:
    """The typer application with the commands of ``modules`` registered on it (all of them by default)."""
    from syncflow.cli.app import app

    for name in modules:
        importlib.import_module(f"syncflow.cli.{name}")
    return app


def __getattr__(name: str) -> Any:
    if name != "app":
        raise AttributeError(f"module 'syncflow.cli' has no attribute {name!r}")
    value = _load()
    globals()["app"] = value
    return value


def main() -> None:
    """Console-script entry point.

    A lone ``--version`` is answered here, before typer is imported, with what the eager ``--version``
    option prints; any other command line (``--version`` among other options included) goes to typer,
    with only the named command's module loaded when it is certain which one that is.
    """
    if sys.argv[1:] == ["--version"]:
        from syncflow import __version__

        sys.stdout.write(f"syncflow {__version__}\n")
        return
    # pydantic looks for plugins among the entry points of every installed package when it builds its first
    # model (a third of what building the configuration's models costs); the command line has no use for
    # them, and typer turns them off for its own models too. A value already in the environment wins.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "1")
    # Shell completion (typer's $_SYNCFLOW_COMPLETE) needs every command.
    module = None if "_SYNCFLOW_COMPLETE" in os.environ else command_module(sys.argv[1:])
    _load((module,) if module is not None else COMMAND_MODULES)()


__all__ = ["app", "main"]
