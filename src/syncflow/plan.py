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
from syncflow.models import ColumnPolicy, Entity, LiveTable, StoredColumn
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
    # Column policy changes ("exclude salary", "hash email", "unhash email", "include salary").
    policy_changes: list[str] = field(default_factory=list)
    # Columns whose stored values are cleared (set NULL) in the table and its history: newly excluded.
    clear: list[str] = field(default_factory=list)
    # Columns retyped with their values cleared (hashing turned on or off): (name, from, to).
    retype: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"{self.connector}.{self.slug}"

    @property
    def changes_table(self) -> bool:
        return bool(
            self.action == "create"
            or self.add_columns
            or self.widen
            or self.create_rowversion_index
            or self.clear
            or self.retype
        )

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
            "policy_changes": self.policy_changes,
            "clear": self.clear,
            "retype": [{"name": n, "from": a, "to": b} for n, a, b in self.retype],
        }


def plan_entity(
    *,
    connector: str,
    target_schema: str,
    spec: ApiSpec,
    stored: Entity | None,
    live: LiveTable | None,
    table: str,
    policy: ColumnPolicy | None = None,
) -> EntityPlan:
    """Compare metadata with what is stored and what is live; decide, do nothing."""
    policy = policy or ColumnPolicy()
    existing = {c.api_name: c.pg_name for c in stored.columns} if stored else {}
    names = assign_names([c.api_name for c in spec.columns], existing, taken=AUDIT_COLUMNS)

    columns, retire, restore = _desired_columns(spec, stored, names, policy)
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
    changed = _changed_policies(columns, stored)
    plan.policy_changes = [_describe(c, changed[c.api_name]) for c in columns if c.api_name in changed]
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

    plan.columns = _against_live(plan, columns, live, changed)
    live_keys = live.unique_keys[0] if live.unique_keys else ()
    if tuple(keys) != tuple(live_keys) and set(keys) != set(live_keys):
        plan.breaking.append(f"business key changes from ({', '.join(live_keys) or 'none'}) to ({', '.join(keys)})")
    if spec.delta_strategy == "rowversion" and not live.rowversion_index:
        plan.create_rowversion_index = True
    if stored is not None:
        _checkpoint_resets(plan, stored, live, changed)
    if plan.breaking:
        plan.action = "breaking"
    elif (
        plan.changes_table
        or plan.retire
        or plan.restore
        or plan.strategy_change
        or plan.checkpoint_reset
        or plan.policy_changes
    ):
        plan.action = "alter"
    return plan


def _desired_columns(
    spec: ApiSpec, stored: Entity | None, names: dict[str, str], policy: ColumnPolicy
) -> tuple[list[StoredColumn], list[str], list[str]]:
    """The API's columns under their PostgreSQL names, then the stored ones gone from it (retired, kept);
    with the names retired now and the ones coming back.

    An excluded column is kept as retired with the policy "exclude" (so its name stays reserved
    and a sync knows to ignore it); a hashed one is ``text``.
    """
    columns: list[StoredColumn] = []
    for c in spec.columns:
        rule = policy.of(c.api_name)
        columns.append(
            StoredColumn(
                api_name=c.api_name,
                source_name=c.source_name,
                data_type=c.data_type,
                pg_name=names[c.api_name],
                pg_type="text" if rule == "hash" else c.pg_type,
                is_nullable=c.is_nullable,
                is_business_key=c.is_business_key,
                retired=rule == "exclude",
                policy=rule,
            )
        )
    spec_names = {c.api_name for c in spec.columns}
    retire: list[str] = []
    restore: list[str] = []
    if stored:
        for old in stored.columns:
            if old.api_name in spec_names and (old.policy == "exclude" or policy.of(old.api_name) == "exclude"):
                continue  # exclusions are policy changes, not retirements
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
                        # An excluded column stays excluded: never created (it may not be in the table).
                        policy="exclude" if old.policy == "exclude" else None,
                    )
                )
                if not old.retired:
                    retire.append(old.pg_name)
            elif old.retired:
                restore.append(old.pg_name)
    return columns, retire, restore


def _changed_policies(columns: list[StoredColumn], stored: Entity | None) -> dict[str, str | None]:
    """Columns whose policy the file changes against what discovery applied last: API name → old policy."""
    before = {c.api_name: c.policy for c in stored.columns} if stored else {}
    out: dict[str, str | None] = {}
    for col in columns:
        old = before.get(col.api_name)
        if col.retired and col.policy is None:
            continue  # gone from the metadata: a retirement, whatever its policy was
        if col.policy != old:
            out[col.api_name] = old
    return out


def _describe(col: StoredColumn, old: str | None) -> str:
    if col.policy is not None:
        return f"{col.policy} {col.api_name}"
    return f"{'unhash' if old == 'hash' else 'include'} {col.api_name}"


def policy_problems(policy: ColumnPolicy, known: set[str], keys: set[str]) -> list[str]:
    """Policies naming no column (``known``: API names), or a business key; one line each.

    A business key is neither excluded (a row needs it) nor hashed: paging, tie groups and the
    delete step compare keys as the source sends them.
    """
    problems: list[str] = []
    for key, names in (("exclude_columns", policy.exclude), ("hash_columns", policy.hash)):
        for name in sorted(names):
            if name not in known:
                problems.append(f"{key}: no column named {name!r} (use the API's column names, as 'entity show' lists)")
            elif name in keys:
                problems.append(
                    f"{key}: {name!r} is a business key column, which is always stored as the source sends it"
                )
    return problems


def _policy_against_live(plan: EntityPlan, col: StoredColumn, old: str | None, have: str | None) -> StoredColumn:
    """A column whose policy changed, against the live type ``have`` (None: not in the table)."""
    if col.policy == "exclude":
        if have is None:
            return col  # never created
        if old != "exclude":
            plan.clear.append(col.pg_name)
        return _with_type(col, have)
    if have is None:
        plan.add_columns.append(col)
    else:
        plan.retype.append((col.pg_name, have, normalize(col.pg_type)))
    return col


def _against_live(
    plan: EntityPlan, columns: list[StoredColumn], live: LiveTable, changed: dict[str, str | None]
) -> list[StoredColumn]:
    """Compare each column with the live table: add, widen, or report a breaking change (keeping the live type).

    A column whose policy changed is added, retyped or cleared instead (see :func:`_policy_against_live`).
    """
    final: list[StoredColumn] = []
    for col in columns:
        have = live.columns.get(col.pg_name)
        if col.api_name in changed:
            old = changed[col.api_name]
            final.append(_policy_against_live(plan, col, old, normalize(have.pg_type) if have else None))
            continue
        if col.policy == "exclude":
            final.append(col if have is None else _with_type(col, normalize(have.pg_type)))
            continue
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


def _checkpoint_resets(plan: EntityPlan, stored: Entity, live: LiveTable, changed: dict[str, str | None]) -> None:
    """Find what makes the stored checkpoint pass rows the table lacks; set the reasons.

    The checkpoint says "every row up to here is in the table". That stops
    being true when the table is another one, when it was emptied, or when a
    column appears that the rows already read have no value in (new at the
    source without a version bump, restored, or dropped by hand and re-added).
    """
    known = {c.pg_name for c in stored.columns}
    by_policy = {c.pg_name for c in plan.columns if c.api_name in changed}
    added = [c.pg_name for c in plan.add_columns if c.pg_name not in by_policy]
    readded = [name for name in added if name in known]
    new = [name for name in added if name not in known]
    rewrite = [c for c in plan.policy_changes if not c.startswith("exclude ")]
    plan.invalidate_hashes = bool(readded or rewrite)
    reasons: list[str] = []
    if rewrite:
        reasons.append(f"column policy changes ({', '.join(rewrite)}): the rows already read lack the new form")
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
