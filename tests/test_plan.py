"""The schema plan as pure functions: what discovery would do, asserted field by field.

docs/schema-changes.md and plan.py's docstring promise: nothing is dropped (a
column gone from the metadata is retired), a narrowing type or a new business
key is breaking and never applied, and the checkpoint is reset for exactly the
reasons the table in docs/schema-changes.md lists, and only when there is one.
No database: the live table is given as the catalog would show it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from syncflow.apis import ApiSpec, parse_api
from syncflow.models import ColumnPolicy, Entity, LiveColumn, LiveTable, StoredColumn
from syncflow.plan import (
    EntityPlan,
    _changed_policies,
    _describe,
    _policy_against_live,
    _rounded_before,
    choose_history_table,
    choose_table,
    plan_entity,
    policy_problems,
)

# The API as APISmith describes it (protocol section 1) ...
BASE_API_COLUMNS: list[dict[str, Any]] = [
    {"name": "ID", "output_alias": "id", "data_type": "NUMBER(9)", "is_business_key": True},
    {"name": "NAME", "output_alias": "name", "data_type": "VARCHAR2(50)", "is_nullable": False},
    {"name": "AMOUNT", "output_alias": "amount", "data_type": "NUMBER(10,3)"},
    {"name": "UPDATED", "output_alias": "updated", "data_type": "DATE"},
]
# ... the columns discovery stores for it (protocol "Types" and "Names") ...
ID = StoredColumn("id", "ID", "NUMBER(9)", "id", "integer", is_nullable=False, is_business_key=True)
NAME = StoredColumn("name", "NAME", "VARCHAR2(50)", "name", "varchar(50)", is_nullable=False)
AMOUNT = StoredColumn("amount", "AMOUNT", "NUMBER(10,3)", "amount", "numeric(10,3)")
UPDATED = StoredColumn("updated", "UPDATED", "DATE", "updated", "timestamp(0)")
BASE_STORED = [ID, NAME, AMOUNT, UPDATED]
# ... and the table it created, in the catalog's spellings (format_type).
BASE_LIVE = {
    "id": "integer",
    "name": "character varying(50)",
    "amount": "numeric(10,3)",
    "updated": "timestamp(0) without time zone",
}
AUDIT = {
    "_bridge_id": "bigint",
    "_bridge_hash": "text",
    "_bridge_deleted": "boolean",
}


def api(
    columns: list[dict[str, Any]] | None = None,
    *,
    strategy: str = "rowversion",
    keys: list[str] | None = None,
    slug: str = "orders",
) -> ApiSpec:
    """An ApiSpec parsed from /api/v1/apis JSON, as discovery gets it."""
    raw: dict[str, Any] = {
        "slug": slug,
        "name": "Orders",
        "delta_strategy": strategy,
        "columns": BASE_API_COLUMNS if columns is None else columns,
    }
    if keys is not None:
        raw["business_key_columns"] = keys
    parsed = parse_api(raw, 0)
    assert isinstance(parsed, ApiSpec)
    return parsed


def with_type(api_name: str, data_type: str) -> list[dict[str, Any]]:
    """The base API with one column's source type changed."""
    return [{**c, "data_type": data_type} if c["output_alias"] == api_name else c for c in BASE_API_COLUMNS]


def without(*api_names: str) -> list[dict[str, Any]]:
    """The base API with some columns gone from the metadata."""
    return [c for c in BASE_API_COLUMNS if c["output_alias"] not in api_names]


def entity(
    columns: list[StoredColumn] | None = None,
    *,
    strategy: str = "rowversion",
    checkpoint: str | None = "42",
    schema: str = "public",
    table: str = "orders",
    history_table: str | None = None,
) -> Entity:
    """What SyncFlow stored for the entity last time; ``checkpoint`` is last_rowversion."""
    return Entity(
        uid="e1",
        connector="crm",
        connector_uid="c1",
        slug="orders",
        api_name="Orders",
        description="",
        delta_strategy=strategy,
        business_keys=["id"],
        target_schema=schema,
        target_table=table,
        columns=list(BASE_STORED if columns is None else columns),
        last_rowversion=checkpoint,
        history_table=history_table,
    )


def live(
    types: dict[str, str] | None = None,
    *,
    keys: list[tuple[str, ...]] | None = None,
    index: bool = True,
    has_rows: bool = True,
) -> LiveTable:
    """The target table as the catalog shows it (audit columns included, as on a real table)."""
    cols = {**(BASE_LIVE if types is None else types), **AUDIT}
    return LiveTable(
        columns={n: LiveColumn(n, t, not_null=n == "id") for n, t in cols.items()},
        unique_keys=[("id",)] if keys is None else keys,
        rowversion_index=index,
        has_rows=has_rows,
    )


def plan(
    spec: ApiSpec,
    stored: Entity | None,
    live_table: LiveTable | None,
    *,
    schema: str = "public",
    table: str = "orders",
) -> EntityPlan:
    return plan_entity(connector="crm", target_schema=schema, spec=spec, stored=stored, live=live_table, table=table)


def expected(**changes: Any) -> EntityPlan:
    """The plan for the base entity with nothing to do; tests state only what differs."""
    base = EntityPlan(
        connector="crm",
        slug="orders",
        target_schema="public",
        target_table="orders",
        delta_strategy="rowversion",
        business_keys=["id"],
        columns=list(BASE_STORED),
        action="unchanged",
        desired_columns=list(BASE_STORED),
    )
    return replace(base, **changes)


# -- create / unchanged / unsyncable ---------------------------------------------------------


def test_new_entity_is_created_with_mapped_columns_and_rowversion_index() -> None:
    """A new API gets a table with every column typed per the type table and an index for rowversion reads."""
    assert plan(api(), None, None) == expected(action="create", create_rowversion_index=True)


def test_new_full_entity_needs_no_rowversion_index() -> None:
    got = plan(api(strategy="full"), None, None)
    assert got == expected(action="create", delta_strategy="full")


def test_table_dropped_by_hand_is_created_again_and_the_checkpoint_reset() -> None:
    """docs: table created again -> the new table is empty, so the checkpoint must go."""
    got = plan(api(), entity(), None)
    assert got == expected(
        action="create",
        create_rowversion_index=True,
        checkpoint_reset=["the table public.orders is created empty"],
    )


def test_table_created_again_without_a_checkpoint_resets_nothing() -> None:
    """No checkpoint (never synced, full or hash): the next sync reads every row anyway."""
    got = plan(api(), entity(checkpoint=None), None)
    assert got == expected(action="create", create_rowversion_index=True)


def test_table_created_in_another_schema_names_that_schema() -> None:
    got = plan(api(), entity(), None, schema="staging", table="orders_2")
    assert got.checkpoint_reset == ["the table staging.orders_2 is created empty"]
    assert (got.target_schema, got.target_table, got.action) == ("staging", "orders_2", "create")


def test_nothing_changed_is_unchanged() -> None:
    """Catalog spellings (character varying, timestamp(0) without time zone) equal the mapped types."""
    got = plan(api(), entity(), live())
    assert got == expected()
    assert got.changes_table is False


def test_unsyncable_api_is_reported_and_nothing_else_is_planned() -> None:
    """An API without a business key cannot be upserted: its reason is kept, the table is not touched."""
    no_key = [{**c, "is_business_key": False} for c in BASE_API_COLUMNS]
    reason = "no business key: neither business_key_columns nor is_business_key is given"
    stored_id = replace(ID, is_business_key=False, is_nullable=True)
    spec_id = replace(ID, is_business_key=False, is_nullable=True)
    narrowed = live({**BASE_LIVE, "name": "character varying(500)"}, index=False, has_rows=False)
    for stored, live_table in ((None, None), (entity([stored_id, NAME, AMOUNT, UPDATED]), narrowed)):
        got = plan(api(no_key), stored, live_table)
        assert got == expected(
            action="unsyncable",
            business_keys=[],
            columns=[spec_id, NAME, AMOUNT, UPDATED],
            desired_columns=[spec_id, NAME, AMOUNT, UPDATED],
            unsyncable_reason=reason,
        )


def test_unsyncable_api_still_reports_its_strategy_change() -> None:
    no_key = [{**c, "is_business_key": False} for c in BASE_API_COLUMNS]
    got = plan(api(no_key, strategy="hash"), entity(strategy="full"), None)
    assert (got.action, got.strategy_change, got.create_rowversion_index) == ("unsyncable", ("full", "hash"), False)


def test_metadata_warnings_are_carried_into_the_plan() -> None:
    cols = [*BASE_API_COLUMNS, {"name": "GEO", "output_alias": "geo", "data_type": "SDO_GEOMETRY"}]
    got = plan(api(cols), None, None)
    assert got.warnings == ["orders: column 'geo' has unknown type 'SDO_GEOMETRY'; stored as text"]


# -- names -----------------------------------------------------------------------------------


def test_stored_column_names_never_change() -> None:
    """A mapping stored by an earlier run is kept, and a new column cannot take its name."""
    renamed = replace(NAME, pg_name="customer_name")
    cols = [*BASE_API_COLUMNS, {"name": "CUSTOMER_NAME", "output_alias": "customer_name", "data_type": "TEXT"}]
    live_types = {**BASE_LIVE, "customer_name": "character varying(50)"}
    live_types.pop("name")
    got = plan(api(cols), entity([ID, renamed, AMOUNT, UPDATED]), live(live_types))
    added = StoredColumn("customer_name", "CUSTOMER_NAME", "TEXT", "customer_name_2", "text")
    assert got.columns == [ID, renamed, AMOUNT, UPDATED, added]
    assert got.add_columns == [added]


def test_api_column_named_like_an_audit_column_gets_another_name() -> None:
    cols = [*BASE_API_COLUMNS, {"name": "_bridge_id", "data_type": "TEXT"}]
    got = plan(api(cols), None, None)
    assert [c.pg_name for c in got.columns] == ["id", "name", "amount", "updated", "src_bridge_id"]


def test_business_keys_are_planned_under_their_postgresql_names() -> None:
    cols = [{"name": "Order No", "data_type": "NUMBER(9)", "is_business_key": True}, *BASE_API_COLUMNS[1:]]
    got = plan(api(cols), None, None)
    assert got.business_keys == ["order_no"]


# -- columns added, widened, narrowed ---------------------------------------------------------


NOTE = StoredColumn("note", "NOTE", "CLOB", "note", "text")
TAG = StoredColumn("tag", "TAG", "VARCHAR2(5)", "tag", "varchar(5)")
NOTE_API = {"name": "NOTE", "output_alias": "note", "data_type": "CLOB"}
TAG_API = {"name": "TAG", "output_alias": "tag", "data_type": "VARCHAR2(5)"}


def test_new_source_column_is_added_and_resets_the_checkpoint() -> None:
    """docs: rows already read have no value in a new column; the source need not bump row versions."""
    got = plan(api([*BASE_API_COLUMNS, NOTE_API, TAG_API]), entity(), live())
    assert got == expected(
        action="alter",
        columns=[*BASE_STORED, NOTE, TAG],
        desired_columns=[*BASE_STORED, NOTE, TAG],
        add_columns=[NOTE, TAG],
        checkpoint_reset=["new column(s) note, tag have no value in the rows already read"],
    )
    assert got.changes_table is True


def test_new_column_without_checkpoint_is_added_without_reset() -> None:
    got = plan(api([*BASE_API_COLUMNS, NOTE_API]), entity(checkpoint=None), live())
    assert (got.action, got.add_columns, got.checkpoint_reset, got.invalidate_hashes) == ("alter", [NOTE], [], False)


def test_column_dropped_by_hand_is_added_again_and_invalidates_hashes() -> None:
    """docs: the table lost its values; hashes still match the source, so they must be cleared too."""
    live_types = {"id": "integer", "name": "character varying(50)"}
    got = plan(api(), entity(), live(live_types))
    assert got == expected(
        action="alter",
        add_columns=[AMOUNT, UPDATED],
        invalidate_hashes=True,
        checkpoint_reset=["column(s) amount, updated were missing from the table and are added again"],
    )


def test_re_added_column_invalidates_hashes_even_without_checkpoint() -> None:
    """A full or hash entity has no checkpoint, but its hashes would still skip the emptied column."""
    got = plan(api(), entity(checkpoint=None), live({k: v for k, v in BASE_LIVE.items() if k != "amount"}))
    assert (got.action, got.add_columns, got.invalidate_hashes, got.checkpoint_reset) == ("alter", [AMOUNT], True, [])


def test_new_and_re_added_columns_give_both_reasons() -> None:
    got = plan(api([*BASE_API_COLUMNS, NOTE_API]), entity(), live({k: v for k, v in BASE_LIVE.items() if k != "name"}))
    assert got.add_columns == [NAME, NOTE]
    assert got.invalidate_hashes is True
    assert got.checkpoint_reset == [
        "column(s) name were missing from the table and are added again",
        "new column(s) note have no value in the rows already read",
    ]


def test_varchar_widened_is_altered_without_reset() -> None:
    """A longer varchar held every value already read unchanged: no reason to read again."""
    wide = replace(NAME, data_type="VARCHAR2(100)", pg_type="varchar(100)")
    got = plan(api(with_type("name", "VARCHAR2(100)")), entity(), live())
    assert got == expected(
        action="alter",
        columns=[ID, wide, AMOUNT, UPDATED],
        desired_columns=[ID, wide, AMOUNT, UPDATED],
        widen=[("name", "varchar(50)", "varchar(100)")],
    )
    assert got.changes_table is True


def test_integer_widened_to_bigint_without_reset() -> None:
    got = plan(api(with_type("id", "NUMBER(12)")), entity(), live())
    assert (got.action, got.widen, got.checkpoint_reset) == ("alter", [("id", "integer", "bigint")], [])


def test_more_decimals_and_fractional_seconds_reset_the_checkpoint() -> None:
    """docs: PostgreSQL rounded those values on the way in, so rows already read lack the digits."""
    cols = [
        *BASE_API_COLUMNS[:2],
        {**BASE_API_COLUMNS[2], "data_type": "NUMBER(12,5)"},
        {**BASE_API_COLUMNS[3], "data_type": "TIMESTAMP"},
    ]
    got = plan(api(cols), entity(), live())
    assert got.widen == [("amount", "numeric(10,3)", "numeric(12,5)"), ("updated", "timestamp(0)", "timestamp")]
    assert got.checkpoint_reset == ["column(s) amount, updated now keep digits that were rounded away before"]
    assert got.action == "alter"


def test_narrowing_is_breaking_and_the_live_type_is_kept() -> None:
    """A narrowing change is reported with what changes, never applied: the plan keeps the live type."""
    narrow = replace(NAME, data_type="VARCHAR2(20)", pg_type="varchar(20)")
    got = plan(api(with_type("name", "VARCHAR2(20)")), entity(), live())
    assert got == expected(
        action="breaking",
        columns=[ID, replace(narrow, pg_type="varchar(50)"), AMOUNT, UPDATED],
        desired_columns=[ID, narrow, AMOUNT, UPDATED],
        breaking=["column name: type changes from varchar(50) to varchar(20) (narrowing or incompatible)"],
    )


def test_incompatible_type_is_breaking() -> None:
    got = plan(api(with_type("amount", "VARCHAR2(10)")), entity(), live())
    assert got.breaking == ["column amount: type changes from numeric(10,3) to varchar(10) (narrowing or incompatible)"]
    assert got.columns[2].pg_type == "numeric(10,3)"


def test_breaking_wins_over_other_changes() -> None:
    got = plan(api([*with_type("name", "VARCHAR2(20)"), NOTE_API]), entity(), live())
    assert got.action == "breaking"
    assert got.add_columns == [NOTE]


# -- retire and restore ------------------------------------------------------------------------


def test_column_gone_from_metadata_is_retired_not_dropped() -> None:
    """Retired: kept in the table, no longer written, so nullable and never a key; no reason to reset."""
    retired = replace(NAME, is_nullable=True, retired=True)
    got = plan(api(without("name")), entity(), live())
    assert got == expected(
        action="alter",
        columns=[ID, AMOUNT, UPDATED, retired],
        desired_columns=[ID, AMOUNT, UPDATED, retired],
        retire=["name"],
    )
    assert got.changes_table is False


def test_retired_business_key_is_no_longer_a_key() -> None:
    cols = [{**BASE_API_COLUMNS[1], "is_business_key": True}, *BASE_API_COLUMNS[2:]]
    got = plan(api(cols), entity(), live())
    assert got.columns[-1] == replace(ID, is_nullable=True, is_business_key=False, retired=True)
    assert got.retire == ["id"]
    assert got.breaking == ["business key changes from (id) to (name)"]


def test_already_retired_column_stays_retired_quietly() -> None:
    retired = replace(UPDATED, retired=True)
    got = plan(api(without("updated")), entity([ID, NAME, AMOUNT, retired]), live())
    assert got == expected(columns=[ID, NAME, AMOUNT, retired], desired_columns=[ID, NAME, AMOUNT, retired])


def test_retired_column_keeps_the_live_type() -> None:
    """A retired column is not written: a type changed by hand is neither widened nor breaking."""
    retired = replace(UPDATED, retired=True)
    altered = {**BASE_LIVE, "updated": "timestamp with time zone"}
    got = plan(api(without("updated")), entity([ID, NAME, AMOUNT, retired]), live(altered))
    assert got.columns[-1] == replace(retired, pg_type="timestamptz")
    assert got.desired_columns[-1] == retired
    assert (got.action, got.widen, got.breaking) == ("unchanged", [], [])


def test_restored_column_resets_the_checkpoint() -> None:
    """docs: rows changed while it was retired carry stale values in it."""
    retired = replace(UPDATED, retired=True)
    got = plan(api(), entity([ID, NAME, AMOUNT, retired]), live())
    assert got == expected(
        action="alter",
        restore=["updated"],
        checkpoint_reset=["restored column(s) updated have no current value in the rows already read"],
    )
    assert got.changes_table is False


def test_several_restored_columns_are_named_in_one_reason() -> None:
    stored = entity([ID, replace(NAME, retired=True), AMOUNT, replace(UPDATED, retired=True)])
    got = plan(api(), stored, live())
    assert got.checkpoint_reset == ["restored column(s) name, updated have no current value in the rows already read"]


def test_restored_column_without_checkpoint_is_still_an_alter() -> None:
    stored = entity([ID, replace(NAME, retired=True), AMOUNT, replace(UPDATED, retired=True)], checkpoint=None)
    got = plan(api(), stored, live())
    assert (got.action, got.restore, got.checkpoint_reset) == ("alter", ["name", "updated"], [])


# -- business key, strategy, rowversion index --------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "live_keys", "breaking"),
    [
        (["name"], [("id",)], ["business key changes from (id) to (name)"]),
        (["id"], [], ["business key changes from (none) to (id)"]),
        (["id", "name"], [("id",)], ["business key changes from (id) to (id, name)"]),
        (["id"], [("id", "name")], ["business key changes from (id, name) to (id)"]),
        (["id"], [("name",), ("id",)], ["business key changes from (name) to (id)"]),  # the first is the key
        (["id", "name"], [("name", "id")], []),  # the same key, listed in another order
        (["id"], [("id",), ("name",)], []),
    ],
)
def test_business_key_change_is_breaking(
    keys: list[str], live_keys: list[tuple[str, ...]], breaking: list[str]
) -> None:
    got = plan(api(keys=keys), entity(), live(keys=live_keys))
    assert got.breaking == breaking
    assert got.business_keys == keys
    assert got.action == ("breaking" if breaking else "unchanged")


def test_strategy_change_with_checkpoint_resets_it() -> None:
    """docs: the checkpoint belongs to another way of reading."""
    got = plan(api(strategy="hash"), entity(strategy="rowversion"), live())
    assert got == expected(
        action="alter",
        delta_strategy="hash",
        strategy_change=("rowversion", "hash"),
        checkpoint_reset=["the delta strategy changes from rowversion to hash"],
    )


def test_strategy_change_alone_is_an_alter() -> None:
    got = plan(api(strategy="hash"), entity(strategy="full", checkpoint=None), live(index=False))
    assert got == expected(action="alter", delta_strategy="hash", strategy_change=("full", "hash"))


def test_switch_to_rowversion_creates_its_index() -> None:
    got = plan(api(), entity(strategy="full", checkpoint=None), live(index=False))
    assert got == expected(action="alter", strategy_change=("full", "rowversion"), create_rowversion_index=True)
    assert got.changes_table is True


def test_missing_rowversion_index_is_created() -> None:
    got = plan(api(), entity(), live(index=False))
    assert got == expected(action="alter", create_rowversion_index=True)


def test_full_entity_needs_no_rowversion_index() -> None:
    got = plan(api(strategy="full"), entity(strategy="full", checkpoint=None), live(index=False))
    assert got == expected(delta_strategy="full")


# -- checkpoint resets -------------------------------------------------------------------------


def test_emptied_table_resets_the_checkpoint() -> None:
    """docs: TRUNCATE by hand leaves nothing below the checkpoint."""
    got = plan(api(), entity(), live(has_rows=False))
    assert got == expected(action="alter", checkpoint_reset=["the table public.orders is empty"])


def test_emptied_table_without_checkpoint_is_unchanged() -> None:
    assert plan(api(), entity(checkpoint=None), live(has_rows=False)) == expected()


@pytest.mark.parametrize(
    ("stored_schema", "stored_table"),
    [("old", "orders"), ("public", "orders_2")],
)
def test_entity_moving_to_an_existing_table_resets_the_checkpoint(stored_schema: str, stored_table: str) -> None:
    """docs: that table stopped receiving rows when the entity moved away."""
    got = plan(api(), entity(schema=stored_schema, table=stored_table), live())
    assert got == expected(
        action="alter",
        checkpoint_reset=[
            f"the entity moves from {stored_schema}.{stored_table} to public.orders, which lacks the rows read since"
        ],
    )


def test_every_reason_is_listed_in_order() -> None:
    """Several reasons at once are all reported, so the operator sees each."""
    retired_name = replace(NAME, retired=True)
    cols = [
        *BASE_API_COLUMNS[:2],
        {**BASE_API_COLUMNS[2], "data_type": "NUMBER(12,5)"},
        BASE_API_COLUMNS[3],
        NOTE_API,
    ]
    live_types = {k: v for k, v in BASE_LIVE.items() if k != "updated"}
    stored = entity([ID, retired_name, AMOUNT, UPDATED], strategy="full", schema="old")
    got = plan(api(cols), stored, live(live_types, has_rows=False))
    assert got.checkpoint_reset == [
        "the entity moves from old.orders to public.orders, which lacks the rows read since",
        "the table public.orders is empty",
        "column(s) amount now keep digits that were rounded away before",
        "column(s) updated were missing from the table and are added again",
        "new column(s) note have no value in the rows already read",
        "restored column(s) name have no current value in the rows already read",
        "the delta strategy changes from full to rowversion",
    ]
    assert got.invalidate_hashes is True


def test_no_checkpoint_no_reset_whatever_changed() -> None:
    """Entities without a checkpoint read every row on each sync anyway and get no reset."""
    stored = entity([ID, replace(NAME, retired=True), AMOUNT, UPDATED], strategy="hash", checkpoint=None, schema="old")
    got = plan(api(with_type("amount", "NUMBER(12,5)")), stored, live(has_rows=False, index=False))
    assert got.checkpoint_reset == []
    assert got.action == "alter"


# -- the plan as printed ------------------------------------------------------------------------


def test_plan_json_lists_every_change() -> None:
    """``discover --dry-run --json`` shows each change with qualified table names."""
    p = EntityPlan(
        connector="crm",
        slug="orders",
        target_schema="sales",
        target_table="orders",
        delta_strategy="rowversion",
        business_keys=["id"],
        columns=[ID, NOTE],
        action="alter",
        add_columns=[NOTE, TAG],
        widen=[("name", "varchar(50)", "varchar(100)")],
        retire=["old"],
        restore=["back"],
        breaking=["b"],
        strategy_change=("full", "rowversion"),
        create_rowversion_index=True,
        warnings=["w"],
        unsyncable_reason=None,
        checkpoint_reset=["r"],
        invalidate_hashes=True,
        history_table="orders__history",
        policy_changes=["hash email", "exclude salary"],
        clear=["salary"],
        retype=[("email", "varchar(50)", "text")],
    )
    assert p.ref == "crm.orders"
    assert p.to_json() == {
        "entity": "crm.orders",
        "action": "alter",
        "table": "sales.orders",
        "delta_strategy": "rowversion",
        "business_keys": ["id"],
        "add_columns": [{"name": "note", "type": "text"}, {"name": "tag", "type": "varchar(5)"}],
        "widen": [{"name": "name", "from": "varchar(50)", "to": "varchar(100)"}],
        "retire": ["old"],
        "restore": ["back"],
        "breaking": ["b"],
        "strategy_change": ["full", "rowversion"],
        "create_rowversion_index": True,
        "warnings": ["w"],
        "unsyncable_reason": None,
        "checkpoint_reset": ["r"],
        "history_table": "sales.orders__history",
        "policy_changes": ["hash email", "exclude salary"],
        "clear": ["salary"],
        "retype": [{"name": "email", "from": "varchar(50)", "to": "text"}],
    }


def test_plan_json_of_an_unsyncable_entity_without_history_table() -> None:
    p = replace(expected(), action="unsyncable", unsyncable_reason="no usable columns")
    assert p.to_json() == {
        "entity": "crm.orders",
        "action": "unsyncable",
        "table": "public.orders",
        "delta_strategy": "rowversion",
        "business_keys": ["id"],
        "add_columns": [],
        "widen": [],
        "retire": [],
        "restore": [],
        "breaking": [],
        "strategy_change": None,
        "create_rowversion_index": False,
        "warnings": [],
        "unsyncable_reason": "no usable columns",
        "checkpoint_reset": [],
        "history_table": None,
        "policy_changes": [],
        "clear": [],
        "retype": [],
    }


@pytest.mark.parametrize(
    ("changes", "changes_table"),
    [
        ({"action": "create"}, True),
        ({"action": "alter", "add_columns": [NOTE]}, True),
        ({"action": "alter", "widen": [("name", "varchar(50)", "varchar(100)")]}, True),
        ({"action": "alter", "create_rowversion_index": True}, True),
        ({"action": "alter", "retire": ["name"], "restore": ["x"], "checkpoint_reset": ["r"]}, False),
        ({"action": "breaking", "breaking": ["b"]}, False),
        ({"action": "unchanged"}, False),
    ],
)
def test_changes_table(changes: dict[str, Any], changes_table: bool) -> None:
    """Only creating, adding, widening or indexing needs DDL on the data table."""
    assert replace(expected(), **changes).changes_table is changes_table


# -- rounding ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "rounded"),
    [
        ("numeric(10,3)", "numeric(12,5)", True),
        ("numeric(10,3)", "numeric(11,4)", True),
        ("numeric(10,3)", "numeric", True),  # unconstrained numeric keeps every decimal
        ("numeric(10, 3)", "NUMERIC(13,6)", True),
        ("numeric(10,0)", "numeric(12,2)", True),
        ("numeric(10,3)", "numeric(12,3)", False),  # more integer digits only
        ("numeric(10,3)", "numeric(10,3)", False),
        ("numeric(10,3)", "numeric(12,2)", False),
        ("timestamp(0)", "timestamp", True),
        ("timestamp(0) without time zone", "timestamp with time zone", True),
        ("timestamp(0)", "timestamptz", True),
        ("timestamp", "timestamptz", False),  # time zone added, no seconds rounded before
        ("timestamp(0)", "timestamp(0)", False),
        ("integer", "bigint", False),
        ("integer", "numeric", False),
        ("varchar(10)", "text", False),
        ("numeric", "numeric(10,3)", False),
    ],
)
def test_rounded_before(old: str, new: str, rounded: bool) -> None:
    """True exactly when PostgreSQL rounded values of old that new has room for."""
    assert _rounded_before(old, new) is rounded


# -- table names -------------------------------------------------------------------------------


def test_table_is_the_stored_one_while_the_schema_stays() -> None:
    """A stored table name never changes, even if the slug's name would now be another."""
    assert choose_table("orders", entity(table="legacy_orders"), "public", {"legacy_orders"}) == "legacy_orders"


def test_table_for_a_new_schema_is_derived_again() -> None:
    assert choose_table("orders", entity(table="legacy_orders"), "sales", set()) == "orders"


@pytest.mark.parametrize(
    ("slug", "taken", "table"),
    [
        ("orders", set(), "orders"),
        ("Order Lines", set(), "order_lines"),
        ("orders", {"orders"}, "orders_2"),
        ("orders", {"orders", "orders_2"}, "orders_3"),
        # Never a name ending in __history, which belongs to history tables.
        ("items__history", set(), "items__history_2"),
        ("items__history", {"items__history_2"}, "items__history_3"),
        ("Items  History", set(), "items__history_2"),
    ],
)
def test_new_table_name(slug: str, taken: set[str], table: str) -> None:
    assert choose_table(slug, None, "public", taken) == table
    assert not table.endswith("__history")


def test_new_table_name_does_not_change_the_taken_set() -> None:
    taken = {"orders"}
    choose_table("orders", None, "public", taken)
    assert taken == {"orders"}


@pytest.mark.parametrize(
    ("stored", "table", "schema", "taken", "history"),
    [
        # Kept while the data table stays and nobody else has it.
        (entity(history_table="orders__history_x"), "orders", "public", {"orders"}, "orders__history_x"),
        # Never chosen before: the first free name.
        (entity(), "orders", "public", {"orders"}, "orders__history"),
        (None, "orders", "public", set(), "orders__history"),
        # The data table changed (another table or schema): a name for the new one.
        (entity(history_table="orders__history_x"), "orders_2", "public", set(), "orders_2__history"),
        (entity(history_table="orders__history_x"), "orders", "sales", set(), "orders__history"),
        (entity(schema="sales", history_table="orders__history_x"), "orders", "public", set(), "orders__history"),
        # The stored name is now someone else's: the next free one.
        (
            entity(history_table="orders__history"),
            "orders",
            "public",
            {"orders__history"},
            "orders_2__history",
        ),
        (None, "orders", "public", {"orders__history", "orders_2__history"}, "orders_3__history"),
    ],
)
def test_history_table_name(stored: Entity | None, table: str, schema: str, taken: set[str], history: str) -> None:
    """docs: each entity's history table name is reserved, kept, and never another table's."""
    assert choose_history_table(table, stored, schema, taken) == history


# -- column policies (README "Column policies") ------------------------------------------------

POLICY_RESET = "column policy changes ({}): the rows already read lack the new form"
EXTRA_API: dict[str, Any] = {"name": "EXTRA", "output_alias": "extra", "data_type": "VARCHAR2(20)"}
EXTRA = StoredColumn("extra", "EXTRA", "VARCHAR2(20)", "extra", "varchar(20)")


def hashed(col: StoredColumn) -> StoredColumn:
    """The column as discovery stores it under ``hash_columns``: text, policy "hash"."""
    return replace(col, pg_type="text", policy="hash")


def excluded(col: StoredColumn) -> StoredColumn:
    """The column as discovery stores it under ``exclude_columns``: retired, policy "exclude"."""
    return replace(col, retired=True, policy="exclude")


def policy(*, exclude: tuple[str, ...] = (), hash: tuple[str, ...] = ()) -> ColumnPolicy:
    return ColumnPolicy(exclude=frozenset(exclude), hash=frozenset(hash))


def planp(
    spec: ApiSpec, stored: Entity | None, live_table: LiveTable | None, rules: ColumnPolicy | None = None
) -> EntityPlan:
    return plan_entity(
        connector="crm", target_schema="public", spec=spec, stored=stored, live=live_table, table="orders", policy=rules
    )


def test_hashing_an_existing_column_retypes_it_cleared_and_resets_the_checkpoint() -> None:
    cols = [ID, hashed(NAME), AMOUNT, UPDATED]
    got = planp(api(), entity(), live(), policy(hash=("name",)))
    assert got == expected(
        action="alter",
        columns=cols,
        desired_columns=cols,
        policy_changes=["hash name"],
        retype=[("name", "varchar(50)", "text")],
        invalidate_hashes=True,
        checkpoint_reset=[POLICY_RESET.format("hash name")],
    )


def test_unhashing_a_column_retypes_it_back_and_resets_the_checkpoint() -> None:
    stored = entity([ID, hashed(NAME), AMOUNT, UPDATED])
    got = planp(api(), stored, live({**BASE_LIVE, "name": "text"}))
    assert got == expected(
        action="alter",
        policy_changes=["unhash name"],
        retype=[("name", "text", "varchar(50)")],
        invalidate_hashes=True,
        checkpoint_reset=[POLICY_RESET.format("unhash name")],
    )


def test_hash_policy_already_applied_changes_nothing() -> None:
    cols = [ID, hashed(NAME), AMOUNT, UPDATED]
    got = planp(api(), entity(cols), live({**BASE_LIVE, "name": "text"}), policy(hash=("name",)))
    assert got == expected(columns=cols, desired_columns=cols)


def test_excluding_an_existing_column_clears_it_keeps_its_live_type_and_the_checkpoint() -> None:
    desired = [ID, NAME, excluded(AMOUNT), UPDATED]
    got = planp(api(), entity(), live({**BASE_LIVE, "amount": "numeric(12,3)"}), policy(exclude=("amount",)))
    assert got == expected(
        action="alter",
        columns=[ID, NAME, replace(excluded(AMOUNT), pg_type="numeric(12,3)"), UPDATED],
        desired_columns=desired,
        policy_changes=["exclude amount"],
        clear=["amount"],
    )
    assert got.changes_table


def test_excluding_a_new_column_never_creates_it() -> None:
    """A column new at the source and excluded from the start: no table change, no checkpoint reset."""
    desired = [ID, NAME, AMOUNT, UPDATED, excluded(EXTRA)]
    got = planp(api([*BASE_API_COLUMNS, EXTRA_API]), entity(), live(), policy(exclude=("extra",)))
    assert got == expected(action="alter", columns=desired, desired_columns=desired, policy_changes=["exclude extra"])
    assert not got.changes_table


def test_hashing_a_new_column_adds_it_as_text_with_the_policy_reason() -> None:
    desired = [ID, NAME, AMOUNT, UPDATED, hashed(EXTRA)]
    got = planp(api([*BASE_API_COLUMNS, EXTRA_API]), entity(), live(), policy(hash=("extra",)))
    assert got == expected(
        action="alter",
        columns=desired,
        desired_columns=desired,
        add_columns=[hashed(EXTRA)],
        policy_changes=["hash extra"],
        invalidate_hashes=True,
        checkpoint_reset=[POLICY_RESET.format("hash extra")],
    )


def test_policies_on_a_new_entity_are_planned_for_the_create() -> None:
    desired = [ID, hashed(NAME), excluded(AMOUNT), UPDATED]
    got = planp(api(), None, None, policy(exclude=("amount",), hash=("name",)))
    assert got == expected(
        action="create",
        columns=desired,
        desired_columns=desired,
        policy_changes=["hash name", "exclude amount"],
        create_rowversion_index=True,
    )


@pytest.mark.parametrize("in_table", [True, False])
def test_exclusion_already_applied_changes_nothing(in_table: bool) -> None:
    """Kept in the table (excluded after it existed; live type kept) or never created: nothing to do."""
    cols = [ID, NAME, excluded(AMOUNT), UPDATED]
    types = (
        {**BASE_LIVE, "amount": "numeric(12,3)"} if in_table else {k: v for k, v in BASE_LIVE.items() if k != "amount"}
    )
    got = planp(api(), entity(cols), live(types), policy(exclude=("amount",)))
    final = [ID, NAME, replace(excluded(AMOUNT), pg_type="numeric(12,3)") if in_table else excluded(AMOUNT), UPDATED]
    assert got == expected(columns=final, desired_columns=cols)


def test_lifting_an_exclusion_adds_the_column_never_created() -> None:
    stored = entity([ID, NAME, excluded(AMOUNT), UPDATED])
    got = planp(api(), stored, live({k: v for k, v in BASE_LIVE.items() if k != "amount"}))
    assert got == expected(
        action="alter",
        add_columns=[AMOUNT],
        policy_changes=["include amount"],
        invalidate_hashes=True,
        checkpoint_reset=[POLICY_RESET.format("include amount")],
    )


def test_lifting_an_exclusion_writes_the_kept_column_again() -> None:
    stored = entity([ID, NAME, excluded(AMOUNT), UPDATED])
    got = planp(api(), stored, live())
    assert got == expected(
        action="alter",
        retype=[("amount", "numeric(10,3)", "numeric(10,3)")],
        policy_changes=["include amount"],
        invalidate_hashes=True,
        checkpoint_reset=[POLICY_RESET.format("include amount")],
    )


def test_hashed_column_becoming_excluded_is_cleared_without_reset() -> None:
    stored = entity([ID, hashed(NAME), AMOUNT, UPDATED])
    desired = [ID, excluded(NAME), AMOUNT, UPDATED]
    got = planp(api(), stored, live({**BASE_LIVE, "name": "text"}), policy(exclude=("name",)))
    assert got == expected(
        action="alter",
        columns=[ID, replace(excluded(NAME), pg_type="text"), AMOUNT, UPDATED],
        desired_columns=desired,
        policy_changes=["exclude name"],
        clear=["name"],
    )


@pytest.mark.parametrize("in_table", [True, False])
def test_excluded_column_becoming_hashed_is_retyped_or_added(in_table: bool) -> None:
    stored = entity([ID, NAME, excluded(AMOUNT), UPDATED])
    types = BASE_LIVE if in_table else {k: v for k, v in BASE_LIVE.items() if k != "amount"}
    cols = [ID, NAME, hashed(AMOUNT), UPDATED]
    got = planp(api(), stored, live(types), policy(hash=("amount",)))
    assert got == expected(
        action="alter",
        columns=cols,
        desired_columns=cols,
        add_columns=[] if in_table else [hashed(AMOUNT)],
        retype=[("amount", "numeric(10,3)", "text")] if in_table else [],
        policy_changes=["hash amount"],
        invalidate_hashes=True,
        checkpoint_reset=[POLICY_RESET.format("hash amount")],
    )


def test_policy_changes_without_checkpoint_still_rewrite_every_row() -> None:
    got = planp(api(), entity(checkpoint=None), live(), policy(hash=("name",)))
    assert got.checkpoint_reset == []
    assert got.invalidate_hashes
    assert got.action == "alter"


def test_policy_reason_comes_first_and_names_only_rewriting_changes() -> None:
    """Exclusions need no rewrite: only hash/unhash/include are named; the other reasons follow."""
    stored = entity([ID, NAME, AMOUNT, hashed(UPDATED)])
    got = planp(
        api([*BASE_API_COLUMNS, EXTRA_API]),
        stored,
        live({**BASE_LIVE, "updated": "text"}, has_rows=False),
        policy(exclude=("amount",), hash=("name",)),
    )
    assert got.policy_changes == ["hash name", "exclude amount", "unhash updated"]
    assert got.checkpoint_reset == [
        POLICY_RESET.format("hash name, unhash updated"),
        "the table public.orders is empty",
        "new column(s) extra have no value in the rows already read",
    ]
    assert got.add_columns == [EXTRA]
    assert got.clear == ["amount"]
    assert got.retype == [("name", "varchar(50)", "text"), ("updated", "text", "timestamp(0)")]


def test_a_new_column_next_to_an_included_one_keeps_its_own_reason() -> None:
    """Only the column whose policy changed is left out of the added-column reasons."""
    stored = entity([ID, NAME, excluded(AMOUNT)])
    types = {k: v for k, v in BASE_LIVE.items() if k not in ("amount", "updated")}
    got = planp(api(), stored, live(types))
    assert got.add_columns == [AMOUNT, UPDATED]
    assert got.checkpoint_reset == [
        POLICY_RESET.format("include amount"),
        "new column(s) updated have no value in the rows already read",
    ]


def test_re_added_column_next_to_a_policy_change_keeps_its_reason() -> None:
    types = {k: v for k, v in BASE_LIVE.items() if k != "updated"}
    got = planp(api(), entity(), live(types), policy(exclude=("amount",)))
    assert got.add_columns == [UPDATED]
    assert got.clear == ["amount"]
    assert got.invalidate_hashes
    assert got.checkpoint_reset == ["column(s) updated were missing from the table and are added again"]


@pytest.mark.parametrize("in_table", [True, False])
def test_excluded_column_gone_from_the_metadata_stays_excluded(in_table: bool) -> None:
    """Not a policy change nor a retirement; never created when it is not in the table (no reset either)."""
    stored = entity([ID, NAME, excluded(AMOUNT), UPDATED])
    types = (
        {**BASE_LIVE, "amount": "numeric(12,3)"} if in_table else {k: v for k, v in BASE_LIVE.items() if k != "amount"}
    )
    got = planp(api(without("amount")), stored, live(types))
    desired = [ID, NAME, UPDATED, excluded(AMOUNT)]
    final = [ID, NAME, UPDATED, replace(excluded(AMOUNT), pg_type="numeric(12,3)") if in_table else excluded(AMOUNT)]
    assert got == expected(columns=final, desired_columns=desired)


def test_hashed_column_gone_from_the_metadata_is_retired_as_text() -> None:
    stored = entity([ID, NAME, AMOUNT, hashed(UPDATED)])
    got = planp(api(without("updated")), stored, live({**BASE_LIVE, "updated": "text"}))
    gone = replace(UPDATED, pg_type="text", retired=True)
    assert got == expected(
        action="alter", columns=[ID, NAME, AMOUNT, gone], desired_columns=[ID, NAME, AMOUNT, gone], retire=["updated"]
    )


def test_policy_change_plan_json() -> None:
    got = planp(api(), entity([ID, NAME, AMOUNT, hashed(UPDATED)]), live(), policy(exclude=("amount",)))
    data = got.to_json()
    assert data["policy_changes"] == ["exclude amount", "unhash updated"]
    assert data["clear"] == ["amount"]
    assert data["retype"] == [{"name": "updated", "from": "timestamp(0)", "to": "timestamp(0)"}]


@pytest.mark.parametrize(
    ("columns", "stored", "changed"),
    [
        ([hashed(NAME)], None, {"name": None}),
        ([excluded(NAME)], None, {"name": None}),
        ([NAME], None, {}),
        ([NAME], entity([ID, hashed(NAME)]), {"name": "hash"}),
        ([NAME], entity([ID, excluded(NAME)]), {"name": "exclude"}),
        ([hashed(NAME)], entity([ID, excluded(NAME)]), {"name": "exclude"}),
        ([hashed(NAME)], entity([ID, hashed(NAME)]), {}),
        # Gone from the metadata (retired, no policy): a retirement, whatever it was.
        ([replace(NAME, retired=True)], entity([ID, hashed(NAME)]), {}),
        ([replace(NAME, retired=True)], entity([ID, excluded(NAME)]), {}),
        ([ID, hashed(NAME), excluded(AMOUNT)], entity(), {"name": None, "amount": None}),
        ([replace(NAME, retired=True), hashed(AMOUNT)], None, {"amount": None}),
    ],
)
def test_changed_policies(columns: list[StoredColumn], stored: Entity | None, changed: dict[str, str | None]) -> None:
    assert _changed_policies(columns, stored) == changed


@pytest.mark.parametrize(
    ("new", "old", "text"),
    [
        ("exclude", None, "exclude credit_limit"),
        ("exclude", "hash", "exclude credit_limit"),
        ("hash", None, "hash credit_limit"),
        ("hash", "exclude", "hash credit_limit"),
        (None, "hash", "unhash credit_limit"),
        (None, "exclude", "include credit_limit"),
        (None, None, "include credit_limit"),
    ],
)
def test_describe_as_discover_dry_run_shows_it(new: str | None, old: str | None, text: str) -> None:
    col = StoredColumn("credit_limit", "CREDIT_LIMIT", "NUMBER", "credit_lim", "numeric", policy=new)
    assert _describe(col, old) == text


def test_policy_problems_name_unknown_columns_and_business_keys_per_list_sorted() -> None:
    rules = policy(exclude=("zeta", "id", "alpha"), hash=("email", "nope", "code"))
    got = policy_problems(rules, known={"id", "code", "email", "alpha"}, keys={"id", "code"})
    assert got == [
        "exclude_columns: 'id' is a business key column, which is always stored as the source sends it",
        "exclude_columns: no column named 'zeta' (use the API's column names, as 'entity show' lists)",
        "hash_columns: 'code' is a business key column, which is always stored as the source sends it",
        "hash_columns: no column named 'nope' (use the API's column names, as 'entity show' lists)",
    ]


def test_policy_problems_sorted_within_a_list() -> None:
    got = policy_problems(policy(hash=("b", "a")), known=set(), keys=set())
    assert got == [
        "hash_columns: no column named 'a' (use the API's column names, as 'entity show' lists)",
        "hash_columns: no column named 'b' (use the API's column names, as 'entity show' lists)",
    ]


def test_policy_problems_unknown_wins_over_business_key() -> None:
    got = policy_problems(policy(exclude=("id",)), known=set(), keys={"id"})
    assert got == ["exclude_columns: no column named 'id' (use the API's column names, as 'entity show' lists)"]


def test_valid_policies_have_no_problems() -> None:
    assert policy_problems(policy(exclude=("a",), hash=("b",)), known={"a", "b", "k"}, keys={"k"}) == []
    assert policy_problems(ColumnPolicy(), known=set(), keys=set()) == []


@pytest.mark.parametrize(
    ("col", "old", "have", "result", "changes"),
    [
        (excluded(AMOUNT), None, None, excluded(AMOUNT), {}),
        (
            excluded(AMOUNT),
            None,
            "numeric(12,3)",
            replace(excluded(AMOUNT), pg_type="numeric(12,3)"),
            {"clear": ["amount"]},
        ),
        (excluded(AMOUNT), "hash", "text", replace(excluded(AMOUNT), pg_type="text"), {"clear": ["amount"]}),
        # Already excluded (e.g. the stored record said so): kept, not cleared again.
        (excluded(AMOUNT), "exclude", "numeric(12,3)", replace(excluded(AMOUNT), pg_type="numeric(12,3)"), {}),
        (hashed(AMOUNT), None, None, hashed(AMOUNT), {"add_columns": [hashed(AMOUNT)]}),
        (hashed(AMOUNT), None, "numeric(10,3)", hashed(AMOUNT), {"retype": [("amount", "numeric(10,3)", "text")]}),
        (AMOUNT, "hash", "text", AMOUNT, {"retype": [("amount", "text", "numeric(10,3)")]}),
        (AMOUNT, "exclude", None, AMOUNT, {"add_columns": [AMOUNT]}),
    ],
)
def test_policy_against_live(
    col: StoredColumn, old: str | None, have: str | None, result: StoredColumn, changes: dict[str, Any]
) -> None:
    p = expected()
    assert _policy_against_live(p, col, old, have) == result
    assert p == expected(**changes)


def test_policy_against_live_normalizes_the_new_type() -> None:
    p = expected()
    col = replace(NAME, pg_type="character varying(50)")
    _policy_against_live(p, col, "hash", "text")
    assert p.retype == [("name", "text", "varchar(50)")]


def test_retired_column_coming_back_excluded_is_not_restored() -> None:
    """Back in the metadata but excluded by the file: a policy change, not a restore."""
    stored = entity([ID, NAME, replace(AMOUNT, retired=True), UPDATED])
    got = planp(api(), stored, live(), policy(exclude=("amount",)))
    assert got.restore == []
    assert got.policy_changes == ["exclude amount"]


def test_a_stored_exclusion_does_not_hide_the_restores_after_it() -> None:
    stored = entity([ID, NAME, excluded(AMOUNT), replace(UPDATED, retired=True)])
    got = planp(api(), stored, live(), policy(exclude=("amount",)))
    assert got.restore == ["updated"]


def test_a_retired_column_is_nullable_and_no_business_key() -> None:
    spec = api(
        [{**c, "is_business_key": c["output_alias"] == "name"} for c in BASE_API_COLUMNS if c["output_alias"] != "id"]
    )
    got = planp(spec, entity(), live())
    assert got.columns[-1] == replace(ID, retired=True, is_nullable=True, is_business_key=False)
    gone = planp(api(without("name")), entity(), live())
    assert gone.columns[-1] == replace(NAME, retired=True, is_nullable=True)
