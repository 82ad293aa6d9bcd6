"""The ``syncflow`` command line: parse, call one core function (:mod:`syncflow.api`), render, map errors to exit codes.

Exit codes: 0 success; 1 a run or request failed; 2 usage, configuration or
database unreachable; 75 try again later (a claim or lock held elsewhere);
130/143 signals. Logs and errors go to stderr; stdout carries tables or, with
``--json``, JSON only. Each command lives in the module named after it; they
register themselves on :data:`app` when imported here, in the order ``--help``
lists them. The wiring (groups, global options, the one error boundary) is in
:mod:`syncflow.cli.app`; what every command prints with is in :mod:`syncflow.cli.render`.
"""

from __future__ import annotations

import importlib

from syncflow.cli.app import app, main

# In the order --help lists them.
COMMAND_MODULES = ("discover", "entities", "sync", "runs", "connectors", "database", "doctor")
for _name in COMMAND_MODULES:
    importlib.import_module(f"syncflow.cli.{_name}")

__all__ = ["app", "main"]
