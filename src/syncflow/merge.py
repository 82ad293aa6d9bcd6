"""Set-wise SQL that moves staged rows into the target table (pure builders).

One statement per batch: deduplicate the staged rows on the business key
(the last occurrence wins, so duplicates inside a batch never make
``ON CONFLICT`` fail), upsert them with ``INSERT ... ON CONFLICT DO UPDATE
... WHERE`` the stored hash differs — so unchanged rows are not rewritten —
and soft-delete the rows the source sent as tombstones. A batch of live rows
into a table the run found empty needs none of that: :func:`insert_new`.

``_bridge_hash`` is ``hash_record_extended`` (64 bits, as text) of the row of
mapped values as PostgreSQL typed them, columns in name order. Each type's
own hash is value-based, so the hash does not depend on JSON key order or on
number spelling (``"1.50"`` and ``1.5`` hash alike in a ``numeric`` column),
and it is about four times cheaper than ``md5`` of the row's text.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from psycopg import sql

from syncflow.ddl import pg_type_sql
from syncflow.models import StoredColumn

STAGE = "_sf_stage"
# The tombstones a range-parallel run has read (key, row version): an older live version of such a key that
# arrives later is not written, even when the table never had the key (merge ``versioned``).
DEAD = "_sf_dead"
SEEN = "_sf_seen"
# The keys of the reads before the last one: counted (every row a run wrote was fetched), never compared with.
SEEN_EARLIER = "_sf_seen_earlier"
# Staging's own columns. Data columns never start with ``_bridge_`` (the naming rules reserve the
# prefix), so no API column can collide with these or with the merge's internal names.
STAGE_COLUMNS = ("_bridge_seq", "_bridge_rv", "_bridge_tomb")


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
    return sql.SQL(
        "CREATE TEMP TABLE {} (_bridge_seq bigint NOT NULL, _bridge_rv text, _bridge_tomb boolean NOT NULL, {})"
    ).format(sql.Identifier(STAGE), sql.SQL(", ").join(cols))


def seen_ddl(schema: str, table: str, keys: Sequence[str]) -> sql.Composed:
    """Keys staged in this run, typed as in the target: for deletes and duplicate counts.

    A plain heap without an index: appending is cheap, and the one anti-join
    at the end of a full sync hashes it.
    """
    return sql.SQL("CREATE TEMP TABLE {seen} AS SELECT {keys} FROM {target} WITH NO DATA").format(
        seen=sql.Identifier(SEEN), keys=_ids(keys), target=sql.Identifier(schema, table)
    )


def dead_ddl(schema: str, table: str, keys: Sequence[str]) -> sql.Composed:
    """The run's tombstones: keys typed as in the target, with their row version."""
    return sql.SQL(
        "CREATE TEMP TABLE {dead} AS SELECT {keys}, NULL::text AS _bridge_rv FROM {target} WITH NO DATA"
    ).format(dead=sql.Identifier(DEAD), keys=_ids(keys), target=sql.Identifier(schema, table))


def dead_insert(keys: Sequence[str]) -> sql.Composed:
    """Record the staged batch's tombstones (before its merge)."""
    return sql.SQL(
        "INSERT INTO {dead} ({keys}, _bridge_rv) SELECT {keys}, _bridge_rv FROM {stage} WHERE _bridge_tomb"
    ).format(dead=sql.Identifier(DEAD), keys=_ids(keys), stage=sql.Identifier(STAGE))


def seen_stats(keys: Sequence[str]) -> sql.Composed:
    """(keys staged, distinct keys) over the whole run."""
    return sql.SQL(
        "SELECT (SELECT count(*) FROM {seen}), (SELECT count(*) FROM (SELECT DISTINCT {keys} FROM {seen}) d)"
    ).format(seen=sql.Identifier(SEEN), keys=_ids(keys))


def keep_earlier_seen() -> sql.Composed:
    """Move the seen keys aside before a verification read (creating the table the first time)."""
    return sql.SQL(
        "CREATE TEMP TABLE IF NOT EXISTS {earlier} AS SELECT * FROM {seen} WITH NO DATA;"
        " INSERT INTO {earlier} SELECT * FROM {seen}; TRUNCATE {seen}"
    ).format(earlier=sql.Identifier(SEEN_EARLIER), seen=sql.Identifier(SEEN))


def distinct_seen_all(keys: Sequence[str], *, earlier: bool) -> sql.Composed:
    """Distinct keys over every read of the run (the last one, and with ``earlier`` the ones before it)."""
    if not earlier:
        return sql.SQL("SELECT count(*) FROM (SELECT DISTINCT {keys} FROM {seen}) d").format(
            keys=_ids(keys), seen=sql.Identifier(SEEN)
        )
    return sql.SQL("SELECT count(*) FROM (SELECT {keys} FROM {seen} UNION SELECT {keys} FROM {earlier}) d").format(
        keys=_ids(keys), seen=sql.Identifier(SEEN), earlier=sql.Identifier(SEEN_EARLIER)
    )


def copy_sql(columns: Sequence[StoredColumn]) -> sql.Composed:
    return sql.SQL("COPY {} (_bridge_seq, _bridge_rv, _bridge_tomb, {}) FROM STDIN").format(
        sql.Identifier(STAGE), _ids([c.pg_name for c in columns])
    )


def hash_expr(columns: Sequence[StoredColumn], alias: str) -> sql.Composed:
    """The row hash. ``jsonb`` goes in as text: jsonb's own hash gives ``[]``, ``{}`` and NULL the same
    value, and ``1`` the same as ``[[1]]``, so a change between them would go unnoticed."""
    parts = [
        sql.SQL("{}::text").format(sql.Identifier(alias, c.pg_name))
        if c.pg_type == "jsonb"
        else sql.Identifier(alias, c.pg_name)
        for c in sorted(columns, key=lambda c: c.pg_name)
    ]
    return sql.SQL("hash_record_extended(ROW({}), 0)::text").format(sql.SQL(", ").join(parts))


def seen_insert(keys: Sequence[str]) -> sql.Composed:
    """Record this batch's keys."""
    return sql.SQL("INSERT INTO {seen} ({keys}) SELECT {keys} FROM {stage}").format(
        seen=sql.Identifier(SEEN), keys=_ids(keys), stage=sql.Identifier(STAGE)
    )


def insert_new(schema: str, table: str, columns: Sequence[StoredColumn]) -> sql.Composed:
    """Insert every staged row as it is: a batch of live rows, no repeated key, into a table the run found
    empty, without history or row-version ordering to respect. What :func:`merge` with ``plain_insert``
    writes for such a batch, without its CTEs (the staged rows materialised twice, counted three times):
    the caller takes the counts from the row count. A key already stored raises UniqueViolation.
    """
    names = [c.pg_name for c in columns]
    return sql.SQL(
        "INSERT INTO {target} ({cols}, _bridge_hash, _bridge_rowversion, _bridge_created_at, _bridge_updated_at,"
        " _bridge_deleted) SELECT {src_cols}, {hash}, s._bridge_rv, now(), now(), false FROM {stage} s"
    ).format(
        target=sql.Identifier(schema, table),
        cols=_ids(names),
        src_cols=_ids(names, "s"),
        hash=hash_expr(columns, "s"),
        stage=sql.Identifier(STAGE),
    )


def newer(a: sql.Composable, b: sql.Composable) -> sql.Composed:
    """SQL: row version ``a`` is above ``b`` as the source orders them (digit strings as integers,
    else as strings by code point, as :func:`syncflow.pages.compare_rowversions`); never NULL."""
    return sql.SQL(
        "coalesce(CASE WHEN {a} ~ '^[0-9]+$' AND {b} ~ '^[0-9]+$'"
        " THEN (length(ltrim({a}, '0')), ltrim({a}, '0') COLLATE \"C\")"
        " > (length(ltrim({b}, '0')), ltrim({b}, '0') COLLATE \"C\")"
        ' ELSE {a} COLLATE "C" > {b} COLLATE "C" END, false)'
    ).format(a=a, b=b)


def merge(  # noqa: PLR0913 - the statement's target, then keyword-only switches
    schema: str,
    table: str,
    columns: Sequence[StoredColumn],
    keys: Sequence[str],
    *,
    dedup: bool = True,
    prefilter: bool = True,
    plain_insert: bool = False,
    history: str | None = None,
    run_uid: str | None = None,
    since: datetime | None = None,
    versioned: bool = False,
) -> sql.Composed:
    """Upsert and tombstone one batch; returns (distinct, tombstones, inserted, updated, deleted).

    Unchanged rows are filtered out by a join on the key before the upsert, so
    they are neither rewritten nor even locked. ``dedup`` adds the
    ``DISTINCT ON`` (last occurrence wins) that a batch with a repeated key needs.
    Without ``prefilter`` (a table that was empty when the run began) every
    row goes straight to the upsert; with ``plain_insert`` it is a plain
    ``INSERT`` (no speculative insertion), which raises UniqueViolation if a key
    is already there: the caller then falls back to the upsert. With
    ``history`` (a table in the same schema) the same statement closes each
    changed record's current version and appends the new one.

    ``since`` (the run's start, by the database clock) makes a run count each
    key's writes once: a row written at or after it was already counted by an
    earlier batch or read of the same run, so rewriting it is not another
    update (a verification read that meets a row changed since the first read
    wrote it). Without ``prefilter`` only rows *inserted* since are known.

    ``versioned`` (a range-parallel read, whose pages arrive out of row-version
    order) never lets a row this run wrote be overwritten or deleted by an
    older row version of the same key, nor a key this run read a newer
    tombstone of be written (``DEAD``, filled by :func:`dead_insert`). Within a
    batch the last occurrence of a key still wins: a versioned run's staging
    never stages an older version after a newer one (``Stage.add``).
    """
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

    def match(left: str, right: str) -> sql.Composed:
        return sql.SQL(" AND ").join(
            sql.SQL("{0}.{2} = {1}.{2}").format(sql.Identifier(left), sql.Identifier(right), sql.Identifier(k))
            for k in keys
        )

    source = (
        sql.SQL(
            "SELECT DISTINCT ON ({keys}) s.*, {hash} AS _bridge_h FROM {stage} s ORDER BY {keys}, s._bridge_seq DESC"
        )
        if dedup
        else sql.SQL("SELECT s.*, {hash} AS _bridge_h FROM {stage} s")
    ).format(
        keys=_ids(keys),
        hash=hash_expr(columns, "s"),
        stage=sql.Identifier(STAGE),
    )
    # The lateral LIMIT 1 makes PostgreSQL probe the key index once per staged row; a plain
    # join may be planned as a hash join that scans the whole target for every batch.
    since_sql = sql.Literal(since) if since is not None else sql.SQL("NULL::timestamptz")

    def kept(incoming: str, column: str = "_bridge_rv") -> sql.Composable:
        """This run wrote the stored row, from a higher row version than the incoming one: keep it."""
        if not versioned or since is None:
            return sql.SQL("")
        return sql.SQL(" AND NOT (t._bridge_updated_at >= {since} AND {newer})").format(
            since=since_sql,
            newer=newer(sql.SQL("t._bridge_rowversion"), sql.Identifier(incoming, column)),
        )

    # A tombstone of this run with a higher row version: the key is gone, whatever the table holds.
    gone = (
        sql.SQL(" AND NOT EXISTS (SELECT 1 FROM {dead} d WHERE {match} AND {newer})").format(
            dead=sql.Identifier(DEAD),
            match=match("d", "s"),
            newer=newer(sql.SQL("d._bridge_rv"), sql.SQL("s._bridge_rv")),
        )
        if versioned
        else sql.SQL("")
    )
    changed = (
        sql.SQL(
            "SELECT s.*, t._bridge_deleted AS _bridge_was_deleted,"
            " coalesce(t._bridge_updated_at >= {since} AND t._bridge_created_at < {since}, false) AS _bridge_again"
            " FROM src s LEFT JOIN LATERAL (SELECT t._bridge_id, t._bridge_hash, t._bridge_deleted,"
            " t._bridge_rowversion, t._bridge_updated_at, t._bridge_created_at"
            " FROM {target} t WHERE {match_ts} LIMIT 1) t ON true"
            " WHERE NOT s._bridge_tomb AND (t._bridge_id IS NULL OR t._bridge_hash IS DISTINCT FROM s._bridge_h"
            " OR t._bridge_deleted OR t._bridge_rowversion IS DISTINCT FROM s._bridge_rv){stale_s}{gone}"
        )
        if prefilter
        else sql.SQL(
            "SELECT s.*, NULL::boolean AS _bridge_was_deleted, false AS _bridge_again FROM src s"
            " WHERE NOT s._bridge_tomb{gone}"
        )
    ).format(target=target, match_ts=match("t", "s"), since=since_sql, stale_s=kept("s"), gone=gone)
    returning: sql.Composable = sql.SQL("")
    history_ctes: sql.Composable = sql.SQL("")
    if history is not None:
        returning = sql.SQL(", {}, t._bridge_rowversion").format(_ids(names, "t"))
        history_ctes = sql.SQL(
            " hclose AS ({close}),"
            " hins AS (INSERT INTO {h} ({cols}, _bridge_operation, _bridge_run_uid, _bridge_rowversion,"
            " _bridge_valid_from)"
            " SELECT {u_cols}, CASE WHEN u._bridge_inserted THEN 'insert' WHEN c._bridge_was_deleted THEN 'undelete'"
            " ELSE 'update' END, {run}, u._bridge_rowversion, now() FROM up u LEFT JOIN chg c ON {match_uc}"
            " UNION ALL SELECT {d_cols}, 'delete', {run}, d._bridge_rowversion, now() FROM del d),"
        ).format(
            h=sql.Identifier(schema, history),
            keys=_ids(keys),
            cols=_ids(names),
            u_cols=_ids(names, "u"),
            d_cols=_ids(names, "d"),
            run=sql.SQL("{}::uuid").format(sql.Literal(run_uid)),
            match_uc=match("u", "c"),
            close=close_versions(
                schema,
                history,
                keys,
                sql.SQL("SELECT {} FROM up UNION ALL SELECT {} FROM del").format(_ids(keys), _ids(keys)),
            ),
        )
    return sql.SQL(
        "WITH src AS MATERIALIZED ({source}),"
        " chg AS ({changed}),"
        " up AS ("
        " INSERT INTO {target} AS t ({cols}, _bridge_hash, _bridge_rowversion,"
        " _bridge_created_at, _bridge_updated_at, _bridge_deleted)"
        " SELECT {src_cols}, s._bridge_h, s._bridge_rv, now(), now(), false FROM chg s"
        " {conflict}"
        " RETURNING (xmax = 0) AS _bridge_inserted,"
        " coalesce(t._bridge_created_at >= {since}, false) AS _bridge_born{returning}),"
        " del AS ("
        " UPDATE {target} t SET _bridge_deleted = true, _bridge_updated_at = now(), _bridge_rowversion = s._bridge_rv"
        " FROM src s WHERE s._bridge_tomb AND {match_ts} AND NOT t._bridge_deleted{stale_s} RETURNING 1{returning}),"
        "{history_ctes}"
        " counts AS (SELECT count(*) FILTER (WHERE _bridge_inserted) AS ins,"
        " count(*) FILTER (WHERE NOT _bridge_inserted AND NOT _bridge_born)"
        " - (SELECT count(*) FROM chg WHERE _bridge_again AND NOT _bridge_was_deleted) AS upd FROM up)"
        " SELECT (SELECT count(*) FROM src), (SELECT count(*) FROM src WHERE _bridge_tomb), ins, upd,"
        " (SELECT count(*) FROM del) FROM counts"
    ).format(
        source=source,
        changed=changed,
        returning=returning,
        history_ctes=history_ctes,
        conflict=sql.SQL("")
        if plain_insert
        else sql.SQL(
            "ON CONFLICT ({keys}) DO UPDATE SET {sets}"
            " WHERE (t._bridge_hash IS DISTINCT FROM EXCLUDED._bridge_hash OR t._bridge_deleted"
            " OR t._bridge_rowversion IS DISTINCT FROM EXCLUDED._bridge_rowversion){stale_x}"
        ).format(keys=_ids(keys), sets=sql.SQL(", ").join(sets), stale_x=kept("excluded", "_bridge_rowversion")),
        keys=_ids(keys),
        target=target,
        match_ts=match("t", "s"),
        cols=_ids(names),
        src_cols=_ids(names, "s"),
        since=since_sql,
        stale_s=kept("s"),
    )


def close_versions(schema: str, history: str, keys: Sequence[str], changed_keys: sql.Composable) -> sql.Composed:
    """End the current version of each changed record, found through the key index one by one."""
    match = sql.SQL(" AND ").join(sql.SQL("hh.{0} = x.{0}").format(sql.Identifier(k)) for k in keys)
    return sql.SQL(
        "UPDATE {h} h SET _bridge_valid_to = now() WHERE h._bridge_history_id = ANY (ARRAY("
        " SELECT (SELECT hh._bridge_history_id FROM {h} hh WHERE {match} AND hh._bridge_valid_to IS NULL LIMIT 1)"
        " FROM ({changed}) x))"
    ).format(h=sql.Identifier(schema, history), match=match, changed=changed_keys)


def _not_seen(keys: Sequence[str]) -> sql.Composed:
    match = sql.SQL(" AND ").join(sql.SQL("s.{0} = t.{0}").format(sql.Identifier(k)) for k in keys)
    return sql.SQL("NOT EXISTS (SELECT 1 FROM {} s WHERE {})").format(sql.Identifier(SEEN), match)


def delete_counts(schema: str, table: str, keys: Sequence[str]) -> sql.Composed:
    """(live rows, live rows not seen in this run): what a full sync would soft-delete.

    Written as an outer join, so PostgreSQL hashes the seen keys once (a NOT
    EXISTS inside an aggregate's FILTER would be re-run for every row).
    """
    match = sql.SQL(" AND ").join(sql.SQL("s.{0} = t.{0}").format(sql.Identifier(k)) for k in keys)
    return sql.SQL(
        "SELECT count(*), count(*) FILTER (WHERE s.{first} IS NULL) FROM {target} t"
        " LEFT JOIN (SELECT DISTINCT {keys} FROM {seen}) s ON {match} WHERE NOT t._bridge_deleted"
    ).format(
        first=sql.Identifier(keys[0]),
        target=sql.Identifier(schema, table),
        keys=_ids(keys),
        seen=sql.Identifier(SEEN),
        match=match,
    )


def soft_delete_unseen(
    schema: str,
    table: str,
    keys: Sequence[str],
    *,
    columns: Sequence[StoredColumn] = (),
    history: str | None = None,
    run_uid: str | None = None,
) -> sql.Composed:
    """Soft-delete the live rows not seen in this run; returns how many."""
    update = sql.SQL(
        "UPDATE {target} t SET _bridge_deleted = true, _bridge_updated_at = now()"
        " WHERE NOT t._bridge_deleted AND {not_seen}"
    ).format(not_seen=_not_seen(keys), target=sql.Identifier(schema, table))
    if history is None:
        return sql.SQL("WITH del AS ({} RETURNING 1) SELECT count(*) FROM del").format(update)
    names = [c.pg_name for c in columns]
    return sql.SQL(
        "WITH del AS ({update} RETURNING {t_cols}, t._bridge_rowversion),"
        " hclose AS ({close}),"
        " hins AS (INSERT INTO {h} ({cols}, _bridge_operation, _bridge_run_uid, _bridge_rowversion,"
        " _bridge_valid_from) SELECT {d_cols}, 'delete', {run}, d._bridge_rowversion, now() FROM del d)"
        " SELECT count(*) FROM del"
    ).format(
        update=update,
        t_cols=_ids(names, "t"),
        h=sql.Identifier(schema, history),
        keys=_ids(keys),
        cols=_ids(names),
        d_cols=_ids(names, "d"),
        run=sql.SQL("{}::uuid").format(sql.Literal(run_uid)),
        close=close_versions(schema, history, keys, sql.SQL("SELECT {} FROM del").format(_ids(keys))),
    )
