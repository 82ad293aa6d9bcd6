"""``syncflow status``, ``runs list|show`` and ``history``."""

from __future__ import annotations

import enum
import json
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from syncflow.cli.app import (
    JsonOpt,
    app,
    current_state,
    runs_app,
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


@app.command("status", epilog="Example: syncflow status --json")
def status(
    ctx: typer.Context,
    connector: Annotated[str | None, typer.Option("--connector", help="Only this connector.")] = None,
    stale_factor: Annotated[
        float | None,
        typer.Option("--stale-factor", min=0.01, help="Stale after this many intervals (default: from the config)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Health of every entity (read-only; a health check).

    Exit 1 when one failed 3 times in a row, is stale, needs attention, the delete guard held back
    deletes in its last run, or its last run's after_sync_sql failed; 75 when another session holds a
    lock on a SyncFlow table.
    """
    state = current_state(ctx)
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
    state = current_state(ctx)
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
    for record in records:
        if record.resumed:
            out.print(f"run {record.uid[:8]} {record.resumed}")


@runs_app.command("show", epilog="Example: syncflow runs show 3f2a9c1e  (a prefix of the id will do)")
def runs_show(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="The run's id, or a prefix of it.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False,
) -> None:
    """Show one run with its rejected rows."""
    state = current_state(ctx)
    run = state.open(require_file=False).run_record(run_id)
    _show_run(zoned(run.to_json(), state.tz, "started_at", "completed_at"), as_json)


def _show_run(run: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(run)
        return
    for key, value in run.items():
        if key in ("rejects", "error_details", "resumed_from", "resumed_at_rows"):
            continue
        out.print(f"[bold]{key}[/]: {escape(plain(value))}")
    if run.get("resumed_from"):
        out.print(f"[bold]resumed[/]: resumed from run {run['resumed_from'][:8]} at {run['resumed_at_rows'] or 0} rows")
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
            zone = current_state(ctx).tz
            when = when.replace(tzinfo=zone) if zone is not None else when.astimezone()
    given: dict[str, str] = {}
    for item in keys:
        column, eq, value = item.partition("=")
        if not eq:
            raise UsageError(f"--key {item!r}: use COLUMN=VALUE")
        given[column] = value
    record = current_state(ctx).open(require_file=False).history(ref, key=given, as_of=when)
    found = [zoned(v.to_json(), current_state(ctx).tz, "valid_from", "valid_to") for v in record.versions]
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
