"""Record history: one row per version of each record, beside the target table.

Opt-in per entity (``history = true`` in the file, or ``entity set --history``).
The history table (``<table>__history``; its name is chosen by discovery and
stored with the entity, see :func:`table_name`) holds the business key, every data
column as it became, ``_bridge_operation`` (insert, update, delete,
undelete), ``_bridge_run_uid``, ``_bridge_rowversion`` and the validity
interval ``[_bridge_valid_from, _bridge_valid_to)`` (``valid_to`` null for the
current version), indexed on (key, valid_from) so "what did this record look
like at time T" is one index lookup.

Versions are written by the merge statement itself (see
:func:`syncflow.merge.merge`), in the same transaction as the change: the
history never disagrees with the table, and a rolled-back batch leaves none.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg import sql
from psycopg.rows import dict_row

from syncflow import catalog, ddl
from syncflow.errors import SyncFlowError
from syncflow.models import Entity, StoredColumn
from syncflow.naming import history_table_name
from syncflow.store import Conn
from syncflow.typemap import is_widening, normalize


def table_name(entity: Entity) -> str:
    """The entity's history table: the name discovery stored, else ``<table>__history``.

    Discovery reserves the name for every entity (history on or off) and
    never gives a data table a name ending in ``__history``, so the two
    kinds of table cannot collide, whatever order the APIs appear in.
    """
    return entity.history_table or history_table_name(entity.target_table)


def create_sql(schema: str, table: str, columns: Sequence[StoredColumn], keys: Sequence[str]) -> sql.Composed:
    cols = [sql.SQL("{} {}").format(sql.Identifier(c.pg_name), ddl.pg_type_sql(c.pg_type)) for c in columns]
    return sql.SQL(
        "CREATE TABLE {t} (_bridge_history_id bigserial PRIMARY KEY, {cols},"
        " _bridge_operation text NOT NULL CHECK (_bridge_operation IN ('insert', 'update', 'delete', 'undelete')),"
        " _bridge_run_uid uuid, _bridge_rowversion text,"
        " _bridge_valid_from timestamptz NOT NULL, _bridge_valid_to timestamptz);"
        " CREATE INDEX {idx} ON {t} ({keys}, _bridge_valid_from);"
        " CREATE INDEX {cur} ON {t} ({keys}) WHERE _bridge_valid_to IS NULL"
    ).format(
        cur=sql.Identifier(ddl.derived_name(table, "current_idx")),
        t=sql.Identifier(schema, table),
        cols=sql.SQL(", ").join(cols),
        idx=sql.Identifier(ddl.derived_name(table, "key_idx")),
        keys=sql.SQL(", ").join(sql.Identifier(k) for k in keys),
    )


def ensure(conn: Conn, entity: Entity) -> str:
    """Create (and seed from the current rows) or evolve the history table; returns its name.

    Seeding records each existing row as it is now (``insert``, or ``delete``
    for a soft-deleted one) valid from its last change, so history starts
    from the state at the moment it was turned on.
    """
    name = table_name(entity)
    schema = entity.target_schema
    live = catalog.read_live_table(conn, schema, name)
    columns = entity.table_columns  # an excluded column is never copied into history
    if live is not None and "_bridge_history_id" not in live.columns:
        raise SyncFlowError(
            f"{entity.ref}: {schema}.{name} is not a history table, so history cannot be kept there;"
            f" run 'syncflow discover {entity.connector}' to give the history table a free name"
        )
    if live is None:
        conn.execute(create_sql(schema, name, columns, entity.business_keys))
        names = sql.SQL(", ").join(sql.Identifier(c.pg_name) for c in columns)
        conn.execute(
            sql.SQL(
                "INSERT INTO {h} ({cols}, _bridge_operation, _bridge_rowversion, _bridge_valid_from)"
                " SELECT {cols}, CASE WHEN _bridge_deleted THEN 'delete' ELSE 'insert' END, _bridge_rowversion,"
                " _bridge_updated_at FROM {t}"
            ).format(h=sql.Identifier(schema, name), cols=names, t=sql.Identifier(schema, entity.target_table))
        )
        return name
    for col in columns:  # schema changes of the target apply here too
        have = live.columns.get(col.pg_name)
        if have is None:
            conn.execute(ddl.add_column(schema, name, col))
        elif normalize(have.pg_type) != normalize(col.pg_type) and is_widening(have.pg_type, col.pg_type):
            conn.execute(ddl.widen_column(schema, name, col.pg_name, col.pg_type))
    return name


def versions(conn: Conn, entity: Entity, key: dict[str, str], *, as_of: datetime | None = None) -> list[dict[str, Any]]:
    """A record's versions, oldest first; with ``as_of`` the one valid then."""
    name = table_name(entity)
    if catalog.read_live_table(conn, entity.target_schema, name) is None:
        return []
    by_name = {c.pg_name: c for c in entity.columns}
    where: list[sql.Composable] = []
    params: list[Any] = []
    for k in entity.business_keys:
        where.append(sql.SQL("{} = CAST(%s AS {})").format(sql.Identifier(k), ddl.pg_type_sql(by_name[k].pg_type)))
        params.append(key[k])
    if as_of is not None:
        where.append(sql.SQL("_bridge_valid_from <= %s AND (_bridge_valid_to IS NULL OR _bridge_valid_to > %s)"))
        params += [as_of, as_of]
    query = sql.SQL("SELECT * FROM {} WHERE {} ORDER BY _bridge_valid_from, _bridge_history_id").format(
        sql.Identifier(entity.target_schema, name), sql.SQL(" AND ").join(where)
    )
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        found = cur.fetchall()
    out = []
    for row in found:
        out.append(
            {
                "operation": row["_bridge_operation"],
                "run_uid": str(row["_bridge_run_uid"]) if row["_bridge_run_uid"] else None,
                "valid_from": row["_bridge_valid_from"].isoformat(),
                "valid_to": row["_bridge_valid_to"].isoformat() if row["_bridge_valid_to"] else None,
                "row_version": row["_bridge_rowversion"],
                "data": {c.pg_name: row.get(c.pg_name) for c in entity.columns},
            }
        )
    return out
