"""DDL for target tables, built with ``psycopg.sql`` (pure: the catalog is read in :mod:`syncflow.catalog`).

Builders return ``sql.Composed`` and need no connection, so they are unit
tested with ``as_string()``. Identifiers only ever go through
``sql.Identifier``; types are checked against the fixed set that
:mod:`syncflow.typemap` produces before they are placed in a statement.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

from psycopg import sql

from syncflow.models import StoredColumn

_SAFE_TYPE_RE = re.compile(
    r"^(text|integer|bigint|real|double precision|date|timestamp|timestamp\(0\)|timestamptz"
    r"|boolean|bytea|jsonb|numeric|numeric\(\d{1,4},\d{1,4}\)|varchar\(\d{1,8}\))$"
)


def pg_type_sql(pg_type: str) -> sql.SQL:
    """A type from the fixed set as SQL; anything else is refused."""
    if not _SAFE_TYPE_RE.match(pg_type):
        raise ValueError(f"refusing to use {pg_type!r} as a column type")
    return sql.SQL(pg_type)


def derived_name(table: str, suffix: str) -> str:
    """``<table>_<suffix>`` within 63 bytes, with a hash when it has to be cut."""
    name = f"{table}_{suffix}"
    if len(name.encode()) <= 63:
        return name
    digest = hashlib.sha256(table.encode()).hexdigest()[:8]
    return f"{table[: 63 - len(suffix) - 10]}_{digest}_{suffix}"


def create_schema(schema: str) -> sql.Composed:
    return sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))


def create_table(schema: str, table: str, columns: Sequence[StoredColumn], keys: Sequence[str]) -> sql.Composed:
    """The target table: mapped columns, audit columns, UNIQUE over the business key."""
    parts: list[sql.Composable] = [
        sql.SQL("_bridge_id uuid PRIMARY KEY DEFAULT gen_random_uuid()"),
    ]
    for col in columns:
        parts.append(
            sql.SQL("{} {}{}").format(
                sql.Identifier(col.pg_name),
                pg_type_sql(col.pg_type),
                sql.SQL(" NOT NULL") if col.pg_name in keys else sql.SQL(""),
            )
        )
    parts += [
        sql.SQL("_bridge_created_at timestamptz NOT NULL DEFAULT now()"),
        sql.SQL("_bridge_updated_at timestamptz NOT NULL DEFAULT now()"),
        sql.SQL("_bridge_hash text"),
        sql.SQL("_bridge_deleted boolean NOT NULL DEFAULT false"),
        sql.SQL("_bridge_rowversion text"),
        sql.SQL("CONSTRAINT {} UNIQUE ({})").format(
            sql.Identifier(derived_name(table, "bk")),
            sql.SQL(", ").join(sql.Identifier(k) for k in keys),
        ),
    ]
    return sql.SQL("CREATE TABLE {} (\n    {}\n)").format(sql.Identifier(schema, table), sql.SQL(",\n    ").join(parts))


def add_column(schema: str, table: str, col: StoredColumn) -> sql.Composed:
    """New columns are always nullable: existing rows have no value for them."""
    return sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
        sql.Identifier(schema, table), sql.Identifier(col.pg_name), pg_type_sql(col.pg_type)
    )


def widen_column(schema: str, table: str, column: str, new_type: str) -> sql.Composed:
    return sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {}").format(
        sql.Identifier(schema, table), sql.Identifier(column), pg_type_sql(new_type)
    )


def create_rowversion_index(schema: str, table: str) -> sql.Composed:
    return sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (_bridge_rowversion)").format(
        sql.Identifier(derived_name(table, "rowversion_idx")), sql.Identifier(schema, table)
    )


def invalidate_hashes(schema: str, table: str) -> sql.Composed:
    """Forget the stored row hashes, so that the next sync rewrites every row it reads once."""
    return sql.SQL("UPDATE {} SET _bridge_hash = NULL WHERE _bridge_hash IS NOT NULL").format(
        sql.Identifier(schema, table)
    )


def retype_clearing(schema: str, table: str, column: str, new_type: str) -> sql.Composed:
    """Change a column's type and clear its values (a column hashed or no longer hashed)."""
    return sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {} USING NULL").format(
        sql.Identifier(schema, table), sql.Identifier(column), pg_type_sql(new_type)
    )


def clear_columns(schema: str, table: str, columns: Sequence[str]) -> sql.Composed:
    """Set the columns NULL in every row (columns newly excluded)."""
    return sql.SQL("UPDATE {} SET {}").format(
        sql.Identifier(schema, table),
        sql.SQL(", ").join(sql.SQL("{} = NULL").format(sql.Identifier(c)) for c in columns),
    )
