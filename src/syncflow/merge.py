"""Set-wise SQL that moves staged rows into the target table (pure builders).

One statement per batch: deduplicate the staged rows on the business key
(the last occurrence wins, so duplicates inside a batch never make
``ON CONFLICT`` fail), upsert them with ``INSERT ... ON CONFLICT DO UPDATE
... WHERE`` the stored hash differs — so unchanged rows are not rewritten —
and soft-delete the rows the source sent as tombstones.

``_bridge_hash`` is ``md5`` of the row of mapped values as PostgreSQL typed
them, columns in name order, numerics through ``trim_scale``: it depends on
values, not on JSON key order or number spelling (``"1.50"`` and ``1.5``
hash alike in a ``numeric`` column).
"""

from __future__ import annotations

from collections.abc import Sequence

from psycopg import sql

from syncflow.ddl import pg_type_sql
from syncflow.store import StoredColumn

STAGE = "_sf_stage"
SEEN = "_sf_seen"


def _ids(names: Sequence[str], prefix: str | None = None) -> sql.Composed:
    if prefix:
        return sql.SQL(", ").join(sql.Identifier(prefix, n) for n in names)
    return sql.SQL(", ").join(sql.Identifier(n) for n in names)


def stage_ddl(columns: Sequence[StoredColumn], keys: Sequence[str]) -> sql.Composed:
    """The temporary staging table: typed like the target, so bad values fail at COPY."""
    cols = [
        sql.SQL("{} {}{}").format(
            sql.Identifier(c.pg_name),
            pg_type_sql(c.pg_type),
            sql.SQL(" NOT NULL" if c.pg_name in keys else ""),
        )
        for c in columns
    ]
    return sql.SQL("CREATE TEMP TABLE {} (_seq bigint NOT NULL, _rv text, _tomb boolean NOT NULL, {})").format(
        sql.Identifier(STAGE), sql.SQL(", ").join(cols)
    )


def seen_ddl(schema: str, table: str, keys: Sequence[str]) -> sql.Composed:
    """Keys seen in this run, typed exactly as in the target, for deletes and duplicate counts."""
    return sql.SQL("CREATE TEMP TABLE {seen} AS SELECT {keys} FROM {target} WITH NO DATA").format(
        seen=sql.Identifier(SEEN), keys=_ids(keys), target=sql.Identifier(schema, table)
    )


def seen_pk(keys: Sequence[str]) -> sql.Composed:
    return sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(sql.Identifier(SEEN), _ids(keys))


def copy_sql(columns: Sequence[StoredColumn]) -> sql.Composed:
    return sql.SQL("COPY {} (_seq, _rv, _tomb, {}) FROM STDIN").format(
        sql.Identifier(STAGE), _ids([c.pg_name for c in columns])
    )


def hash_expr(columns: Sequence[StoredColumn], alias: str) -> sql.Composed:
    parts = []
    for c in sorted(columns, key=lambda c: c.pg_name):
        ref = sql.Identifier(alias, c.pg_name)
        parts.append(sql.SQL("trim_scale({})").format(ref) if c.pg_type.startswith("numeric") else ref)
    return sql.SQL("md5(ROW({})::text)").format(sql.SQL(", ").join(parts))


def seen_insert(keys: Sequence[str]) -> sql.Composed:
    """Record this batch's keys; the row count is how many were new to the run."""
    return sql.SQL("INSERT INTO {seen} ({keys}) SELECT DISTINCT {keys} FROM {stage} ON CONFLICT DO NOTHING").format(
        seen=sql.Identifier(SEEN), keys=_ids(keys), stage=sql.Identifier(STAGE)
    )


def merge(schema: str, table: str, columns: Sequence[StoredColumn], keys: Sequence[str]) -> sql.Composed:
    """Upsert and tombstone one batch; returns (distinct, tombstones, inserted, updated, deleted)."""
    names = [c.pg_name for c in columns]
    non_keys = [n for n in names if n not in keys]
    target = sql.Identifier(schema, table)
    sets: list[sql.Composable] = [sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(n)) for n in non_keys]
    sets += [
        sql.SQL("_bridge_hash = EXCLUDED._bridge_hash"),
        sql.SQL("_bridge_rowversion = EXCLUDED._bridge_rowversion"),
        sql.SQL("_bridge_updated_at = now()"),
        sql.SQL("_bridge_deleted = false"),
    ]
    key_match = sql.SQL(" AND ").join(sql.SQL("t.{0} = s.{0}").format(sql.Identifier(k)) for k in keys)
    return sql.SQL(
        "WITH src AS ("
        " SELECT DISTINCT ON ({keys}) * FROM {stage} ORDER BY {keys}, _seq DESC),"
        " up AS ("
        " INSERT INTO {target} AS t ({cols}, _bridge_hash, _bridge_rowversion,"
        " _bridge_created_at, _bridge_updated_at, _bridge_deleted)"
        " SELECT {src_cols}, {hash}, s._rv, now(), now(), false FROM src s WHERE NOT s._tomb"
        " ON CONFLICT ({keys}) DO UPDATE SET {sets}"
        " WHERE t._bridge_hash IS DISTINCT FROM EXCLUDED._bridge_hash OR t._bridge_deleted"
        " OR t._bridge_rowversion IS DISTINCT FROM EXCLUDED._bridge_rowversion"
        " RETURNING (xmax = 0) AS inserted),"
        " del AS ("
        " UPDATE {target} t SET _bridge_deleted = true, _bridge_updated_at = now(), _bridge_rowversion = s._rv"
        " FROM src s WHERE s._tomb AND {key_match} AND NOT t._bridge_deleted RETURNING 1)"
        " SELECT (SELECT count(*) FROM src), (SELECT count(*) FROM src WHERE _tomb),"
        " count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted), (SELECT count(*) FROM del)"
        " FROM up"
    ).format(
        keys=_ids(keys),
        stage=sql.Identifier(STAGE),
        target=target,
        cols=_ids(names),
        src_cols=_ids(names, "s"),
        hash=hash_expr(columns, "s"),
        sets=sql.SQL(", ").join(sets),
        key_match=key_match,
    )


def _not_seen(keys: Sequence[str]) -> sql.Composed:
    match = sql.SQL(" AND ").join(sql.SQL("s.{0} = t.{0}").format(sql.Identifier(k)) for k in keys)
    return sql.SQL("NOT EXISTS (SELECT 1 FROM {} s WHERE {})").format(sql.Identifier(SEEN), match)


def delete_counts(schema: str, table: str, keys: Sequence[str]) -> sql.Composed:
    """(live rows, live rows not seen in this run): what a full sync would soft-delete."""
    return sql.SQL(
        "SELECT count(*), count(*) FILTER (WHERE {not_seen}) FROM {target} t WHERE NOT t._bridge_deleted"
    ).format(not_seen=_not_seen(keys), target=sql.Identifier(schema, table))


def soft_delete_unseen(schema: str, table: str, keys: Sequence[str]) -> sql.Composed:
    return sql.SQL(
        "UPDATE {target} t SET _bridge_deleted = true, _bridge_updated_at = now()"
        " WHERE NOT t._bridge_deleted AND {not_seen}"
    ).format(not_seen=_not_seen(keys), target=sql.Identifier(schema, table))
