"""One test per row of the protocol's type table, plus the widening rules."""

from __future__ import annotations

import pytest

from syncflow.typemap import is_widening, map_type


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # VARCHAR2(n), NVARCHAR2(n), VARCHAR(n), CHAR(n), NCHAR(n), string(n) -> varchar(n)
        ("VARCHAR2(50)", "varchar(50)"),
        ("VARCHAR2(50 BYTE)", "varchar(50)"),
        ("NVARCHAR2(200)", "varchar(200)"),
        ("VARCHAR(10)", "varchar(10)"),
        ("CHAR(2)", "varchar(2)"),
        ("NCHAR(3 CHAR)", "varchar(3)"),
        ("string(40)", "varchar(40)"),
        (" varchar2 ( 10 ) ", "varchar(10)"),
    ],
)
def test_row_varchar_n(source: str, expected: str) -> None:
    assert map_type(source).pg_type == expected


@pytest.mark.parametrize("source", ["VARCHAR2", "VARCHAR", "string", "text", "CLOB", "NCLOB", "LONG"])
def test_row_text(source: str) -> None:
    assert map_type(source).pg_type == "text" and map_type(source).known


@pytest.mark.parametrize("source", ["NUMBER(1)", "NUMBER(9)", "NUMBER(9,0)", "number(5)"])
def test_row_number_up_to_9_is_integer(source: str) -> None:
    assert map_type(source).pg_type == "integer"


@pytest.mark.parametrize("source", ["NUMBER(10)", "NUMBER(18,0)", "NUMBER(12)"])
def test_row_number_10_to_18_is_bigint(source: str) -> None:
    assert map_type(source).pg_type == "bigint"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("NUMBER(10,3)", "numeric(10,3)"),
        ("DECIMAL(12,2)", "numeric(12,2)"),
        ("NUMERIC(38,10)", "numeric(38,10)"),
        ("NUMBER(*,0)", "numeric(38,0)"),
        ("NUMBER(30)", "numeric(30,0)"),
    ],
)
def test_row_numeric_with_scale(source: str, expected: str) -> None:
    assert map_type(source).pg_type == expected


@pytest.mark.parametrize("source", ["NUMBER", "decimal", "numeric", "number"])
def test_row_numeric_without_precision(source: str) -> None:
    assert map_type(source).pg_type == "numeric"


@pytest.mark.parametrize("source", ["INTEGER", "INT", "integer", "int"])
def test_row_integer_is_bigint(source: str) -> None:
    assert map_type(source).pg_type == "bigint"


@pytest.mark.parametrize("source", ["FLOAT", "BINARY_DOUBLE", "double", "float", "FLOAT(126)"])
def test_row_double(source: str) -> None:
    assert map_type(source).pg_type == "double precision"


@pytest.mark.parametrize("source", ["BINARY_FLOAT", "real"])
def test_row_real(source: str) -> None:
    assert map_type(source).pg_type == "real"


def test_row_oracle_date_keeps_time_of_day() -> None:
    assert map_type("DATE").pg_type == "timestamp(0)"


@pytest.mark.parametrize("source", ["date", "DATEONLY", "dateonly"])
def test_row_lower_case_date_is_date(source: str) -> None:
    assert map_type(source).pg_type == "date"


@pytest.mark.parametrize("source", ["TIMESTAMP", "TIMESTAMP(6)", "datetime"])
def test_row_timestamp(source: str) -> None:
    assert map_type(source).pg_type == "timestamp"


@pytest.mark.parametrize(
    "source",
    [
        "TIMESTAMP WITH TIME ZONE",
        "TIMESTAMP(6) WITH TIME ZONE",
        "TIMESTAMP WITH LOCAL TIME ZONE",
        "timestamp(3) with local time zone",
        "datetimetz",
    ],
)
def test_row_timestamptz(source: str) -> None:
    assert map_type(source).pg_type == "timestamptz"


@pytest.mark.parametrize("source", ["boolean", "bool", "BOOLEAN"])
def test_row_boolean(source: str) -> None:
    assert map_type(source).pg_type == "boolean"


@pytest.mark.parametrize("source", ["BLOB", "RAW(16)", "LONG RAW", "binary"])
def test_row_bytea(source: str) -> None:
    assert map_type(source).pg_type == "bytea"


@pytest.mark.parametrize("source", ["json", "object", "array"])
def test_row_jsonb(source: str) -> None:
    assert map_type(source).pg_type == "jsonb"


@pytest.mark.parametrize(
    "source",
    ["INTERVAL DAY(2) TO SECOND(6)", "SDO_GEOMETRY", "XMLTYPE", "VARCHAR2(abc)", "); DROP TABLE x; --"],
)
def test_row_anything_else_is_text_with_warning(source: str) -> None:
    mapped = map_type(source)
    assert mapped.pg_type == "text"
    assert mapped.known is False


def test_absent_type_is_text() -> None:
    assert map_type(None).pg_type == "text"
    assert map_type("").known


@pytest.mark.parametrize(
    ("old", "new", "safe"),
    [
        ("varchar(10)", "varchar(20)", True),
        ("character varying(10)", "text", True),
        ("varchar(20)", "varchar(10)", False),
        ("integer", "bigint", True),
        ("bigint", "numeric", True),
        ("integer", "numeric(12,2)", True),
        ("bigint", "integer", False),
        ("numeric(10,3)", "numeric(12,3)", True),
        ("numeric(10,3)", "numeric(10,4)", False),
        ("numeric(10,3)", "numeric", True),
        ("timestamp without time zone", "timestamptz", True),
        ("timestamp(0) without time zone", "timestamp with time zone", True),
        ("text", "varchar(10)", False),
        ("text", "integer", False),
        ("timestamptz", "timestamp", False),
    ],
)
def test_widening(old: str, new: str, safe: bool) -> None:
    assert is_widening(old, new) is safe
