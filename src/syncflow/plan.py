"""The schema plan: what discovery would change, computed without side effects.

Input: the API's metadata, what SyncFlow stored last time, and the live table
as the catalog shows it. Output: an :class:`EntityPlan` that ``--dry-run``
prints and :mod:`syncflow.discovery` applies. Nothing is ever dropped: a
column gone from the metadata is retired (kept, no longer written), and a
narrowing type change or a new business key is *breaking* — reported with
what to do, never applied silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from syncflow.apis import ApiSpec
from syncflow.models import Entity, LiveTable, StoredColumn
from syncflow.naming import assign_names, history_table_name, is_reserved_table_name
from syncflow.typemap import is_widening, normalize

AUDIT_COLUMNS = (
    "_bridge_id",
    "_bridge_created_at",
    "_bridge_updated_at",
    "_bridge_hash",
    "_bridge_deleted",
    "_bridge_rowversion",
)


@dataclass
class EntityPlan:
    """Everything discovery would do to one entity."""

    connector: str
    slug: str
    target_schema: str
    target_table: str
    delta_strategy: str
    business_keys: list[str]
    columns: list[StoredColumn]
    action: str  # create | alter | breaking | unchanged | unsyncable
    desired_columns: list[StoredColumn] = field(default_factory=list)
    add_columns: list[StoredColumn] = field(default_factory=list)
    widen: list[tuple[str, str, str]] = field(default_factory=list)
    retire: list[str] = field(default_factory=list)
    restore: list[str] = field(default_factory=list)
    breaking: list[str] = field(default_factory=list)
    strategy_change: tuple[str, str] | None = None
    create_rowversion_index: bool = False
    warnings: list[str] = field(default_factory=list)
    unsyncable_reason: str | None = None
    # Why the checkpoint is reset (the next sync reads every row again); empty: it is kept.
    checkpoint_reset: list[str] = field(default_factory=list)
    # Re-added columns: stored hashes no longer describe the rows, so every row is rewritten once.
    invalidate_hashes: bool = False
    # The history table's name, reserved whether history is on or not (set by discovery).
    history_table: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.connector}.{self.slug}"

    @property
    def changes_table(self) -> bool:
        return bool(self.action == "create" or self.add_columns or self.widen or self.create_rowversion_index)

    def to_json(self) -> dict[str, Any]:
        """A machine-readable plan for ``discover --dry-run --json``."""
        return {
            "entity": self.ref,
            "action": self.action,
            "table": f"{self.target_schema}.{self.target_table}",
            "delta_strategy": self.delta_strategy,
            "business_keys": self.business_keys,
            "add_columns": [{"name": c.pg_name, "type": c.pg_type} for c in self.add_columns],
            "widen": [{"name": n, "from": a, "to": b} for n, a, b in self.widen],
            "retire": self.retire,
            "restore": self.restore,
            "breaking": self.breaking,
            "strategy_change": list(self.strategy_change) if self.strategy_change else None,
            "create_rowversion_index": self.create_rowversion_index,
            "warnings": self.warnings,
            "unsyncable_reason": self.unsyncable_reason,
            "checkpoint_reset": self.checkpoint_reset,
            "history_table": f"{self.target_schema}.{self.history_table}" if self.history_table else None,
        }


def plan_entity(
    *,
    connector: str,
    target_schema: str,
    spec: ApiSpec,
    stored: Entity | None,
    live: LiveTable | None,
    table: str,
) -> EntityPlan:
    """Compare metadata with what is stored and what is live; decide, do nothing."""
    existing = {c.api_name: c.pg_name for c in stored.columns} if stored else {}
    names = assign_names([c.api_name for c in spec.columns], existing, taken=AUDIT_COLUMNS)

    columns, retire, restore = _desired_columns(spec, stored, names)
    keys = [names[k] for k in spec.business_keys]
    plan = EntityPlan(
        connector=connector,
        slug=spec.slug,
        target_schema=target_schema,
        target_table=table,
        delta_strategy=spec.delta_strategy,
        business_keys=keys,
        columns=columns,
        desired_columns=list(columns),
        action="unchanged",
        retire=retire,
        restore=restore,
        warnings=list(spec.warnings),
        unsyncable_reason=spec.unsyncable_reason,
    )
    if stored and stored.delta_strategy != spec.delta_strategy:
        plan.strategy_change = (stored.delta_strategy, spec.delta_strategy)
    if spec.unsyncable_reason:
        plan.action = "unsyncable"
        return plan
    if live is None:
        plan.action = "create"
        plan.create_rowversion_index = spec.delta_strategy == "rowversion"
        if stored is not None and stored.last_rowversion is not None:
            plan.checkpoint_reset.append(f"the table {target_schema}.{table} is created empty")
        return plan

    plan.columns = _against_live(plan, columns, live)
    live_keys = live.unique_keys[0] if live.unique_keys else ()
    if tuple(keys) != tuple(live_keys) and set(keys) != set(live_keys):
        plan.breaking.append(f"business key changes from ({', '.join(live_keys) or 'none'}) to ({', '.join(keys)})")
    if spec.delta_strategy == "rowversion" and not live.rowversion_index:
        plan.create_rowversion_index = True
    if stored is not None:
        _checkpoint_resets(plan, stored, live)
    if plan.breaking:
        plan.action = "breaking"
    elif plan.changes_table or plan.retire or plan.restore or plan.strategy_change or plan.checkpoint_reset:
        plan.action = "alter"
    return plan


def _desired_columns(
    spec: ApiSpec, stored: Entity | None, names: dict[str, str]
) -> tuple[list[StoredColumn], list[str], list[str]]:
    """The API's columns under their PostgreSQL names, then the stored ones gone from it (retired, kept);
    with the names retired now and the ones coming back."""
    columns: list[StoredColumn] = []
    for c in spec.columns:
        columns.append(
            StoredColumn(
                api_name=c.api_name,
                source_name=c.source_name,
                data_type=c.data_type,
                pg_name=names[c.api_name],
                pg_type=c.pg_type,
                is_nullable=c.is_nullable,
                is_business_key=c.is_business_key,
            )
        )
    spec_names = {c.api_name for c in spec.columns}
    retire: list[str] = []
    restore: list[str] = []
    if stored:
        for old in stored.columns:
            if old.api_name not in spec_names:
                columns.append(
                    StoredColumn(
                        api_name=old.api_name,
                        source_name=old.source_name,
                        data_type=old.data_type,
                        pg_name=old.pg_name,
                        pg_type=old.pg_type,
                        is_nullable=True,
                        is_business_key=False,
                        retired=True,
                    )
                )
                if not old.retired:
                    retire.append(old.pg_name)
            elif old.retired:
                restore.append(old.pg_name)
    return columns, retire, restore


def _against_live(plan: EntityPlan, columns: list[StoredColumn], live: LiveTable) -> list[StoredColumn]:
    """Compare each column with the live table: add, widen, or report a breaking change (keeping the live type)."""
    final: list[StoredColumn] = []
    for col in columns:
        have = live.columns.get(col.pg_name)
        if have is None:
            plan.add_columns.append(col)
            final.append(col)
            continue
        live_type = normalize(have.pg_type)
        if live_type == normalize(col.pg_type):
            final.append(col)
        elif col.retired:
            final.append(_with_type(col, live_type))
        elif is_widening(live_type, col.pg_type):
            plan.widen.append((col.pg_name, live_type, normalize(col.pg_type)))
            final.append(col)
        else:
            plan.breaking.append(
                f"column {col.pg_name}: type changes from {live_type} to {normalize(col.pg_type)}"
                " (narrowing or incompatible)"
            )
            final.append(_with_type(col, live_type))
    return final


def _checkpoint_resets(plan: EntityPlan, stored: Entity, live: LiveTable) -> None:
    """Find what makes the stored checkpoint pass rows the table lacks; set the reasons.

    The checkpoint says "every row up to here is in the table". That stops
    being true when the table is another one, when it was emptied, or when a
    column appears that the rows already read have no value in (new at the
    source without a version bump, restored, or dropped by hand and re-added).
    """
    known = {c.pg_name for c in stored.columns}
    readded = [c.pg_name for c in plan.add_columns if c.pg_name in known]
    new = [c.pg_name for c in plan.add_columns if c.pg_name not in known]
    plan.invalidate_hashes = bool(readded)
    reasons: list[str] = []
    if (stored.target_schema, stored.target_table) != (plan.target_schema, plan.target_table):
        reasons.append(
            f"the entity moves from {stored.target_schema}.{stored.target_table}"
            f" to {plan.target_schema}.{plan.target_table}, which lacks the rows read since"
        )
    if not live.has_rows:
        reasons.append(f"the table {plan.target_schema}.{plan.target_table} is empty")
    rounded = [name for name, old_type, new_type in plan.widen if _rounded_before(old_type, new_type)]
    if rounded:
        reasons.append(f"column(s) {', '.join(rounded)} now keep digits that were rounded away before")
    if readded:
        reasons.append(f"column(s) {', '.join(readded)} were missing from the table and are added again")
    if new:
        reasons.append(f"new column(s) {', '.join(new)} have no value in the rows already read")
    if plan.restore:
        reasons.append(f"restored column(s) {', '.join(plan.restore)} have no current value in the rows already read")
    if plan.strategy_change:
        reasons.append(f"the delta strategy changes from {plan.strategy_change[0]} to {plan.strategy_change[1]}")
    # No checkpoint (a full or hash entity, or one never synced): the next sync reads every row anyway.
    if stored.last_rowversion is not None:
        plan.checkpoint_reset += reasons


def choose_table(slug: str, stored: Entity | None, target_schema: str, taken: set[str]) -> str:
    """The entity's table: the stored one, else the slug through the naming rule.

    A new name never ends in the suffix reserved for history tables, so no
    data table can be, or later become, another entity's history table.
    """
    if stored is not None and stored.target_schema == target_schema:
        return stored.target_table
    avoid = set(taken)
    while True:
        name = assign_names([slug], taken=avoid)[slug]
        if not is_reserved_table_name(name):
            return name
        avoid.add(name)


_NUMERIC_SCALE_RE = re.compile(r"^numeric\((\d+),(\d+)\)$")


def _rounded_before(old_type: str, new_type: str) -> bool:
    """Whether the old type rounded values that the widened one keeps (more decimals, fractional seconds).

    PostgreSQL rounds, rather than rejects, a numeric with too many decimals
    and a timestamp with too precise seconds, so rows already read may differ
    from the source in exactly the digits the new type has room for.
    """
    old, new = normalize(old_type), normalize(new_type)
    scale = _NUMERIC_SCALE_RE.match(old)
    if scale:
        wider = _NUMERIC_SCALE_RE.match(new)
        return new == "numeric" or bool(wider and int(wider.group(2)) > int(scale.group(2)))
    return old == "timestamp(0)" and new in ("timestamp", "timestamptz")


def choose_history_table(table: str, stored: Entity | None, target_schema: str, taken: set[str]) -> str:
    """The history table's name: the stored one while the data table stays, else a free one."""
    if (
        stored is not None
        and stored.history_table
        and (stored.target_schema, stored.target_table) == (target_schema, table)
        and stored.history_table not in taken
    ):
        return stored.history_table
    n = 1
    while history_table_name(table, n) in taken:
        n += 1
    return history_table_name(table, n)


def _with_type(col: StoredColumn, pg_type: str) -> StoredColumn:
    return StoredColumn(**{**col.to_json(), "pg_type": pg_type})
