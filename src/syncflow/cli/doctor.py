"""``syncflow doctor``: render :mod:`syncflow.doctor`'s report."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape

from syncflow import doctor
from syncflow.cli.app import app, current_state
from syncflow.cli.render import emit_json, out
from syncflow.errors import EXIT_FAILED

_COLOUR = {doctor.OK: "green", doctor.WARN: "yellow", doctor.FAIL: "bold red", "info": "dim"}


def _line(status: str, text: str) -> None:
    out.print(f"[{_COLOUR[status]}]{status:<4}[/] {escape(text)}", soft_wrap=True)


@app.command("doctor", epilog="Example: syncflow doctor --json")
def doctor_command(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Check the installation: config file, settings and their sources, database, connectors, tokens, clock.

    One line per check (ok, warn or fail) and one per setting (info: its effective value and
    whether it came from the default, the file, the environment or a flag). Secrets are never
    shown: the database password is replaced by ****, tokens are named by their variable only; a
    JWT's expiry is read without verifying it and warned about 7 days ahead.

    Exit 0 when every check passes (warnings included), 1 when any fails.
    """
    state = current_state(ctx)
    report = doctor.run(config_path=state.config_path, database_url=state.database_url, env_file=state.env_file)
    if as_json:
        emit_json(report.to_json())
    else:
        for check in report.checks[:1]:
            _line(check.status, f"{check.name}: {check.message}")
        for setting in report.settings:
            _line("info", f"{setting.key} = {json.dumps(setting.value)} ({setting.source})")
        for check in report.checks[1:]:
            _line(check.status, f"{check.name}: {check.message}")
    if not report.ok:
        raise typer.Exit(EXIT_FAILED)
