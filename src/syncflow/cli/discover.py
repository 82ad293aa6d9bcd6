"""``syncflow discover``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from syncflow.cli.app import (
    app,
    current_state,
)
from syncflow.cli.render import (
    Col,
    emit_json,
    err,
    fit_table,
    log,
    note,
    out,
)

if TYPE_CHECKING:  # the types only: discovery (and its HTTP client) is imported by the core when it runs
    from syncflow.discovery import DiscoveryReport, EntityOutcome


def _changes(o: EntityOutcome) -> list[str]:
    """What discovery did (or would do) to one entity, one line per change, as rich markup."""
    p = o.plan
    changes: list[str] = []
    if p.action == "create":
        changes.append(f"create with {sum(c.policy != 'exclude' for c in p.columns)} columns")
    changes += [escape(change) for change in p.policy_changes]
    changes += [escape(f"clear {n} (excluded: its values are set NULL)") for n in p.clear]
    changes += [escape(f"retype {n}: {a} → {b} (values cleared, rewritten by the next sync)") for n, a, b in p.retype]
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
    return changes


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
        changes = _changes(o)
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
    sf = current_state(ctx).open()
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
