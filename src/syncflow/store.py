"""SyncFlow's own metadata tables: connectors and entities.

Plain functions over a psycopg connection. Every query names the metadata
schema through ``sql.Identifier``; values are always parameters.
"""

from __future__ import annotations

import socket
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from syncflow.config import LoadedConfig
from syncflow.errors import DatabaseError, UsageError
from syncflow.models import Entity, StoredColumn

Conn = psycopg.Connection[Any]
T = TypeVar("T")


def one(row: T | None, what: str) -> T:
    """The row a statement that always returns one did return (asserts vanish under ``python -O``)."""
    if row is None:
        raise DatabaseError(f"{what} returned no row")
    return row


_ENTITY_SELECT = """
SELECT e.uid::text AS uid, c.name AS connector, e.connector_uid::text AS connector_uid,
       e.slug, e.api_name, e.description, e.delta_strategy, e.business_keys,
       e.target_schema, e.target_table, e.columns, e.syncable, e.unsyncable_reason,
       e.needs_attention, e.pending_change, e.missing_at_source, e.sync_enabled,
       e.sync_interval_seconds, e.page_size, e.last_sync_at, e.last_sync_status,
       e.last_success_at, e.last_rowversion, e.consecutive_failures, e.history_enabled,
       e.history_table
FROM {entities} e JOIN {connectors} c ON c.uid = e.connector_uid
"""


_COLUMN_TEXT = ("api_name", "source_name", "data_type", "pg_name", "pg_type")
_COLUMN_FLAGS = ("is_nullable", "is_business_key", "retired")


def _stored_columns(raw: Any) -> list[StoredColumn]:
    """The stored column list, or ValueError saying what is wrong with it."""
    if not isinstance(raw, list):
        raise ValueError("columns is not a list")
    columns = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ValueError(f"column #{i + 1} is not an object")
        bad = [f for f in _COLUMN_TEXT if not isinstance(item.get(f), str) or not item[f]]
        bad += [f for f in _COLUMN_FLAGS if f in item and not isinstance(item[f], bool)]
        if bad:
            raise ValueError(f"column #{i + 1} has no valid {', '.join(bad)}")
        columns.append(StoredColumn.from_json(item))
    return columns


def _entity(row: dict[str, Any]) -> Entity:
    """An entity from its row; unreadable metadata makes it need attention instead of crashing."""
    row = dict(row)
    try:
        row["columns"] = _stored_columns(row["columns"])
        keys = row["business_keys"]
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise ValueError("business_keys is not a list of column names")
        if not set(keys) <= {c.pg_name for c in row["columns"]}:
            raise ValueError("business_keys names columns that are not stored")
        row["business_keys"] = list(keys)
    except ValueError as exc:
        row["columns"], row["business_keys"] = [], []
        row["needs_attention"] = (
            f"its stored metadata is unreadable: {exc}; run 'syncflow discover {row['connector']}' to rebuild it"
        )
    return Entity(**row)


def _q(schema: str, text: str) -> sql.Composed:
    return sql.SQL(text).format(
        entities=sql.Identifier(schema, "entities"),
        connectors=sql.Identifier(schema, "connectors"),
        runs=sql.Identifier(schema, "sync_runs"),
        rejects=sql.Identifier(schema, "sync_rejects"),
    )


def mirror_connectors(conn: Conn, schema: str, config: LoadedConfig) -> None:
    """Make ``connectors`` match the file; ones gone from the file turn inactive.

    Rows are compared first and only differences are written, so that an
    unchanged file writes nothing and a row lock held elsewhere on a
    connector does not block every command.
    """
    wanted = {
        name: (c.base_url, c.token_env, c.target_schema or name, str(c.verify_tls).lower(), True)
        for name, c in config.settings.connectors.items()
    }
    rows = conn.execute(
        _q(schema, "SELECT name, base_url, token_env, target_schema, verify_tls, is_active FROM {connectors}")
    ).fetchall()
    current = {str(r[0]): tuple(r[1:]) for r in rows}
    stale = [name for name, values in current.items() if name not in wanted and values[-1]]
    changed = {name: values for name, values in wanted.items() if current.get(name) != values}
    if not stale and not changed:
        return
    with conn.transaction():
        for name, (base_url, token_env, target_schema, verify_tls, _active) in changed.items():
            conn.execute(
                _q(
                    schema,
                    "INSERT INTO {connectors} (name, base_url, token_env, target_schema, verify_tls)"
                    " VALUES (%s, %s, %s, %s, %s)"
                    " ON CONFLICT (name) DO UPDATE SET base_url = EXCLUDED.base_url,"
                    " token_env = EXCLUDED.token_env, target_schema = EXCLUDED.target_schema,"
                    " verify_tls = EXCLUDED.verify_tls, is_active = true, updated_at = now()",
                ),
                [name, base_url, token_env, target_schema, verify_tls],
            )
        if stale:
            conn.execute(
                _q(schema, "UPDATE {connectors} SET is_active = false, updated_at = now() WHERE name = ANY(%s)"),
                [stale],
            )


def connector_uid(conn: Conn, schema: str, name: str) -> str:
    row = conn.execute(_q(schema, "SELECT uid::text FROM {connectors} WHERE name = %s"), [name]).fetchone()
    if row is None:
        raise UsageError(f"connector {name!r} is not registered")
    return str(row[0])


def list_entities(conn: Conn, schema: str, *, connector: str | None = None) -> list[Entity]:
    """Entities, optionally of one connector, ordered by reference."""
    query = _ENTITY_SELECT + (" WHERE c.name = %s" if connector else "") + " ORDER BY c.name, e.slug"
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_q(schema, query), [connector] if connector else [])
        return [_entity(r) for r in cur.fetchall()]


def get_entity(conn: Conn, schema: str, ref: str) -> Entity:
    """The entity named ``connector.slug``, or a usage error saying what exists."""
    connector, dot, slug = ref.partition(".")
    if not dot or not connector or not slug:
        raise UsageError(f"{ref!r} is not an entity reference: use CONNECTOR.SLUG, e.g. erp.items")
    query = _ENTITY_SELECT + " WHERE c.name = %s AND e.slug = %s"
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_q(schema, query), [connector, slug])
        row = cur.fetchone()
    if row is None:
        raise UsageError(f"no entity {ref!r}: run 'syncflow discover {connector}' or see 'syncflow entities'")
    return _entity(row)


def save_entity(conn: Conn, schema: str, entity: Entity, *, reset_checkpoint: bool = False) -> str:
    """Insert or update the entity's discovered definition; returns its uid.

    The checkpoint is the sync's to move: discovery only ever resets it
    (``reset_checkpoint``), never writes back a value it read earlier, which a
    sync may have moved on from in the meantime. ``entity.last_rowversion`` is ignored.
    """
    row = conn.execute(
        _q(
            schema,
            "INSERT INTO {entities} (connector_uid, slug, api_name, description, delta_strategy,"
            " business_keys, target_schema, target_table, columns, syncable, unsyncable_reason,"
            " needs_attention, pending_change, missing_at_source, history_table, discovered_at)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, false, %s, now())"
            " ON CONFLICT (connector_uid, slug) DO UPDATE SET api_name = EXCLUDED.api_name,"
            " description = EXCLUDED.description, delta_strategy = EXCLUDED.delta_strategy,"
            " business_keys = EXCLUDED.business_keys, target_schema = EXCLUDED.target_schema,"
            " target_table = EXCLUDED.target_table, columns = EXCLUDED.columns,"
            " syncable = EXCLUDED.syncable, unsyncable_reason = EXCLUDED.unsyncable_reason,"
            " needs_attention = EXCLUDED.needs_attention, pending_change = EXCLUDED.pending_change,"
            " missing_at_source = false, history_table = EXCLUDED.history_table,"
            " last_rowversion = CASE WHEN %s THEN NULL ELSE {entities}.last_rowversion END,"
            " discovered_at = now(), updated_at = now()"
            " RETURNING uid::text",
        ),
        [
            entity.connector_uid,
            entity.slug,
            entity.api_name,
            entity.description,
            entity.delta_strategy,
            Jsonb(entity.business_keys),
            entity.target_schema,
            entity.target_table,
            Jsonb([c.to_json() for c in entity.columns]),
            entity.syncable,
            entity.unsyncable_reason,
            entity.needs_attention,
            Jsonb(entity.pending_change) if entity.pending_change is not None else None,
            entity.history_table,
            reset_checkpoint,
        ],
    ).fetchone()
    return str(one(row, "storing the entity")[0])


def mark_missing(conn: Conn, schema: str, connector_uid_: str, present: list[str]) -> list[str]:
    """Flag entities whose API is gone from discovery; their tables are kept."""
    rows = conn.execute(
        _q(
            schema,
            "UPDATE {entities} SET missing_at_source = true, updated_at = now()"
            " WHERE connector_uid = %s AND NOT (slug = ANY(%s)) AND NOT missing_at_source"
            " RETURNING slug",
        ),
        [connector_uid_, present],
    ).fetchall()
    return [str(r[0]) for r in rows]


def update_settings(
    conn: Conn,
    schema: str,
    entity: Entity,
    *,
    interval_seconds: int | None = None,
    enabled: bool | None = None,
    page_size: int | None = None,
    history: bool | None = None,
) -> None:
    """Change an entity's sync settings in the database (file overrides still win)."""
    conn.execute(
        _q(
            schema,
            "UPDATE {entities} SET sync_interval_seconds = COALESCE(%s, sync_interval_seconds),"
            " sync_enabled = COALESCE(%s, sync_enabled), page_size = COALESCE(%s, page_size),"
            " history_enabled = COALESCE(%s, history_enabled), updated_at = now() WHERE uid = %s",
        ),
        [interval_seconds, enabled, page_size, history, entity.uid],
    )


def taken_tables(conn: Conn, schema: str, target_schema: str, exclude_uid: str | None) -> set[str]:
    """Table names other entities use in a target schema: data and history tables."""
    rows = conn.execute(
        _q(
            schema,
            "SELECT t FROM {entities}, LATERAL (VALUES (target_table), (history_table)) v(t)"
            " WHERE target_schema = %s AND t IS NOT NULL AND (%s::uuid IS NULL OR uid <> %s::uuid)",
        ),
        [target_schema, exclude_uid, exclude_uid],
    ).fetchall()
    return {str(r[0]) for r in rows}


def hostname() -> str:
    return socket.gethostname()
