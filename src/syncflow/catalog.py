"""What PostgreSQL's catalog says about a target table (the one read the schema plan needs)."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from syncflow.models import LiveColumn, LiveTable


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
