"""Staging (stage.py): page rows built into COPY tuples, COPY into a typed temp table, row-wise rejects.

Fast, DB-level tests on a real PostgreSQL (``pg``: a database per module, each test on a
new connection with no ``erp`` schema, see conftest.py): how a
row is read (by alias, by source name, mixed pages, oracle keys), what
becomes a reject and with which key, column, reason and value, schema
drift and renamed columns, duplicate detection, chunked COPY and the
bisection that isolates the rows PostgreSQL refuses while the rest loads.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
from decimal import Decimal
from typing import Any

import orjson
import psycopg
import pytest
from psycopg import sql

from syncflow import ddl, merge, stage
from syncflow.models import StoredColumn
from syncflow.pages import RawRow
from syncflow.records import Reject
from syncflow.stage import SchemaChanged, Stage

Conn = psycopg.Connection[Any]


def col(pg: str, pg_type: str, *, api: str | None = None, source: str | None = None, key: bool = False) -> StoredColumn:
    return StoredColumn(
        api_name=api if api is not None else pg.capitalize(),
        source_name=source if source is not None else pg.upper(),
        data_type=pg_type,
        pg_name=pg,
        pg_type=pg_type,
        is_business_key=key,
    )


# Aliases are capitalised (``Id``), source names upper case (``ID``).
COLUMNS = [
    col("id", "integer", key=True),
    col("name", "varchar(5)"),
    col("qty", "integer"),
    col("blob", "bytea"),
    col("doc", "jsonb"),
]
KEYS = ["id"]


def raw(
    data: dict[str, Any], rv: str | None = "1", *, tomb: bool = False, okeys: Any = None, problem: Any = None
) -> RawRow:
    return (data, rv, tomb, okeys, problem)


def make(conn: Conn, columns: list[StoredColumn] = COLUMNS, keys: list[str] = KEYS, **kw: Any) -> Stage:
    """A target table erp.items for ``columns`` and a Stage over it."""
    conn.execute(ddl.create_schema("erp"))
    conn.execute(sql.SQL("DROP TABLE IF EXISTS erp.items"))
    conn.execute(ddl.create_table("erp", "items", columns, keys))
    return Stage(conn, schema="erp", table="items", columns=columns, keys=keys, **kw)


def staged(conn: Conn) -> list[tuple[Any, ...]]:
    """The staging table's rows in seq order, every column as text."""
    names = [
        r[0]
        for r in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'pg_temp._sf_stage'::regclass AND attnum > 0"
            " AND NOT attisdropped ORDER BY attnum"
        ).fetchall()
    ]
    q = sql.SQL("SELECT {} FROM pg_temp._sf_stage s ORDER BY s._bridge_seq").format(
        sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier("s", n)) for n in names)
    )
    return conn.execute(q).fetchall()


def exists(conn: Conn, name: str) -> bool:
    got = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [f"pg_temp.{name}"]).fetchone()
    assert got is not None
    return bool(got[0])


# -- pure helpers ----------------------------------------------------------------------------


def test_exact_writes_a_decimal_digit_for_digit_and_refuses_the_rest() -> None:
    assert orjson.dumps([Decimal("1.50"), Decimal("-0.000")], default=stage._exact) == b"[1.50,-0.000]"
    with pytest.raises(TypeError) as info:
        stage._exact(object())
    assert str(info.value) == "object is not JSON"


def test_big_ints_turns_every_integer_into_a_decimal_but_not_booleans() -> None:
    got = stage._big_ints({"a": 2**70, "b": [1, True, False, "x", None, {"c": -5}], "d": 1.5})
    assert got == {"a": Decimal(2**70), "b": [Decimal(1), True, False, "x", None, {"c": Decimal(-5)}], "d": 1.5}
    assert type(got["a"]) is Decimal
    assert got["b"][1] is True
    assert got["b"][2] is False
    assert type(got["b"][5]["c"]) is Decimal
    assert stage._big_ints(7) == Decimal(7)
    assert type(stage._big_ints(7)) is Decimal
    assert stage._big_ints(True) is True


def test_json_text_keeps_every_number_as_sent() -> None:
    assert stage.json_text({"p": Decimal("1.50"), "l": [1, True, None, "é"]}) == '{"p":1.50,"l":[1,true,null,"é"]}'
    # Beyond 64 bits orjson refuses the integer: the second pass writes it through Decimal, exactly.
    big = {"n": 2**70, "m": [-(2**65), 3, False], "s": "x", "p": Decimal("2.50")}
    assert stage.json_text(big) == ('{"n":1180591620717411303424,"m":[-36893488147419103232,3,false],"s":"x","p":2.50}')
    assert stage._json_text([2**64]) == "[18446744073709551616]"
    assert stage._json_text("plain") == '"plain"'


def _hmac(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("alice@example.com", "alice@example.com"),
        ("", ""),
        (" Padded ", " Padded "),
        ("2025-12-01T10:00:00.500", "2025-12-01T10:00:00.500"),
        ("Zoë 東京", "Zoë 東京"),
        ("12", "12"),
        (12, "12"),
        (-7, "-7"),
        (Decimal("12.50"), "12.50"),
        (Decimal("1E+3"), "1E+3"),
        (2**70, str(2**70)),
        (1.5, "1.5"),
        (True, "true"),
        (False, "false"),
        (None, "null"),
        ({"a": [1, Decimal("2.0")]}, '{"a":[1,2.0]}'),
    ],
)
def test_hash_text_and_hasher_hash_the_value_as_sent(value: Any, text: str) -> None:
    """README: a string exactly as sent, anything else as its JSON text with the digits as sent."""
    key = b"s3cr\xc3\xa9t-key"
    assert stage.hash_text(value) == text
    assert stage.hasher(key)(value) == _hmac(key, text)


def test_hasher_is_keyed_lowercase_hex_and_deterministic() -> None:
    one, other = stage.hasher(b"k1"), stage.hasher(b"k2")
    digest = one("alice")
    assert digest == _hmac(b"k1", "alice")
    assert digest == one("alice")
    assert len(digest) == 64
    assert digest == digest.lower()
    assert other("alice") != digest
    assert one("alicE") != digest
    # The same text hashes the same whatever its JSON type: 12 and "12" join.
    assert one(12) == one("12")


def test_hasher_encodes_utf8() -> None:
    assert stage.hasher(b"k")("é") == hmac.new(b"k", b"\xc3\xa9", hashlib.sha256).hexdigest()


def test_bytea_takes_strict_base64_only() -> None:
    assert stage._bytea("aGk=") == b"hi"
    with pytest.raises(binascii.Error, match="Only base64 data is allowed"):
        stage._bytea("aG k=")  # lenient decoding would drop the space and accept it
    with pytest.raises(ValueError, match=r"^expected a base64 string$"):
        stage._bytea(b"aGk=")


def test_integer_makes_whole_numbers_integers_and_leaves_the_rest_for_postgresql() -> None:
    for value, want in [(12.0, 12), (-3.0, -3), (Decimal("12.0"), 12), (Decimal("-7.000"), -7), (Decimal("5"), 5)]:
        got = stage._integer(value)
        assert got == want, value
        assert type(got) is int, value
    for same in [12.5, Decimal("12.5"), Decimal("Infinity"), Decimal("NaN"), "12", 12, True, None, float("inf")]:
        assert stage._integer(same) is same, same


def test_plain_turns_objects_and_arrays_into_json_text() -> None:
    assert stage._plain({"a": [1, Decimal("2.0")]}) == '{"a":[1,2.0]}'
    assert stage._plain([1, "x"]) == '[1,"x"]'
    for same in ["{}", 5, None, (1, 2), b"x"]:
        assert stage._plain(same) is same


def test_converter_per_type() -> None:
    assert stage.converter("jsonb") is stage._json_text
    assert stage.converter("bytea") is stage._bytea
    assert stage.converter("integer") is stage._integer
    assert stage.converter("bigint") is stage._integer
    for other in ["text", "numeric", "numeric(10,2)", "boolean", "real", "varchar(5)"]:
        assert stage.converter(other) is None


def test_preview() -> None:
    for same in [None, 5, 1.5, True, False]:
        assert stage._preview(same) is same
    assert stage._preview("x" * 250) == "x" * 200
    assert stage._preview("y" * 200) == "y" * 200
    assert stage._preview(Decimal("1.50")) == "1.50"
    assert stage._preview({"a": 1}) == "{'a': 1}"
    assert stage._preview(["z" * 300]) == ("['" + "z" * 300)[:200]
    assert stage.VALUE_PREVIEW == 200


# -- the staging table -----------------------------------------------------------------------


def test_stage_creates_typed_temp_tables_and_close_drops_them(pg: Conn) -> None:
    s = make(pg)
    assert exists(pg, merge.STAGE)
    assert exists(pg, merge.SEEN)
    cols = pg.execute(
        "SELECT attname, format_type(atttypid, atttypmod), attnotnull FROM pg_attribute"
        " WHERE attrelid = 'pg_temp._sf_seen'::regclass AND attnum > 0 ORDER BY attnum"
    ).fetchall()
    assert cols == [("id", "integer", False)]
    assert (s.seq, s.staged, s.has_dups, s.queued, s.drift) == (0, 0, False, 0, set())
    pg.execute("INSERT INTO _sf_stage VALUES (1, NULL, false, 1)")
    # A second Stage on the same connection starts from empty tables.
    s2 = Stage(pg, schema="erp", table="items", columns=COLUMNS, keys=KEYS)
    assert staged(pg) == []
    s2.close()
    assert not exists(pg, merge.STAGE)
    assert not exists(pg, merge.SEEN)
    s2.close()  # closing twice is harmless


def test_without_track_seen_there_is_no_seen_table(pg: Conn) -> None:
    make(pg, track_seen=False)
    assert exists(pg, merge.STAGE)
    assert not exists(pg, merge.SEEN)


# -- build: reading rows ---------------------------------------------------------------------


def test_build_reads_rows_by_alias_with_conversions(pg: Conn) -> None:
    s = make(pg)
    rejects: list[Reject] = []
    rows = [
        raw({"Id": 1, "Name": "a", "Qty": 12.0, "Blob": "aGk=", "Doc": {"p": Decimal("1.50"), "n": 2**70}}, "7"),
        raw({"Id": 2.0, "Name": None, "Qty": None, "Blob": None, "Doc": None}, None, tomb=True),
        raw({"Id": Decimal("3.0"), "Name": "c", "Qty": 12.5, "Blob": "", "Doc": [1, "x"]}, "9"),
    ]
    out = s.build(rows, rejects)
    assert rejects == []
    assert out == [
        (1, "7", False, 1, "a", 12, b"hi", '{"p":1.50,"n":1180591620717411303424}'),
        (2, None, True, 2, None, None, None, None),
        (3, "9", False, 3, "c", 12.5, b"", '[1,"x"]'),
    ]
    assert type(out[0][5]) is int
    assert type(out[1][3]) is int
    assert type(out[2][3]) is int
    assert s.seq == 3
    assert s.drift == set()
    # seq goes on across pages
    assert s.build([raw({"Id": 4, "Name": "d", "Qty": 1, "Blob": None, "Doc": None})], rejects)[0][:4] == (
        4,
        "1",
        False,
        4,
    )


def test_build_hashes_a_hashed_column_and_keeps_null_null(pg: Conn) -> None:
    """A hashed column gets the HMAC of the value as sent; NULL stays NULL, not the hash of "null"."""
    columns = [
        col("id", "integer", key=True),
        StoredColumn("Email", "EMAIL", "VARCHAR2", "email", "text", policy="hash"),
    ]
    s = make(pg, columns, hash_key=b"k")
    rejects: list[Reject] = []
    out = s.build([raw({"Id": 1, "Email": "a@b"}), raw({"Id": 2, "Email": None}), raw({"Id": 3, "Email": 12})], rejects)
    assert rejects == []
    assert out == [
        (1, "1", False, 1, _hmac(b"k", "a@b")),
        (2, "1", False, 2, None),
        (3, "1", False, 3, _hmac(b"k", "12")),
    ]


def test_a_hashed_column_without_a_key_is_refused(pg: Conn) -> None:
    columns = [
        col("id", "integer", key=True),
        StoredColumn("Email", "EMAIL", "VARCHAR2", "email", "text", policy="hash"),
    ]
    with pytest.raises(ValueError, match=r"^column email is hashed but no hash key was given$"):
        make(pg, columns)


def test_build_reads_rows_by_source_name(pg: Conn) -> None:
    s = make(pg)
    out = s.build([raw({"ID": 1, "NAME": "a", "QTY": 2.0, "BLOB": "aGk=", "DOC": {"k": 1}})], [])
    assert out == [(1, "1", False, 1, "a", 2, b"hi", '{"k":1}')]
    assert s.drift == set()


def test_build_reads_each_row_of_a_mixed_page_by_its_own_names(pg: Conn) -> None:
    s = make(pg)
    rows = [
        raw({"Id": 1, "Name": "a", "Qty": 1, "Blob": None, "Doc": None}),
        raw({"ID": 2, "NAME": "b", "QTY": 2, "BLOB": None, "DOC": None}),
        raw({"ID": 3, "NAME": "c"}),  # missing names are NULL
        raw({"Id": 4, "Qty": 4}),
    ]
    assert s.build(rows, []) == [
        (1, "1", False, 1, "a", 1, None, None),
        (2, "1", False, 2, "b", 2, None, None),
        (3, "1", False, 3, "c", None, None, None),
        (4, "1", False, 4, None, 4, None, None),
    ]


def test_mode_prefers_aliases_unless_source_names_explain_more(pg: Conn) -> None:
    s = make(pg)
    assert s._mode({"Id", "Name"}) == "alias"
    assert s._mode({"ID", "NAME"}) == "source"
    assert s._mode(set()) == "alias"
    assert s._mode({"Id", "NAME"}) == "alias"  # a tie
    assert s._mode({"Id", "NAME", "QTY"}) == "source"
    assert s._mode({"Id", "Qty", "NAME"}) == "alias"
    assert s._mode({"Id", "other"}) == "alias"
    assert s._mode({"ID", "other"}) == "source"
    assert s._mode({"other"}) == "alias"


def test_a_page_read_by_source_name_keeps_that_reading_for_rows_missing_names(pg: Conn) -> None:
    s = make(pg)
    # The page is read by source name; the first row lacks QTY (slow path), the second has every name.
    rows = [raw({"ID": 1, "NAME": "a"}), raw({"ID": 2, "NAME": "b", "QTY": 3, "BLOB": None, "DOC": None})]
    assert s.build(rows, []) == [(1, "1", False, 1, "a", None, None, None), (2, "1", False, 2, "b", 3, None, None)]


def test_single_column_entity(pg: Conn) -> None:
    cols = [col("id", "text", key=True)]
    s = make(pg, cols)
    rows = [raw({"Id": "ab"}), raw({"ID": "bc"}), raw({}, okeys={"ID": "cd"})]
    out = s.build(rows, [])
    assert out == [(1, "1", False, "ab"), (2, "1", False, "bc"), (3, "1", False, "cd")]
    assert [s.raw_key(r[0], r[3]) for r in rows] == ["ab", "bc", "cd"]
    rejects: list[Reject] = []
    s.add(out, rejects)
    s.send(rejects)
    assert rejects == []
    assert s.staged == 3
    assert staged(pg) == [("1", "1", "false", "ab"), ("2", "1", "false", "bc"), ("3", "1", "false", "cd")]


def test_oracle_keys_fill_a_missing_business_key_and_nothing_else(pg: Conn) -> None:
    s = make(pg)
    okeys = {"ID": 5, "NAME": "zz", "Id": 6}
    out = s.build([raw({"Qty": 1}, okeys=okeys), raw({"QTY": 2}, okeys=okeys), raw({"Qty": 3}, okeys=None)], [])
    assert out == [
        (1, "1", False, 5, None, 1, None, None),
        (2, "1", False, 5, None, 2, None, None),
        (3, "1", False, None, None, 3, None, None),
    ]
    # A key the row itself carries wins over the oracle key.
    assert s.build([raw({"Id": 1, "Qty": 1}, okeys=okeys)], [])[0][3] == 1
    assert s.raw_key({"Qty": 1}, okeys) == 5
    assert s.raw_key({"QTY": 1}, okeys) == 5
    assert s.raw_key({"Qty": 1}, None) is None
    assert s.raw_key({"Id": 1, "Qty": 1}, okeys) == 1
    assert s.raw_key({"ID": 2}, okeys) == 2


COMPOSITE = [
    col("a", "text", key=True),
    col("note", "text"),
    col("b", "integer", key=True),
    col("c", "text"),
]


def test_composite_keys_in_key_order(pg: Conn) -> None:
    s = make(pg, COMPOSITE, ["b", "a"])
    rows = [
        raw({"A": "x", "Note": "n", "B": 2, "C": "c"}),
        raw({"A": "y", "NOTE": "n", "B": 3.0, "C": "c"}),
        raw({"Note": "n"}, okeys={"A": "z", "B": 4}),
        raw({"A": "w", "Note": "n"}, okeys={"B": 5}),
    ]
    out = s.build(rows, [])
    assert [r[3:] for r in out] == [("x", "n", 2, "c"), ("y", "n", 3, "c"), ("z", "n", 4, None), ("w", "n", 5, None)]
    assert [s.raw_key(r[0], r[3]) for r in rows] == [(2, "x"), (3.0, "y"), (4, "z"), (5, "w")]
    assert s.raw_key({"B": 1}, None) == (1, None)
    rejects: list[Reject] = []
    bad = s.build([raw({"A": "k", "B": 9}, problem="row_version '' is empty")], rejects)
    assert bad == []
    assert rejects == [
        Reject(business_key={"b": 9, "a": "k"}, column=None, reason="row_version '' is empty", value=None)
    ]


# Ambiguous names (docs/correctness.md): ``SHORT_NAME → NAME`` and ``NAME → legal_name`` (source → alias).
AMBIGUOUS = [
    col("short_name", "text", source="SHORT_NAME", api="NAME", key=True),
    col("legal_name", "text", source="NAME", api="legal_name"),
    col("c", "text", source="C_SRC", api="c"),
]


def test_an_ambiguous_key_alias_is_read_by_the_rows_mode(pg: Conn) -> None:
    s = make(pg, AMBIGUOUS, ["short_name"])
    by_alias = {"NAME": "s", "legal_name": "L", "c": 1}
    by_source = {"SHORT_NAME": "s", "NAME": "L", "C_SRC": 1}
    assert s.raw_key(by_alias, None) == "s"
    assert s.raw_key(by_source, None) == "s"  # not "L", the value under NAME
    assert s.raw_key({"SHORT_NAME": "s", "NAME": "L"}, None) == "s"
    assert s.raw_key({"NAME": "L"}, None) == "L"  # alias reading: NAME is the key alias
    assert s.build([raw(by_alias)], []) == [(1, "1", False, "s", "L", 1)]
    assert s.build([raw(by_source)], []) == [(2, "1", False, "s", "L", 1)]


def test_a_key_source_name_that_is_another_alias_is_ambiguous_too(pg: Conn) -> None:
    cols = [
        col("legal_name", "text", source="NAME", api="legal_name", key=True),
        col("short_name", "text", source="SHORT_NAME", api="NAME"),
        col("c", "text", source="C_SRC", api="c"),
    ]
    s = make(pg, cols, ["legal_name"])
    # More source names than aliases: the row is read by source name, so its key is under NAME.
    data = {"legal_name": "L", "NAME": "N", "SHORT_NAME": "S", "C_SRC": "c"}
    assert s.raw_key(data, None) == "N"
    assert s.build([raw(data)], [])[0][3] == "N"
    assert s.raw_key({"legal_name": "L", "NAME": "N", "c": 1}, None) == "L"


def test_raw_key_agrees_with_build(pg: Conn) -> None:
    """The page stream's key function must see the key the loader stages."""
    s = make(pg, AMBIGUOUS, ["short_name"])
    cases: list[tuple[dict[str, Any], dict[str, Any] | None]] = [
        ({"NAME": "s", "legal_name": "L"}, None),
        ({"SHORT_NAME": "s", "NAME": "L"}, None),
        ({"legal_name": "L"}, {"SHORT_NAME": "o"}),
        ({"NAME": "L", "C_SRC": 2, "SHORT_NAME": "s"}, None),
    ]
    for data, okeys in cases:
        built = s.build([raw(data, okeys=okeys)], [])
        assert s.raw_key(data, okeys) == built[0][3], data


def test_raw_key_reads_a_row_dominated_by_source_names_by_source_name(pg: Conn) -> None:
    """A row carrying the key under its alias and its source name is read as build reads it: by source
    name when source names explain more of it (raw_key used to take the alias' value)."""
    s = make(pg)
    data = {"Id": 1, "ID": 2, "NAME": "x"}
    assert s.build([raw(data)], [])[0][3] == 2
    assert s.raw_key(data, None) == 2
    assert s.raw_key({"Id": 1, "ID": 2, "Name": "x"}, None) == 1


def test_raw_key_plain_names(pg: Conn) -> None:
    s = make(pg)
    assert s.raw_key({"Id": 1, "Name": "a"}, None) == 1
    assert s.raw_key({"ID": 2, "NAME": "a"}, None) == 2
    assert s.raw_key({"ID": 3, "Name": "a", "QTY": 1}, None) == 3
    assert s.raw_key({"Name": "a"}, None) is None
    assert s.raw_key({"Name": "a", "ID": 4}, None) is None  # a tie is read by alias, as build reads it
    assert s.raw_key({"Name": "a", "ID": 4, "NAME": "b"}, {"ID": 7}) == 4


# -- build: rejects --------------------------------------------------------------------------


def test_a_row_with_a_problem_is_rejected_with_its_reason(pg: Conn) -> None:
    s = make(pg)
    rejects: list[Reject] = []
    out = s.build(
        [
            raw({"Id": 1, "Name": "a", "Qty": 1, "Blob": None, "Doc": None}, None, problem="row_version [] is bad"),
            raw({"Id": 2, "Name": "b", "Qty": 2, "Blob": None, "Doc": None}),
            raw({"Qty": {"x": 1}}, okeys={"ID": 3}, problem="no version"),
        ],
        rejects,
    )
    assert out == [(2, "1", False, 2, "b", 2, None, None)]
    assert rejects == [
        Reject(business_key={"id": 1}, column=None, reason="row_version [] is bad", value=None),
        Reject(business_key={"id": 3}, column=None, reason="no version", value=None),
    ]
    assert s.seq == 3


def test_object_or_array_key_values_are_rejected_naming_the_column(pg: Conn) -> None:
    s = make(pg, COMPOSITE, ["b", "a"])
    rejects: list[Reject] = []
    out = s.build(
        [
            raw({"A": {"k": 1}, "B": 1}),
            raw({"A": "x", "B": [1, 2]}),
            raw({"A": "ok", "B": 2, "Note": {"fine": True}}),
            raw({"A": ["p"], "B": {"q": 1}}),
        ],
        rejects,
    )
    assert out == [(3, "1", False, "ok", {"fine": True}, 2, None)]
    assert rejects == [
        Reject(
            business_key={"b": 1, "a": "{'k': 1}"},
            column="a",
            reason="business key value is an object",
            value="{'k': 1}",
        ),
        Reject(
            business_key={"b": "[1, 2]", "a": "x"}, column="b", reason="business key value is an array", value="[1, 2]"
        ),
        # The first key column (in key order) is the one named.
        Reject(
            business_key={"b": "{'q': 1}", "a": "['p']"},
            column="b",
            reason="business key value is an object",
            value="{'q': 1}",
        ),
    ]


def test_conversion_failures_reject_the_row_naming_the_column(pg: Conn) -> None:
    s = make(pg)
    rejects: list[Reject] = []
    out = s.build(
        [
            raw({"Id": 1, "Blob": "not base64!"}),
            raw({"Id": 2, "Blob": 12}),
            raw({"Id": 3, "Blob": None, "Doc": {"s": {1, 2}}}),
            raw({"Id": 4, "Blob": "aGk="}),
        ],
        rejects,
    )
    assert out == [(4, "1", False, 4, None, None, b"hi", None)]
    assert rejects == [
        Reject(
            business_key={"id": 1},
            column="blob",
            reason="invalid value: Only base64 data is allowed",
            value="not base64!",
        ),
        Reject(business_key={"id": 2}, column="blob", reason="invalid value: expected a base64 string", value="12"),
        Reject(
            business_key={"id": 3},
            column="doc",
            reason="invalid value: Type is not JSON serializable: set",
            value="{'s': {1, 2}}",
        ),
    ]


# -- drift and renamed columns ---------------------------------------------------------------


def test_unknown_names_are_noted_as_drift(pg: Conn) -> None:
    s = make(pg)
    full = {"Id": 1, "Name": "a", "Qty": 1, "Blob": None, "Doc": None}
    out = s.build([raw({**full, "extra": 1}), raw({**full, "Id": 2, "more": 2})], [])
    assert [r[3:5] for r in out] == [(1, "a"), (2, "a")]
    assert s.drift == {"extra", "more"}
    s.build([raw({**full, "third": 3})], [])
    assert s.drift == {"extra", "more", "third"}
    s.build([raw(full)], [])
    assert s.drift == {"extra", "more", "third"}
    # A missing business key with a new name is no rename: the key may come from the oracle.
    s.build([raw({"Name": "a", "Qty": 1, "Blob": None, "Doc": None, "id2": 1}, okeys={"ID": 9})], [])
    assert "id2" in s.drift


def test_a_known_column_gone_and_an_unknown_one_new_is_a_schema_change(pg: Conn) -> None:
    s = make(pg)
    rows = [raw({"Id": 1, "Qty": 1, "Blob": None, "Nom": "a", "Document": {}})]
    with pytest.raises(SchemaChanged) as info:
        s.build(rows, [])
    assert str(info.value) == (
        "the source no longer sends Doc, Name but sends Document, Nom: the API changed; nothing was overwritten;"
        " run 'syncflow discover' and sync again"
    )
    assert info.value.details == {"missing_columns": ["Doc", "Name"], "new_columns": ["Document", "Nom"]}
    assert s.drift == {"Nom", "Document"}
    # Read by source name, the gone names are source names.
    with pytest.raises(SchemaChanged) as info:
        s.build([raw({"ID": 1, "QTY": 1, "BLOB": None, "DOC": None, "LABEL": "x"})], [])
    assert info.value.details == {"missing_columns": ["NAME"], "new_columns": ["LABEL"]}
    # Gone only from some rows of the page is not a rename.
    ok = s.build([raw({"Id": 1, "Qty": 1, "Blob": None, "Doc": None, "Nom": "x"}), raw({"Id": 2, "Name": "b"})], [])
    assert [r[3:5] for r in ok] == [(1, None), (2, "b")]


# -- add, send, queued, duplicates -----------------------------------------------------------


def test_add_queues_and_sends_in_chunks(pg: Conn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stage, "COPY_CHUNK", 3)
    s = make(pg)
    rejects: list[Reject] = []
    rows = s.build([raw({"Id": i, "Name": str(i)}) for i in range(1, 6)], rejects)
    s.add(rows[:2], rejects)
    assert (s.staged, s.queued, staged(pg)) == (0, 2, [])
    s.add(rows[2:3], rejects)  # the third row reaches COPY_CHUNK: sent
    assert (s.staged, s.queued) == (3, 3)
    assert [r[3] for r in staged(pg)] == ["1", "2", "3"]
    s.add(rows[3:], rejects)
    assert (s.staged, s.queued) == (3, 5)
    s.send(rejects)
    assert (s.staged, s.queued) == (5, 5)
    s.send(rejects)  # nothing queued: nothing sent
    assert s.staged == 5
    assert staged(pg) == [(str(i), "1", "false", str(i), str(i), None, None, None) for i in range(1, 6)]
    assert rejects == []
    assert not s.has_dups


def test_has_tombs_within_a_batch_until_truncate(pg: Conn) -> None:
    s = make(pg)
    rejects: list[Reject] = []
    s.add(s.build([raw({"Id": 1, "Name": "a"})], rejects), rejects)
    assert not s.has_tombs
    s.add(s.build([raw({"Id": 2, "Name": "a"}, tomb=True)], rejects), rejects)
    assert s.has_tombs
    s.add(s.build([raw({"Id": 3, "Name": "a"})], rejects), rejects)
    assert s.has_tombs
    s.send(rejects)
    s.truncate()
    assert not s.has_tombs


def test_has_dups_within_a_batch_until_truncate(pg: Conn) -> None:
    s = make(pg)
    rejects: list[Reject] = []
    s.add(s.build([raw({"Id": 1, "Name": "a"}), raw({"Id": 2, "Name": "a"})], rejects), rejects)
    assert not s.has_dups
    s.add(s.build([raw({"Id": 3, "Name": "a"})], rejects), rejects)
    assert not s.has_dups
    s.add(s.build([raw({"Id": 1, "Name": "b"})], rejects), rejects)  # seen in an earlier add of this batch
    assert s.has_dups
    s.send(rejects)
    assert s.staged == 4
    s.truncate()
    assert (s.staged, s.queued, s.has_dups, staged(pg)) == (0, 0, False, [])
    s.add(s.build([raw({"Id": 1, "Name": "a"})], rejects), rejects)
    assert not s.has_dups  # a new batch
    s.add(s.build([raw({"Id": 5, "Name": "a"}), raw({"Id": 5, "Name": "b"})], rejects), rejects)
    assert s.has_dups  # twice in one add
    s.send(rejects)
    assert [r[3] for r in staged(pg)] == ["1", "5", "5"]
    assert rejects == []


def test_has_dups_looks_at_the_whole_composite_key(pg: Conn) -> None:
    s = make(pg, COMPOSITE, ["b", "a"])
    rejects: list[Reject] = []
    rows = s.build(
        [
            raw({"A": "x", "B": 1, "Note": "same", "C": "same"}),
            raw({"A": "y", "B": 1, "Note": "same", "C": "same"}),
            raw({"A": "x", "B": 2, "Note": "same", "C": "same"}),
        ],
        rejects,
    )
    s.add(rows, rejects)
    assert not s.has_dups
    s.add(s.build([raw({"A": "y", "B": 1, "Note": "other", "C": "other"})], rejects), rejects)
    assert s.has_dups


def test_has_dups_reads_the_key_column_not_its_neighbours(pg: Conn) -> None:
    cols = [col("n", "text"), col("id", "integer", key=True), col("m", "text")]
    s = make(pg, cols, ["id"])
    rejects: list[Reject] = []
    s.add(
        s.build([raw({"N": "same", "Id": 1, "M": "same"}), raw({"N": "same", "Id": 2, "M": "same"})], rejects), rejects
    )
    assert not s.has_dups
    s.add(s.build([raw({"N": "x", "Id": 2, "M": "y"})], rejects), rejects)
    assert s.has_dups


# -- load: COPY and bisection ----------------------------------------------------------------


def test_load_of_nothing_stages_nothing(pg: Conn) -> None:
    s = make(pg)
    assert s.load([], []) == 0
    assert s.staged == 0


def test_load_bisects_a_page_into_exact_rejects_and_loads_the_rest(pg: Conn) -> None:
    s = make(pg)
    rejects: list[Reject] = []
    data: list[dict[str, Any]] = [{"Id": i, "Name": f"n{i}", "Qty": i, "Doc": {"i": i}} for i in range(1, 21)]
    data[2]["Qty"] = 12.5  # for PostgreSQL to refuse
    data[6]["Name"] = "x" * 250  # too long for varchar(5): the preview is cut at 200 characters
    data[16]["Id"] = None  # a NULL key
    data[18]["Qty"] = "abc"
    rows = s.build([raw(d) for d in data], rejects)
    assert len(rows) == 20
    assert rejects == []
    assert s.load(rows, rejects) == 16
    assert s.staged == 16
    assert rejects == [
        Reject(
            business_key={"id": 3}, column="qty", reason='invalid input syntax for type integer: "12.5"', value="12.5"
        ),
        Reject(
            business_key={"id": 7},
            column="name",
            reason="value too long for type character varying(5)",
            value="x" * 200,
        ),
        Reject(
            business_key={"id": None},
            column="id",
            reason='null value in column "id" of relation "_sf_stage" violates not-null constraint',
            value=None,
        ),
        Reject(
            business_key={"id": 19}, column="qty", reason='invalid input syntax for type integer: "abc"', value="abc"
        ),
    ]
    got = staged(pg)
    assert [r[3] for r in got] == [str(i) for i in range(1, 21) if i not in (3, 7, 17, 19)]
    assert got[0] == ("1", "1", "false", "1", "n1", "1", None, '{"i": 1}')
    # A second load adds to the count.
    assert s.load(s.build([raw({"Id": 30})], rejects), rejects) == 1
    assert s.staged == 17


def test_load_small_pages_row_by_row(pg: Conn) -> None:
    s = make(pg)
    rejects: list[Reject] = []
    for n in (1, 2, 8, 9):
        rows = s.build([raw({"Id": i, "Qty": "bad" if i == n else i}) for i in range(1, n + 1)], rejects)
        assert s.load(rows, rejects) == n - 1
        assert rejects[-1].business_key == {"id": n}
        assert rejects[-1].column == "qty"
    assert len(rejects) == 4
    assert s.staged == 0 + 1 + 7 + 8


def test_load_writes_objects_in_a_text_column_as_json(pg: Conn) -> None:
    cols = [col("id", "integer", key=True), col("note", "text"), col("doc", "jsonb")]
    s = make(pg, cols, ["id"])
    rejects: list[Reject] = []
    rows = s.build(
        [
            raw({"Id": 1, "Note": {"a": [1, Decimal("2.50")]}}),
            raw({"Id": 2, "Note": ["x"]}),
            raw({"Id": 3, "Note": "t"}),
        ],
        rejects,
    )
    assert s.load(rows, rejects) == 3
    assert rejects == []
    assert [r[3:] for r in staged(pg)] == [
        ("1", '{"a":[1,2.50]}', None),
        ("2", '["x"]', None),
        ("3", "t", None),
    ]


def test_lone_surrogates_are_rejected_and_the_rest_loads(pg: Conn) -> None:
    s = make(pg)
    rejects: list[Reject] = []
    rows = s.build(
        [raw({"Id": 1, "Name": "ok"}), raw({"Id": 2, "Name": "a\ud800"}), raw({"Id": 3, "Name": "\udfff"})], rejects
    )
    assert s.load(rows, rejects) == 1
    assert rejects == [
        Reject(
            business_key={"id": 2},
            column=None,
            reason="text that is not valid Unicode: surrogates not allowed",
            value=None,
        ),
        Reject(
            business_key={"id": 3},
            column=None,
            reason="text that is not valid Unicode: surrogates not allowed",
            value=None,
        ),
    ]
    assert [r[3:5] for r in staged(pg)] == [("1", "ok")]


def test_an_error_in_a_staging_column_names_no_column(pg: Conn) -> None:
    s = make(pg)
    rejects: list[Reject] = []
    rows = [(1, "1", None, 1, "a", 1, None, None), (2, "1", False, 2, "b", 2, None, None)]
    assert s.load(rows, rejects) == 1
    assert rejects == [
        Reject(
            business_key={"id": 1},
            column=None,
            reason='null value in column "_bridge_tomb" of relation "_sf_stage" violates not-null constraint',
            value=None,
        )
    ]


def test_reject_values_are_previews(pg: Conn) -> None:
    s = make(pg)
    r = s._reject([1, "x" * 300, 5, None, None], "name", "why")
    assert r == Reject(business_key={"id": 1}, column="name", reason="why", value="x" * 200)
    assert s._reject(["k" * 300, None, 5, None, None], "qty", "why") == Reject(
        business_key={"id": "k" * 200}, column="qty", reason="why", value="5"
    )
    assert s._reject([1, None, 5, None, None], "name", "why").value is None
    assert s._reject([1, "a", 5, None, None], "other", "why").value is None
    assert s._reject([1, "a", 5, None, None], None, "why").value is None


def test_truncate_empties_staging_but_keeps_seq(pg: Conn) -> None:
    s = make(pg)
    rejects: list[Reject] = []
    s.add(s.build([raw({"Id": 1}), raw({"Id": 1})], rejects), rejects)
    s.send(rejects)
    assert (s.staged, s.has_dups) == (2, True)
    s.truncate()
    assert (s.staged, s.has_dups, s.queued, staged(pg)) == (0, False, 0, [])
    assert s._batch_keys == set()
    assert s.build([raw({"Id": 1})], rejects)[0][0] == 3


def test_send_and_add_pass_rejects_on(pg: Conn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stage, "COPY_CHUNK", 2)
    s = make(pg)
    rejects: list[Reject] = []
    s.add(s.build([raw({"Id": 1, "Qty": "x"})], rejects), rejects)
    s.send(rejects)
    s.add(s.build([raw({"Id": 2, "Qty": "y"}), raw({"Id": 3, "Qty": 3})], rejects), rejects)  # sent by add
    assert [(r.business_key, r.column) for r in rejects] == [({"id": 1}, "qty"), ({"id": 2}, "qty")]
    assert (s.staged, s.queued) == (1, 1)


def test_a_failing_copy_is_split_in_halves_then_row_by_row(pg: Conn, monkeypatch: pytest.MonkeyPatch) -> None:
    """Few COPY statements for one bad row: halves down to ``SMALL`` rows, then one row at a time."""
    sizes: list[int] = []
    real_copy = Stage._copy

    def spy(self: Stage, rows: Any) -> None:
        sizes.append(len(rows))
        real_copy(self, rows)

    monkeypatch.setattr(Stage, "_copy", spy)
    s = make(pg)
    assert stage.SMALL == 8
    for n, want in [
        (18, [18, 18, 9, 4, 1, 1, 1, 1, 5, 9]),  # 9 rows are more than SMALL: halved
        (16, [16, 16, 8, 1, 1, 1, 1, 1, 1, 1, 1, 8]),  # 8 rows are few enough: row by row
        (3, [3, 3, 1, 1, 1]),
    ]:
        sizes.clear()
        rejects: list[Reject] = []
        rows = s.build([raw({"Id": i, "Qty": "bad" if i == 2 else i}) for i in range(1, n + 1)], rejects)
        assert s.load(rows, rejects) == n - 1
        assert [r.business_key for r in rejects] == [{"id": 2}]
        assert sizes == want, n
    sizes.clear()
    assert s.load(s.build([raw({"Id": 50})], []), []) == 1
    assert sizes == [1]


def test_a_nul_character_is_rejected_with_psycopgs_reason(pg: Conn) -> None:
    s = make(pg)
    rejects: list[Reject] = []
    assert s.load(s.build([raw({"Id": 1, "Name": "a\x00b"}), raw({"Id": 2, "Name": "ok"})], rejects), rejects) == 1
    assert len(rejects) == 1
    assert rejects[0].business_key == {"id": 1}
    assert rejects[0].column is None
    assert "NUL" in rejects[0].reason
    assert rejects[0].reason != "None"


def test_a_page_read_by_source_name_reads_an_ambiguous_name_by_source_name_in_every_row(pg: Conn) -> None:
    """docs/correctness.md: never a mix. NAME alone is an alias too, yet on this page it is a source name."""
    s = make(pg, AMBIGUOUS, ["short_name"])
    rows = [raw({"SHORT_NAME": "s", "NAME": "L", "C_SRC": 1}), raw({"NAME": "L2"})]
    assert s.build(rows, []) == [(1, "1", False, "s", "L", 1), (2, "1", False, None, "L2", None)]
    alias_page = [raw({"NAME": "s", "legal_name": "L", "c": 1}), raw({"NAME": "t"})]
    assert s.build(alias_page, []) == [(3, "1", False, "s", "L", 1), (4, "1", False, "t", None, None)]


def test_raw_key_of_an_alias_row_without_its_key_alias(pg: Conn) -> None:
    """A row of aliases only is read by alias even when the key's source name is another column's alias."""
    cols = [
        col("legal_name", "text", source="NAME", api="legal_name", key=True),
        col("short_name", "text", source="SHORT_NAME", api="NAME"),
    ]
    s = make(pg, cols, ["legal_name"])
    assert s.raw_key({"NAME": "N"}, None) is None
    assert s.raw_key({"NAME": "N"}, {"NAME": "o"}) == "o"
    assert s.build([raw({"NAME": "N"}, okeys={"NAME": "o"})], [])[0][3:] == ("o", "N")


def test_full_rows_take_the_itemgetter_path(pg: Conn, monkeypatch: pytest.MonkeyPatch) -> None:
    """Module docstring: rows are built with ``itemgetter``; the per-name slow path is for rows lacking names."""
    s = make(pg)
    assert s.track_seen is True
    assert make(pg, track_seen=False).track_seen is False

    def refuse(*args: Any) -> Any:
        raise AssertionError("slow path taken")

    monkeypatch.setattr(Stage, "_slow_values", refuse)
    full = {"Id": 1, "Name": "a", "Qty": 1, "Blob": None, "Doc": None}
    assert s.build([raw(full)], [])[0][3:5] == (1, "a")
    assert s.build([raw({k.upper(): v for k, v in full.items()})], [])[0][3:5] == (1, "a")


def test_json_text_takes_the_second_pass_only_for_big_integers(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    real = stage._big_ints

    def spy(value: Any) -> Any:
        calls.append(value)
        return real(value)

    monkeypatch.setattr(stage, "_big_ints", spy)
    assert stage.json_text({"p": Decimal("1.5"), "n": 2**63 - 1}) == '{"p":1.5,"n":9223372036854775807}'
    assert calls == []
    assert stage.json_text({"n": 2**64}) == '{"n":18446744073709551616}'
    assert calls[0] == {"n": 2**64}  # then once per nested value


# -- the seen keys: what the delete step compares the table with ---------------------------------


def _stage_keys(s: Stage, pg: Conn, ids: list[int]) -> None:
    s.load([(i + 1, "1", False, k, None, None, None, None) for i, k in enumerate(ids)], [])
    s.record_seen()
    s.truncate()


def test_seen_keys_are_recorded_counted_and_forgotten(pg: Conn) -> None:
    s = make(pg)
    pg.execute("INSERT INTO erp.items (id, name) VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd')")
    pg.execute("UPDATE erp.items SET _bridge_deleted = true WHERE id = 4")
    _stage_keys(s, pg, [1, 2])
    _stage_keys(s, pg, [2])  # a key seen again counts once among the distinct keys
    assert s.seen_counts() == (3, 2)
    s.analyze_seen()
    assert s.seen_counts() == (3, 2)
    # Live rows 1, 2, 3 (4 is soft-deleted); 3 was not seen.
    assert s.unseen_counts() == (3, 1)
    assert s.distinct_seen_all() == 2
    s.forget_seen()
    assert s.seen_counts() == (0, 0)
    assert s.unseen_counts() == (3, 3)
    # The earlier read's keys still count as fetched, once, with the new read's.
    _stage_keys(s, pg, [2, 3])
    assert s.distinct_seen_all() == 3
    assert s.unseen_counts() == (3, 1)


def test_a_first_load_starts_tracking_seen_keys_when_asked(pg: Conn) -> None:
    s = make(pg, track_seen=False)
    assert not exists(pg, merge.SEEN)
    _stage_keys(s, pg, [1])  # not tracked: nothing is recorded, and no table is needed
    s.forget_seen()
    s.start_seen()
    assert s.track_seen
    assert exists(pg, merge.SEEN)
    s.start_seen()  # again: nothing changes (the table is not created twice)
    _stage_keys(s, pg, [5, 6])
    assert s.seen_counts() == (2, 2)


def test_a_versioned_batch_keeps_each_keys_newest_row_version_as_its_last_occurrence(pg: Conn) -> None:
    """A range-parallel run stages pages out of row-version order: an older version of a key that comes after
    a newer one in the same batch is not staged (the merge keeps a key's last occurrence), by the source's
    own order (digit strings as integers, else as strings), which fixed-width hex mixes."""
    s = make(pg)
    s.start_versioned()
    rejects: list[Reject] = []
    rows = [
        raw({"Id": 1, "Name": "new"}, "00000000000010c9"),
        raw({"Id": 1, "Name": "old"}, "0000000000001012"),  # all digits, yet below 10c9
        raw({"Id": 2, "Name": "a"}, "9"),
        raw({"Id": 2, "Name": "b"}, "10"),  # as integers: newer, kept after the first
        raw({"Id": 3, "Name": "x"}, "5"),
        raw({"Id": 3, "Name": "y"}, "5"),  # the same version again: the later one is kept
    ]
    s.add(s.build(rows, rejects), rejects)
    s.send(rejects)
    assert [(r[3], r[4]) for r in staged(pg)] == [("1", "new"), ("2", "a"), ("2", "b"), ("3", "x"), ("3", "y")]
    # Without a versioned run every row is staged (the last occurrence wins, as the source sent them).
    plain = make(pg)
    plain.add(plain.build(rows[:2], rejects), rejects)
    plain.send(rejects)
    assert [r[4] for r in staged(pg)] == ["new", "old"]
