"""Discovery: ask APISmith what it has, plan each entity, apply the plan.

Each entity's change (DDL and its ``entities`` row) is applied in one
transaction, so a failure midway leaves no half-made table; the failure is
reported against that entity and the others go on.

A change to an existing entity is made holding its claim (the advisory lock
a sync holds for its whole run), and planned again once the claim is held:
a schema change under a running sync would lose rows. When a sync holds it,
the entity is refused (or waited for, bounded) and the others go on.

Whenever the change leaves rows the table lacks behind the checkpoint (a
table created or emptied, a new target, a column added or restored, a
strategy change, a rebuild), the checkpoint is reset, so the next sync reads
every row again; the merge rewrites only rows whose values differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from syncflow import catalog, claims, ddl, history, store
from syncflow.apis import ApiSpec, parse_apis
from syncflow.client import APISmithClient
from syncflow.config import LoadedConfig
from syncflow.errors import ConfigError, UsageError
from syncflow.models import ColumnPolicy, Entity, LiveTable, StoredColumn
from syncflow.plan import EntityPlan, choose_history_table, choose_table, plan_entity, policy_problems
from syncflow.store import Conn


@dataclass
class EntityOutcome:
    plan: EntityPlan
    error: str | None = None
    backup_table: str | None = None
    # Not applied because a sync holds the entity's claim (exit code 75).
    refused: str | None = None


@dataclass
class DiscoveryReport:
    """What discovery found and did for one connector."""

    connector: str
    dry_run: bool
    outcomes: list[EntityOutcome] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # APIs that could not be stored at all

    @property
    def refused(self) -> list[str]:
        return [o.refused for o in self.outcomes if o.refused]

    def to_json(self) -> dict[str, Any]:
        return {
            "connector": self.connector,
            "dry_run": self.dry_run,
            "entities": [
                {**o.plan.to_json(), "error": o.error, "backup_table": o.backup_table, "refused": o.refused}
                for o in self.outcomes
            ],
            "warnings": self.warnings,
            "missing_at_source": self.missing,
            "rejected": self.rejected,
        }


def attention_message(plan: EntityPlan) -> str:
    return (
        "; ".join(plan.breaking)
        + f". Nothing was changed for this. To apply it, run 'syncflow discover {plan.connector}"
        f" --rebuild {plan.slug}': it builds the table anew (the old one is kept as a backup)"
        " and the next sync reloads every row."
    )


def discover_connector(
    conn: Conn,
    schema: str,
    config: LoadedConfig,
    name: str,
    client: APISmithClient,
    *,
    dry_run: bool = False,
    rebuild: frozenset[str] = frozenset(),
    wait_seconds: float | None = None,
) -> DiscoveryReport:
    """Discover one connector's APIs and create or evolve their tables.

    ``wait_seconds``: how long to wait for an entity's claim when a sync
    holds it; None refuses such an entity at once.
    """
    items, _ = client.list_apis()
    parsed = parse_apis(items)
    report = DiscoveryReport(
        connector=name, dry_run=dry_run, warnings=list(parsed.warnings), rejected=list(parsed.rejected)
    )
    try:
        cuid = store.connector_uid(conn, schema, name)
    except UsageError:
        if not dry_run:
            raise
        cuid = ""  # new in the file: a dry run plans it as never discovered, without registering it
    stored = {e.slug: e for e in store.list_entities(conn, schema, connector=name)}
    target_schema = config.target_schema(name)
    reserved: set[str] = set()  # names given to earlier entities of this run
    policies = {spec.slug: entity_policy(config, name, spec, stored.get(spec.slug)) for spec in parsed.apis}
    for spec in parsed.apis:
        old = stored.get(spec.slug)
        policy = policies[spec.slug]
        try:
            with conn.transaction():
                plan, live = _plan(conn, schema, name, target_schema, spec, old, reserved, policy)
        except (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled):
            # Reading the live table waited for someone's lock: this entity fails, the others go on.
            where = f"{target_schema}.{old.target_table}" if old else f"the table of {name}.{spec.slug}"
            report.rejected.append(
                f"{name}.{spec.slug}: another session holds a lock on {where}"
                " (waited lock_timeout_seconds); nothing was changed for it"
            )
            continue
        outcome = EntityOutcome(plan)
        report.outcomes.append(outcome)
        if dry_run:
            continue
        held: str | None = None
        if old is not None and _touches(plan, old):
            if not claims.claim_for_change(conn, old.uid, wait_seconds=wait_seconds):
                outcome.refused = refusal_message(plan, wait_seconds)
                continue
            held = old.uid
            # Plan again under the claim: a sync that ended meanwhile may have moved the checkpoint.
            old = store.get_entity(conn, schema, plan.ref)
            reserved.difference_update((plan.target_table, plan.history_table))
            plan, live = _plan(conn, schema, name, target_schema, spec, old, reserved, policy)
            outcome.plan = plan
        try:
            with conn.transaction():
                outcome.backup_table = _apply(
                    conn,
                    schema,
                    cuid,
                    spec_api_name=spec.name,
                    description=spec.description,
                    plan=plan,
                    old=old,
                    live=live,
                    rebuild=spec.slug in rebuild,
                )
        except psycopg.Error as exc:
            outcome.error = (
                f"{plan.ref}: could not apply the schema change to "
                f"{plan.target_schema}.{plan.target_table}: {str(exc).strip().splitlines()[0]}"
            )
        finally:
            if held is not None:
                claims.release(conn, held)
    if not dry_run:
        with conn.transaction():
            report.missing = store.mark_missing(conn, schema, cuid, [a.slug for a in parsed.apis])
    return report


def entity_policy(config: LoadedConfig, connector: str, spec: ApiSpec, old: Entity | None) -> ColumnPolicy:
    """The entity's column policies from the file, checked against its columns (ConfigError, exit 2).

    A policy naming no column or a business key, or hash_columns whose key is not in the
    environment, is refused before anything is planned.
    """
    policy = config.column_policy(connector, spec.slug)
    known = {c.api_name for c in spec.columns} | {c.api_name for c in (old.columns if old else [])}
    where = f"{config.path}: connectors.{connector}.entities.{spec.slug}"
    problems = [f"{where}.{p}" for p in policy_problems(policy, known, set(spec.business_keys))]
    if problems:
        raise ConfigError(problems)
    if policy.hash:
        config.hash_key()
    return policy


def _plan(
    conn: Conn,
    schema: str,
    connector: str,
    target_schema: str,
    spec: ApiSpec,
    old: Entity | None,
    reserved: set[str],
    policy: ColumnPolicy,
) -> tuple[EntityPlan, LiveTable | None]:
    """Choose the entity's table and history table names, read the live table, plan."""
    taken = store.taken_tables(conn, schema, target_schema, old.uid if old else None) | reserved
    table = choose_table(spec.slug, old, target_schema, taken)
    history_table = choose_history_table(table, old, target_schema, taken | {table})
    reserved.update((table, history_table))
    live = catalog.read_live_table(conn, target_schema, table)
    plan = plan_entity(
        connector=connector, target_schema=target_schema, spec=spec, stored=old, live=live, table=table, policy=policy
    )
    plan.history_table = history_table
    return plan, live


def _touches(plan: EntityPlan, old: Entity) -> bool:
    """Whether applying the plan changes the entity a sync may be running on."""
    return plan.action != "unchanged" or plan.history_table != old.history_table


def refusal_message(plan: EntityPlan, wait_seconds: float | None) -> str:
    waited = f" (still after waiting {wait_seconds:g}s)" if wait_seconds else ""
    return (
        f"{plan.ref}: a sync of this entity is running (another process holds its claim){waited};"
        " nothing was changed for it. Run 'syncflow discover"
        f" {plan.connector}' again when the sync has finished, or "
        + ("give a longer --wait-timeout." if wait_seconds else "add --wait.")
    )


def _apply(  # noqa: PLR0913 - one entity's change: its plan and what the caller already holds
    conn: Conn,
    schema: str,
    cuid: str,
    *,
    spec_api_name: str,
    description: str,
    plan: EntityPlan,
    old: Entity | None,
    live: LiveTable | None,
    rebuild: bool,
) -> str | None:
    """Run one entity's DDL and save its row; returns a backup table's name, if any."""
    backup: str | None = None
    attention: str | None = None
    pending: dict[str, Any] | None = None
    columns = plan.columns
    if plan.action != "unsyncable":
        conn.execute(ddl.create_schema(plan.target_schema))
        if plan.action == "breaking" and rebuild:
            backup = _rebuild(conn, plan)
            columns = plan.desired_columns
        elif plan.action == "create":
            conn.execute(
                ddl.create_table(plan.target_schema, plan.target_table, _created(plan.columns), plan.business_keys)
            )
        else:
            for col in plan.add_columns:
                conn.execute(ddl.add_column(plan.target_schema, plan.target_table, col))
            for column, _old_type, new_type in plan.widen:
                conn.execute(ddl.widen_column(plan.target_schema, plan.target_table, column, new_type))
            _apply_policies(conn, plan, plan.target_table)
            if plan.invalidate_hashes:
                conn.execute(ddl.invalidate_hashes(plan.target_schema, plan.target_table))
            if plan.breaking:
                attention = attention_message(plan)
                pending = plan.to_json()
        if plan.create_rowversion_index or (backup and plan.delta_strategy == "rowversion"):
            conn.execute(ddl.create_rowversion_index(plan.target_schema, plan.target_table))
    keys = plan.business_keys
    if attention and old is not None and live is not None:
        # Until the operator rebuilds, keep syncing against what the table really is.
        keys = list(live.unique_keys[0]) if live.unique_keys else old.business_keys
    entity = Entity(
        uid=old.uid if old else "",
        connector=plan.connector,
        connector_uid=cuid,
        slug=plan.slug,
        api_name=spec_api_name,
        description=description,
        delta_strategy=plan.delta_strategy,
        business_keys=keys,
        target_schema=plan.target_schema,
        target_table=plan.target_table,
        columns=columns,
        syncable=plan.action != "unsyncable",
        unsyncable_reason=plan.unsyncable_reason,
        needs_attention=attention,
        pending_change=pending,
        history_table=plan.history_table,
    )
    reset = bool(plan.checkpoint_reset or backup or plan.strategy_change)
    store.save_entity(conn, schema, entity, reset_checkpoint=reset)
    # Schema changes apply to the history table too, when there is one.
    if (
        plan.action not in ("unsyncable", "create")
        and not backup
        and catalog.read_live_table(conn, plan.target_schema, history.table_name(entity)) is not None
    ):
        history.ensure(conn, entity)
        _apply_policies(conn, plan, history.table_name(entity))
    return backup


def _created(columns: list[StoredColumn]) -> list[StoredColumn]:
    """The columns a new table gets: an excluded column is never created."""
    return [c for c in columns if c.policy != "exclude"]


def _apply_policies(conn: Conn, plan: EntityPlan, table: str) -> None:
    """Clear the values a policy change makes wrong, in the data table or its history.

    Newly excluded columns are set NULL (the file says not to hold them); a column hashed
    or unhashed is retyped with its values cleared (plain text where hashes belong, or
    hashes where plain values belong), and the next sync writes them in the new form.
    """
    live = catalog.read_live_table(conn, plan.target_schema, table)
    if live is None:
        return
    for column, _old_type, new_type in plan.retype:
        if column in live.columns:
            conn.execute(ddl.retype_clearing(plan.target_schema, table, column, new_type))
    cleared = [c for c in plan.clear if c in live.columns]
    if cleared:
        conn.execute(ddl.clear_columns(plan.target_schema, table, cleared))


def _rebuild(conn: Conn, plan: EntityPlan) -> str:
    """Build the table anew with the new definition and swap it in; keep the old one.

    Runs inside the entity's transaction, so readers see either the old table
    or the new one. The new table starts empty and the checkpoint is reset, so
    the next sync is a full load; the old rows stay in the backup table until
    an operator drops it.
    """
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    backup = ddl.derived_name(plan.target_table, f"old_{stamp}")
    indexes = conn.execute(
        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE i.indrelid = to_regclass(format('%%I.%%I', %s::text, %s::text)) ORDER BY c.relname",
        [plan.target_schema, plan.target_table],
    ).fetchall()
    conn.execute(
        sql.SQL("ALTER TABLE {} RENAME TO {}").format(
            sql.Identifier(plan.target_schema, plan.target_table), sql.Identifier(backup)
        )
    )
    # Index and constraint names are per schema: move the old ones out of the way.
    for n, (index_name,) in enumerate(indexes):
        conn.execute(
            sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                sql.Identifier(plan.target_schema, str(index_name)),
                sql.Identifier(ddl.derived_name(backup, f"idx{n}")),
            )
        )
    conn.execute(
        ddl.create_table(plan.target_schema, plan.target_table, _created(plan.desired_columns), plan.business_keys)
    )
    return backup
