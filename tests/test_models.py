"""The domain types: what the store reads back, and the derived views every module relies on."""

from __future__ import annotations

import pytest

from syncflow.models import ColumnPolicy, Entity, StoredColumn


def column(
    name: str, *, is_nullable: bool = True, is_business_key: bool = False, retired: bool = False
) -> StoredColumn:
    return StoredColumn(
        api_name=name,
        source_name=name.upper(),
        data_type="VARCHAR2",
        pg_name=name,
        pg_type="text",
        is_nullable=is_nullable,
        is_business_key=is_business_key,
        retired=retired,
    )


def test_a_stored_column_round_trips_and_ignores_keys_it_does_not_know() -> None:
    c = column("name", is_nullable=False, is_business_key=True, retired=True)
    data = c.to_json()
    assert data == {
        "api_name": "name",
        "source_name": "NAME",
        "data_type": "VARCHAR2",
        "pg_name": "name",
        "pg_type": "text",
        "is_nullable": False,
        "is_business_key": True,
        "retired": True,
        "policy": None,
    }
    assert StoredColumn.from_json({**data, "from_a_later_version": 1}) == c
    # Keys an older version did not store take their defaults.
    old = {k: v for k, v in data.items() if k not in ("is_nullable", "is_business_key", "retired", "policy")}
    assert StoredColumn.from_json(old) == column("name")


def test_an_entity_is_named_connector_dot_slug_and_writes_only_active_columns() -> None:
    e = Entity(
        uid="u",
        connector="erp",
        connector_uid="c",
        slug="items",
        api_name="Items",
        description="",
        delta_strategy="full",
        business_keys=["id"],
        target_schema="erp",
        target_table="items",
        columns=[column("id"), column("gone", retired=True), column("name")],
    )
    assert e.ref == "erp.items"
    assert [c.api_name for c in e.active_columns] == ["id", "name"]
    assert e.syncable
    assert e.last_rowversion is None


@pytest.mark.parametrize(
    ("name", "rule"),
    [("salary", "exclude"), ("email", "hash"), ("both", "exclude"), ("id", None), ("", None), ("Email", None)],
)
def test_column_policy_of(name: str, rule: str | None) -> None:
    """Excluding wins over hashing: a column listed in both is never stored."""
    policy = ColumnPolicy(exclude=frozenset({"salary", "both"}), hash=frozenset({"email", "both"}))
    assert policy.of(name) == rule


def test_default_column_policy_has_none() -> None:
    assert ColumnPolicy() == ColumnPolicy(frozenset(), frozenset())
    assert ColumnPolicy().of("anything") is None
    assert ColumnPolicy(hash=frozenset({"x"})).of("x") == "hash"
    assert ColumnPolicy(exclude=frozenset({"x"})).of("x") == "exclude"


def test_entity_table_columns_leave_out_excluded_ones_only() -> None:
    cols = [
        column("id"),
        StoredColumn("s", "S", "NUMBER", "s", "numeric", retired=True, policy="exclude"),
        StoredColumn("e", "E", "VARCHAR2", "e", "text", policy="hash"),
        column("gone", retired=True),
    ]
    e = Entity("u", "erp", "c", "items", "Items", "", "full", ["id"], "erp", "items", cols)
    assert [c.api_name for c in e.table_columns] == ["id", "e", "gone"]
    assert [c.api_name for c in e.active_columns] == ["id", "e"]
