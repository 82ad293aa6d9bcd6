"""``syncflow db upgrade|status``."""

from __future__ import annotations

from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from syncflow.cli.app import (
    JsonOpt,
    current_state,
    db_app,
)
from syncflow.cli.render import (
    emit_json,
    note,
    out,
    show_time,
)


@db_app.command("upgrade", epilog="Example: syncflow db upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Apply pending metadata migrations (sync, discover and entity set also do this themselves)."""
    sf = current_state(ctx).open(require_file=False)
    applied = sf.upgrade()
    for name in applied:
        note(f"applied {name}")
    if not applied:
        note(f"schema {sf.runtime.schema!r} is up to date")


@db_app.command("status", epilog="Example: syncflow db status --json")
def db_status(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Show which metadata migrations are applied (read-only)."""
    state = current_state(ctx)
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
