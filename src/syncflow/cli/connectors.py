"""``syncflow connector add|remove|list|show|test``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from syncflow.api import (
    add_connector,
    remove_connector,
)
from syncflow.cli.app import (
    JsonOpt,
    connector_app,
    current_state,
)
from syncflow.cli.render import (
    Col,
    emit_json,
    err,
    fit_table,
    note,
    out,
    plain,
)
from syncflow.errors import (
    EXIT_FAILED,
)


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
        current_state(ctx).config_path,
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
    path = remove_connector(current_state(ctx).config_path, name)
    note(
        f"removed connector [bold]{escape(name)}[/] from {escape(str(path))}; it becomes inactive "
        "in the database on the next run, and its tables and history are kept"
    )


@connector_app.command("list", epilog="Example: syncflow connector list --json")
def connector_list(
    ctx: typer.Context,
    as_json: JsonOpt = False,
) -> None:
    """List the connectors in the configuration file."""
    sf = current_state(ctx).open()
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
    as_json: JsonOpt = False,
) -> None:
    """Show one connector's settings and per-entity overrides."""
    data = current_state(ctx).open().connector(name).to_json()
    if as_json:
        emit_json(data)
        return
    for key in (
        "name",
        "base_url",
        "token_env",
        "token_set",
        "target_schema",
        "verify_tls",
        "max_concurrent_requests",
        "max_requests_per_second",
        "parallel_reads",
    ):
        out.print(f"[bold]{key}[/]: {escape(plain(data[key]))}")
    if data["after_sync_sql"] is not None:
        out.print(f"[bold]after_sync_sql[/] ({data['after_sync_when']}): {escape(data['after_sync_sql'])}")
    for slug, o in data["entities"].items():
        out.print(f"[bold]entities.{escape(slug)}[/]: {escape(json.dumps(o))}")


@connector_app.command("test", epilog="Example: syncflow connector test erp")
def connector_test(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Connector name.")],
    as_json: JsonOpt = False,
) -> None:
    """Check reachability, TLS, the token and the API count. Exit 1 when it fails."""
    result = current_state(ctx).open().test_connector(name).to_json()
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
