"""DDL for target tables, built with ``psycopg.sql`` (pure), and the catalog read.

Builders return ``sql.Composed`` and need no connection, so they are unit
tested with ``as_string()``. Identifiers only ever go through
``sql.Identifier``; types are checked against the fixed set that
:mod:`syncflow.typemap` produces before they are placed in a statement.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from syncflow.plan import LiveColumn, LiveTable
from syncflow.store import StoredColumn

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


def read_live_table(conn: psycopg.Connection[Any], schema: str, table: str) -> LiveTable | None:
    """The table as PostgreSQL has it now, or None when it does not exist."""
    row = conn.execute(
        "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p')",
        [schema, table],
    ).fetchone()
    if row is None:
        return None
    (oid,) = row
    cols = conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute"
        " WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        [oid],
    ).fetchall()
    uniques = conn.execute(
        "SELECT array(SELECT a.attname FROM unnest(con.conkey) WITH ORDINALITY k(num, ord)"
        " JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num ORDER BY k.ord)"
        " FROM pg_constraint con WHERE con.conrelid = %s AND con.contype = 'u' ORDER BY con.oid",
        [oid],
    ).fetchall()
    rv_index = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid"
        " AND a.attnum = i.indkey[0] WHERE i.indrelid = %s AND a.attname = '_bridge_rowversion')",
        [oid],
    ).fetchone()
    # Whether any row is there: an emptied table must not keep a checkpoint that says otherwise.
    has_rows = conn.execute(
        sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(schema, table))
    ).fetchone()
    return LiveTable(
        columns={str(n): LiveColumn(str(n), str(t), bool(nn)) for n, t, nn in cols},
        unique_keys=[tuple(u[0]) for u in uniques],
        rowversion_index=bool(rv_index and rv_index[0]),
        has_rows=bool(has_rows and has_rows[0]),
    )


def invalidate_hashes(schema: str, table: str) -> sql.Composed:
    """Forget the stored row hashes, so that the next sync rewrites every row it reads once."""
    return sql.SQL("UPDATE {} SET _bridge_hash = NULL WHERE _bridge_hash IS NOT NULL").format(
        sql.Identifier(schema, table)
    )
