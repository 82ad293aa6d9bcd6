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
without them (issue 16: every cron invocation pays its imports).
"""

from __future__ import annotations

import importlib
import sys

TYPE_CHECKING = False  # not typing's: see syncflow/__init__.py
if TYPE_CHECKING:
    from typing import Any

    import typer

    from syncflow.cli.app import app

# In the order --help lists them.
COMMAND_MODULES = ("discover", "entities", "sync", "runs", "connectors", "database", "doctor")


def _load() -> typer.Typer:
    """The typer application with every command registered on it."""
    from syncflow.cli.app import app

    for name in COMMAND_MODULES:
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
    option prints; any other command line (``--version`` among other options included) goes to typer.
    """
    if sys.argv[1:] == ["--version"]:
        from syncflow import __version__

        sys.stdout.write(f"syncflow {__version__}\n")
        return
    _load()()


__all__ = ["app", "main"]
