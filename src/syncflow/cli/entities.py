"""``syncflow entities``, ``entity show`` and ``entity set``."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from syncflow.cli.app import (
    JsonOpt,
    app,
    current_state,
    entity_app,
)
from syncflow.cli.render import (
    Col,
    emit_json,
    err,
    fit_table,
    note,
    out,
    plain,
    show_time,
    zoned,
)
from syncflow.errors import (
    EXIT_FAILED,
    UsageError,
)


@app.command("entities", epilog="Example: syncflow entities --connector erp")
def entities(
    ctx: typer.Context,
    connector: Annotated[str | None, typer.Option("--connector", help="Only this connector.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List discovered entities with strategy, keys, interval and last sync."""
    state = current_state(ctx)
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
    as_json: JsonOpt = False,
) -> None:
    """Show an entity's columns: source type, PostgreSQL type and name mapping."""
    state = current_state(ctx)
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
        current_state(ctx)
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
        f"{escape(ref)}: interval {settings.interval_seconds}s, enabled {plain(settings.enabled)}, "
        f"page size {settings.page_size}, history {'on' if settings.history else 'off'}"
    )
    connector, _, slug = settings.entity.partition(".")
    for key, value in settings.ignored:
        err.print(
            f"[bold red]error:[/] {escape(ref)}: {key} = {escape(json.dumps(value))} in "
            f"{escape(settings.config_path)} \\[connectors.{escape(connector)}.entities."
            f"{escape(slug)}] wins over the database: the new value is stored but has no effect while the file "
            "sets it; remove it from the file to use the stored value"
        )
    if settings.ignored:
        raise typer.Exit(EXIT_FAILED)


# -- sync ---------------------------------------------------------------------------------
