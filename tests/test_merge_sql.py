"""The merge and staging SQL builders: their text (psycopg ``as_string``) and what they do on PostgreSQL.

The text tests pin quoting and the shape of each statement (psycopg's own
tests/test_sql.py style); the execution tests run the statements on a real
database (``pg``: one per module, a new connection and no ``erp`` schema per test) and check the rows and the counts they return: last occurrence
wins, unchanged rows are not rewritten, tombstones and soft deletes, the
history a statement writes.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from syncflow import ddl, history, merge
from syncflow.models import StoredColumn
from syncflow.pages import compare_rowversions

Conn = psycopg.Connection[Any]


def col(name: str, pg_type: str, *, key: bool = False) -> StoredColumn:
    return StoredColumn(
        api_name=name, source_name=name, data_type=pg_type, pg_name=name, pg_type=pg_type, is_business_key=key
    )


COLUMNS = [col("id", "integer", key=True), col("name", "text"), col("price", "numeric(10,2)"), col("doc", "jsonb")]
KEYS = ["id"]


# -- text ------------------------------------------------------------------------------------


def text(conn: Conn, q: psycopg.sql.Composable) -> str:
    return q.as_string(conn)


def test_stage_ddl_is_typed_like_the_target(pg: Conn) -> None:
    assert text(pg, merge.stage_ddl(COLUMNS, KEYS)) == (
        'CREATE TEMP TABLE "_sf_stage" (_bridge_seq bigint NOT NULL, _bridge_rv text, _bridge_tomb boolean NOT NULL,'
        ' "id" integer NOT NULL, "name" text, "price" numeric(10,2), "doc" jsonb)'
    )


def test_seen_table_and_its_statements(pg: Conn) -> None:
    keys = ["a b", 'q"uote']
    assert text(pg, merge.seen_ddl("erp", "items", keys)) == (
        'CREATE TEMP TABLE "_sf_seen" AS SELECT "a b", "q""uote" FROM "erp"."items" WITH NO DATA'
    )
    assert text(pg, merge.seen_stats(keys)) == (
        'SELECT (SELECT count(*) FROM "_sf_seen"),'
        ' (SELECT count(*) FROM (SELECT DISTINCT "a b", "q""uote" FROM "_sf_seen") d)'
    )
    assert text(pg, merge.seen_insert(keys)) == (
        'INSERT INTO "_sf_seen" ("a b", "q""uote") SELECT "a b", "q""uote" FROM "_sf_stage"'
    )


def test_copy_names_every_column_after_the_staging_ones(pg: Conn) -> None:
    assert text(pg, merge.copy_sql(COLUMNS)) == (
        'COPY "_sf_stage" (_bridge_seq, _bridge_rv, _bridge_tomb, "id", "name", "price", "doc") FROM STDIN'
    )


def test_hash_orders_columns_by_name_and_hashes_jsonb_as_text(pg: Conn) -> None:
    assert text(pg, merge.hash_expr(COLUMNS, "s")) == (
        'hash_record_extended(ROW("s"."doc"::text, "s"."id", "s"."name", "s"."price"), 0)::text'
    )


def test_delete_statements(pg: Conn) -> None:
    assert text(pg, merge.delete_counts("erp", "items", ["a", "b"])) == (
        'SELECT count(*), count(*) FILTER (WHERE s."a" IS NULL) FROM "erp"."items" t'
        ' LEFT JOIN (SELECT DISTINCT "a", "b" FROM "_sf_seen") s ON s."a" = t."a" AND s."b" = t."b"'
        " WHERE NOT t._bridge_deleted"
    )
    assert text(pg, merge.soft_delete_unseen("erp", "items", ["a", "b"])) == (
        'WITH del AS (UPDATE "erp"."items" t SET _bridge_deleted = true, _bridge_updated_at = now()'
        ' WHERE NOT t._bridge_deleted AND NOT EXISTS (SELECT 1 FROM "_sf_seen" s WHERE s."a" = t."a" AND s."b" = t."b")'
        " RETURNING 1) SELECT count(*) FROM del"
    )


def test_merge_variants_differ_only_where_they_should(pg: Conn) -> None:
    full = text(pg, merge.merge("erp", "items", COLUMNS, KEYS))
    assert full.startswith(
        'WITH src AS MATERIALIZED (SELECT DISTINCT ON ("id") s.*, hash_record_extended(ROW("s"."doc"::text, "s"."id",'
        ' "s"."name", "s"."price"), 0)::text AS _bridge_h FROM "_sf_stage" s ORDER BY "id", s._bridge_seq DESC),'
    )
    assert (
        'ON CONFLICT ("id") DO UPDATE SET "name" = EXCLUDED."name", "price" = EXCLUDED."price", "doc" = EXCLUDED."doc",'
        in full
    )
    assert "LEFT JOIN LATERAL" in full
    plain = text(pg, merge.merge("erp", "items", COLUMNS, KEYS, dedup=False))
    assert "DISTINCT ON" not in plain
    assert 'SELECT s.*, hash_record_extended(ROW("s"."doc"::text' in plain
    fresh = text(pg, merge.merge("erp", "items", COLUMNS, KEYS, dedup=False, prefilter=False, plain_insert=True))
    assert "ON CONFLICT" not in fresh
    assert "LATERAL" not in fresh
    assert (
        "SELECT s.*, NULL::boolean AS _bridge_was_deleted, false AS _bridge_again FROM src s WHERE NOT s._bridge_tomb"
        in fresh
    )
    assert "_sf_history" not in full
    with_history = text(pg, merge.merge("erp", "items", COLUMNS, KEYS, history="h", run_uid=str(uuid.UUID(int=1))))
    assert '"erp"."h"' in with_history
    assert "'00000000-0000-0000-0000-000000000001'::uuid" in with_history


# -- execution -------------------------------------------------------------------------------


@pytest.fixture
def db(pg: Conn) -> Conn:
    """A target table erp.items and an empty staging table on one connection."""
    pg.execute(ddl.create_schema("erp"))
    pg.execute(ddl.create_table("erp", "items", COLUMNS, KEYS))
    pg.execute(merge.stage_ddl(COLUMNS, KEYS))
    pg.execute(merge.seen_ddl("erp", "items", KEYS))
    pg.execute(merge.dead_ddl("erp", "items", KEYS))
    return pg


Staged = tuple[int, str | None, bool, int, str | None, str | None, str | None]


def stage(conn: Conn, rows: list[Staged]) -> None:
    conn.execute(psycopg.sql.SQL("TRUNCATE {}").format(psycopg.sql.Identifier(merge.STAGE)))
    with conn.cursor() as cur, cur.copy(merge.copy_sql(COLUMNS)) as cp:
        for r in rows:
            cp.write_row(r)


def run(conn: Conn, rows: list[Staged], **kw: Any) -> tuple[int, ...]:
    """Stage ``rows`` and merge them; returns (distinct, tombstones, inserted, updated, deleted)."""
    stage(conn, rows)
    conn.execute(merge.seen_insert(KEYS))
    if kw.get("versioned"):
        conn.execute(merge.dead_insert(KEYS))
    got = conn.execute(merge.merge("erp", "items", COLUMNS, KEYS, **kw)).fetchone()
    assert got is not None
    return tuple(int(v) for v in got)


def table(conn: Conn) -> dict[int, tuple[Any, ...]]:
    cur = conn.execute(
        "SELECT id, name, price::text, doc::text, _bridge_deleted, _bridge_rowversion FROM erp.items ORDER BY id"
    )
    return {r[0]: r[1:] for r in cur.fetchall()}


def row_ids(conn: Conn) -> dict[int, tuple[Any, ...]]:
    """Each row's physical identity and update time: unchanged when a row was not rewritten."""
    cur = conn.execute("SELECT id, xmin::text, ctid::text, _bridge_updated_at, _bridge_hash FROM erp.items")
    return {r[0]: r[1:] for r in cur.fetchall()}


def test_merge_inserts_then_leaves_unchanged_rows_alone(db: Conn) -> None:
    rows: list[Staged] = [
        (1, "5", False, 1, "a", "1.50", '{"x": 1}'),
        (2, "6", False, 2, "b", None, None),
        (3, "7", False, 3, None, "0", "[]"),
    ]
    assert run(db, rows) == (3, 0, 3, 0, 0)
    assert table(db) == {
        1: ("a", "1.50", '{"x": 1}', False, "5"),
        2: ("b", None, None, False, "6"),
        3: (None, "0.00", "[]", False, "7"),
    }
    before = row_ids(db)
    db.commit()
    # The same rows again, numbers spelt differently: nothing is written, nothing counted.
    again: list[Staged] = [(4, "5", False, 1, "a", "1.5", '{"x":1}'), *rows[1:]]
    assert run(db, again) == (3, 0, 0, 0, 0)
    assert row_ids(db) == before


def test_merge_updates_what_changed_and_only_that(db: Conn) -> None:
    run(db, [(1, "5", False, 1, "a", "1", "[]"), (2, "5", False, 2, "b", "2", "{}")])
    db.commit()
    before = row_ids(db)
    # id 1: a value changes; id 2: only the row version changes.
    assert run(db, [(3, "6", False, 1, "A", "1", "[]"), (4, "7", False, 2, "b", "2", "{}")]) == (2, 0, 0, 2, 0)
    after = row_ids(db)
    assert table(db) == {1: ("A", "1.00", "[]", False, "6"), 2: ("b", "2.00", "{}", False, "7")}
    assert after[1][3] != before[1][3]  # the hash follows the data
    assert after[2][3] == before[2][3]
    assert after[1][2] > before[1][2]  # _bridge_updated_at moved


def test_jsonb_empty_array_object_and_null_hash_apart(db: Conn) -> None:
    run(db, [(1, None, False, 1, None, None, "[]")])
    for doc in ["{}", None, "[[]]", "[]"]:
        assert run(db, [(2, None, False, 1, None, None, doc)])[3] == 1, doc
        assert table(db)[1][2] == doc


def test_last_occurrence_of_a_key_wins(db: Conn) -> None:
    rows: list[Staged] = [
        (2, "9", False, 1, "late", None, None),
        (1, "8", False, 1, "early", None, None),
        (3, "1", False, 2, "x", None, None),
    ]
    assert run(db, rows) == (2, 0, 2, 0, 0)
    assert table(db)[1][0] == "late"
    # Without deduplication a repeated key cannot be merged at all.
    with pytest.raises(psycopg.errors.CardinalityViolation), db.transaction():
        run(db, [(5, "9", False, 1, "p", None, None), (6, "9", False, 1, "q", None, None)], dedup=False)


def test_tombstones_soft_delete_once_and_a_later_row_revives(db: Conn) -> None:
    run(db, [(1, "1", False, 1, "a", None, None), (2, "1", False, 2, "b", None, None)])
    assert run(db, [(3, "2", True, 1, None, None, None)]) == (1, 1, 0, 0, 1)
    assert table(db)[1] == ("a", None, None, True, "2")
    # A tombstone for a row already deleted (or never stored) deletes nothing.
    assert run(db, [(4, "3", True, 1, None, None, None), (5, "3", True, 9, None, None, None)]) == (2, 2, 0, 0, 0)
    assert set(table(db)) == {1, 2}
    # The row comes back with the same data: it is live again (counted as an update).
    assert run(db, [(6, "4", False, 1, "a", None, None)]) == (1, 0, 0, 1, 0)
    assert table(db)[1] == ("a", None, None, False, "4")


@pytest.mark.parametrize("prefilter", [True, False])
def test_upsert_without_the_prefilter_is_the_same(db: Conn, prefilter: bool) -> None:
    run(db, [(1, "1", False, 1, "a", None, None)])
    got = run(db, [(2, "2", False, 1, "b", None, None), (3, "2", False, 2, "c", None, None)], prefilter=prefilter)
    assert got == (2, 0, 1, 1, 0)
    assert {k: v[0] for k, v in table(db).items()} == {1: "b", 2: "c"}


@pytest.mark.parametrize(("prefilter", "updated"), [(True, 1), (False, 2)])
def test_a_run_counts_each_key_written_once(db: Conn, prefilter: bool, updated: int) -> None:
    """With ``since`` (the run's start) a row the run already inserted or updated is not counted again.

    Without the prefilter's join the statement cannot see that a row was updated since, only that
    it was inserted since (its creation time): then the twice-updated row 1 counts twice.
    """
    run(db, [(1, "1", False, 1, "a", None, None), (2, "1", False, 2, "b", None, None)])
    db.commit()
    since = one_value(db, "SELECT clock_timestamp()")
    db.commit()
    # The run's first read: row 1 changed, row 3 is new.
    first = run(db, [(3, "2", False, 1, "A", None, None), (4, "2", False, 3, "c", None, None)], since=since)
    assert first == (2, 0, 1, 1, 0)
    db.commit()
    # Its second read: rows 1 and 3 changed again, row 2 changed for the first time.
    rows: list[Staged] = [
        (5, "3", False, 1, "AA", None, None),
        (6, "3", False, 2, "B", None, None),
        (7, "3", False, 3, "C", None, None),
    ]
    assert run(db, rows, since=since, prefilter=prefilter) == (3, 0, 0, updated, 0)
    assert {k: v[0] for k, v in table(db).items()} == {1: "AA", 2: "B", 3: "C"}
    db.commit()
    # Without ``since`` every rewrite counts.
    assert run(db, [(8, "4", False, 1, "x", None, None)], prefilter=prefilter) == (1, 0, 0, 1, 0)


def one_value(conn: Conn, query: str) -> Any:
    row = conn.execute(query).fetchone()  # test-only, fixed strings
    assert row is not None
    return row[0]


def test_plain_insert_refuses_a_stored_key(db: Conn) -> None:
    run(db, [(1, "1", False, 1, "a", None, None)], plain_insert=True, prefilter=False, dedup=False)
    with pytest.raises(psycopg.errors.UniqueViolation), db.transaction():
        run(db, [(2, "1", False, 1, "a", None, None)], plain_insert=True, prefilter=False, dedup=False)


def test_delete_counts_and_soft_delete_unseen(db: Conn) -> None:
    run(db, [(i, "1", False, i, str(i), None, None) for i in range(1, 6)])
    db.execute(psycopg.sql.SQL("TRUNCATE {}").format(psycopg.sql.Identifier(merge.SEEN)))
    db.execute("UPDATE erp.items SET _bridge_deleted = true WHERE id = 5")
    stage(db, [(9, "1", False, i, str(i), None, None) for i in (1, 2)])
    db.execute(merge.seen_insert(KEYS))
    db.execute(merge.seen_insert(KEYS))  # a key seen twice is one key
    assert db.execute(merge.seen_stats(KEYS)).fetchone() == (4, 2)
    assert db.execute(merge.delete_counts("erp", "items", KEYS)).fetchone() == (4, 2)
    assert db.execute(merge.soft_delete_unseen("erp", "items", KEYS)).fetchone() == (2,)
    assert {k for k, v in table(db).items() if not v[3]} == {1, 2}
    assert db.execute(merge.delete_counts("erp", "items", KEYS)).fetchone() == (2, 0)


def history_rows(conn: Conn) -> list[tuple[Any, ...]]:
    cur = conn.execute(
        "SELECT id, name, _bridge_operation, _bridge_rowversion, _bridge_valid_to IS NULL, _bridge_run_uid::text"
        " FROM erp.items__history ORDER BY _bridge_history_id"
    )
    return cur.fetchall()


def test_merge_and_soft_delete_write_contiguous_history(db: Conn) -> None:
    db.execute(history.create_sql("erp", "items__history", COLUMNS, KEYS))
    r1, r2, r3 = (str(uuid.UUID(int=n)) for n in (1, 2, 3))
    kw: dict[str, Any] = {"history": "items__history"}
    run(db, [(1, "1", False, 1, "a", None, None), (2, "1", False, 2, "b", None, None)], run_uid=r1, **kw)
    run(db, [(3, "2", False, 1, "A", None, None), (4, "2", False, 2, "b", None, None)], run_uid=r2, **kw)
    run(db, [(5, "3", True, 2, None, None, None)], run_uid=r2, **kw)
    run(db, [(6, "4", False, 2, "b", None, None)], run_uid=r3, **kw)
    assert history_rows(db) == [
        (1, "a", "insert", "1", False, r1),
        (2, "b", "insert", "1", False, r1),
        (1, "A", "update", "2", True, r2),
        (2, "b", "update", "2", False, r2),  # a new row version alone is a version
        (2, "b", "delete", "3", False, r2),
        (2, "b", "undelete", "4", True, r3),
    ]
    db.execute(psycopg.sql.SQL("TRUNCATE {}").format(psycopg.sql.Identifier(merge.SEEN)))
    stage(db, [(7, "4", False, 2, "b", None, None)])
    db.execute(merge.seen_insert(KEYS))
    q = merge.soft_delete_unseen("erp", "items", KEYS, columns=COLUMNS, history="items__history", run_uid=r3)
    assert db.execute(q).fetchone() == (1,)
    last = history_rows(db)
    assert last[2] == (1, "A", "update", "2", False, r2)
    assert last[-1] == (1, "A", "delete", "2", True, r3)
    # Exactly one open version per key, and it matches the table.
    open_versions = db.execute(
        "SELECT id, count(*) FROM erp.items__history WHERE _bridge_valid_to IS NULL GROUP BY id ORDER BY id"
    ).fetchall()
    assert open_versions == [(1, 1), (2, 1)]


@pytest.mark.parametrize("prefilter", [True, False])
@pytest.mark.parametrize("versioned", [True, False])
def test_a_range_parallel_run_never_writes_an_older_version_over_a_newer_one(
    db: Conn, prefilter: bool, versioned: bool
) -> None:
    """A range-parallel read merges pages as they arrive: a row's new version (read by the open range) can
    be merged before its old version (read by a lower range, before the change). ``versioned`` keeps the
    newer one, for rows and tombstones, in one batch and across batches; a later run may still write
    any version (a source restored from a backup goes back in time, and the table follows it)."""
    run(db, [(1, "10", False, 1, "old", None, None), (2, "10", False, 2, "two", None, None)])
    db.commit()
    since = one_value(db, "SELECT clock_timestamp()")
    db.commit()
    kw: dict[str, Any] = {"since": since, "prefilter": prefilter, "versioned": versioned}
    # Row 1: the new version, then the old one in a later batch. Row 2: deleted at 25, then its older live
    # version. Row 3: versions 30 and then 7 (a longer string) in later batches.
    # Row 4: never stored; its tombstone comes first, then its older live version.
    run(db, [(3, "20", False, 1, "new", None, None), (4, "25", True, 2, None, None, None)], **kw)
    run(db, [(7, "40", True, 4, None, None, None)], **kw)
    run(db, [(5, "10", False, 1, "old", None, None), (6, "10", False, 2, "two", None, None)], dedup=True, **kw)
    run(db, [(8, "30", False, 3, "thirty", None, None)], **kw)
    run(db, [(9, "0007", False, 3, "seven", None, None)], **kw)
    run(db, [(10, "35", False, 4, "phantom", None, None)], **kw)
    got = {k: (v[0], v[3], v[4]) for k, v in table(db).items()}
    if versioned:
        assert got == {1: ("new", False, "20"), 2: ("two", True, "25"), 3: ("thirty", False, "30")}
    else:  # what an unversioned merge does: the last one merged wins
        assert got[1] == ("old", False, "10")
    db.commit()
    # The next run (a new ``since``) writes what the source says, even an older version.
    later = one_value(db, "SELECT clock_timestamp()")
    db.commit()
    db.execute(psycopg.sql.SQL("TRUNCATE {}").format(psycopg.sql.Identifier(merge.DEAD)))  # a new run's own
    run(db, [(11, "5", False, 1, "restored", None, None)], since=later, prefilter=prefilter, versioned=versioned)
    assert table(db)[1][0] == "restored"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("10", "9"),
        ("9", "10"),
        ("007", "7"),
        ("0", ""),
        ("b", "a"),
        ("a", "B"),
        ("20251208", "2025-12-08"),
        ("x", "x"),
        ("99999999999999999999999999999999999999999", "1"),
        ("Ä", "Z"),
    ],
)
def test_newer_orders_row_versions_as_the_stream_does(pg: Conn, a: str, b: str) -> None:
    """The SQL comparison and :func:`syncflow.pages.compare_rowversions` agree (digits as integers, else by code point)."""
    q = psycopg.sql.SQL("SELECT {}").format(merge.newer(psycopg.sql.Literal(a), psycopg.sql.Literal(b)))
    assert one_value(pg, q.as_string(pg)) is (compare_rowversions(a, b) > 0)


def test_insert_new_writes_what_the_fresh_merge_writes(db: Conn) -> None:
    """A batch of live rows into a table the run found empty: one plain INSERT, the same rows as the merge."""
    rows: list[Staged] = [(1, "5", False, 1, "a", "1.50", '{"b": 1}'), (2, "6", False, 2, None, None, None)]
    stage(db, rows)
    inserted = db.execute(merge.insert_new("erp", "items", COLUMNS)).rowcount
    assert inserted == 2
    plain = table(db)
    hashes = {r[0]: r[1] for r in db.execute("SELECT id, _bridge_hash FROM erp.items").fetchall()}
    db.execute("TRUNCATE erp.items")
    assert run(db, rows, plain_insert=True, prefilter=False, dedup=False) == (2, 0, 2, 0, 0)
    assert table(db) == plain
    assert {r[0]: r[1] for r in db.execute("SELECT id, _bridge_hash FROM erp.items").fetchall()} == hashes
    assert db.execute("SELECT count(*) FROM erp.items WHERE _bridge_created_at = now()").fetchone() == (2,)
    stage(db, [(3, "7", False, 1, "b", None, None)])
    with pytest.raises(psycopg.errors.UniqueViolation), db.transaction():
        db.execute(merge.insert_new("erp", "items", COLUMNS))
