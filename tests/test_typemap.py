"""One test per row of the protocol's type table, plus the widening rules."""

from __future__ import annotations

import pytest

from syncflow.typemap import MappedType, is_widening, map_type, normalize


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
    assert map_type(source).pg_type == "text"
    assert map_type(source).known


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


# -- boundaries of the type table (found by mutation testing) -----------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("VARCHAR2(50 byte)", "varchar(50)"),  # Oracle length semantics in any case
        ("nvarchar2(8 char)", "varchar(8)"),
        ("VARCHAR2(1)", "varchar(1)"),  # the smallest length PostgreSQL accepts
        ("VARCHAR(10485760)", "varchar(10485760)"),  # PostgreSQL's largest varchar(n)
    ],
)
def test_varchar_length_bounds_kept(source: str, expected: str) -> None:
    """Lengths PostgreSQL can declare become varchar(n); the BYTE/CHAR qualifier is dropped in any case."""
    assert map_type(source) == MappedType(expected)


@pytest.mark.parametrize("source", ["VARCHAR2(0)", "VARCHAR(10485761)", "CHAR(-1)"])
def test_varchar_length_out_of_range_is_text(source: str) -> None:
    """A length PostgreSQL cannot declare falls back to unbounded text, still a known type."""
    assert map_type(source) == MappedType("text")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("NUMBER(19)", "numeric(19,0)"),  # one digit past bigint's 18 safe digits
        ("NUMBER(18)", "bigint"),
        ("NUMBER(10,1)", "numeric(10,1)"),  # the smallest scale
        ("NUMBER(3,3)", "numeric(3,3)"),  # scale equal to precision: only decimals
        ("NUMBER(1000,2)", "numeric(1000,2)"),  # PostgreSQL's largest precision
        ("NUMBER(1000)", "numeric(1000,0)"),
    ],
)
def test_number_precision_and_scale_bounds(source: str, expected: str) -> None:
    """Every precision/scale PostgreSQL can declare is kept exactly."""
    assert map_type(source) == MappedType(expected)


@pytest.mark.parametrize(
    "source",
    [
        "NUMBER(1001)",  # beyond PostgreSQL's numeric precision
        "NUMBER(1001,2)",
        "NUMBER(0)",  # no digits at all
        "NUMBER(0,0)",
        "NUMBER(10,2,1)",  # three arguments: not a numeric declaration
        "NUMBER(5,6)",  # scale beyond precision
        "NUMBER(10,-2)",  # negative scale (Oracle rounds to hundreds)
    ],
)
def test_number_that_postgresql_cannot_declare_is_plain_numeric(source: str) -> None:
    """Unrepresentable precision/scale falls back to unconstrained numeric, which holds any value."""
    assert map_type(source) == MappedType("numeric")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("double   precision", "double precision"),
        ("LONG   RAW", "bytea"),
        ("TIMESTAMP(6) WITH  TIME   ZONE", "timestamptz"),
        ("timestamp(3)  with local time zone", "timestamptz"),
    ],
)
def test_runs_of_whitespace_in_type_names(source: str, expected: str) -> None:
    """Whitespace inside a multi-word type name, before or after the arguments, is not significant."""
    assert map_type(source) == MappedType(expected)


@pytest.mark.parametrize(
    ("catalog", "expected"),
    [
        ("character varying(10)", "varchar(10)"),
        ("CHARACTER VARYING(10)", "varchar(10)"),
        ("numeric(10, 3)", "numeric(10,3)"),
        ("numeric(10 ,3)", "numeric(10,3)"),
        ("timestamp without time zone", "timestamp"),
        ("timestamp(0) without time zone", "timestamp(0)"),
        ("timestamp with time zone", "timestamptz"),
        ("int4", "integer"),
        ("int8", "bigint"),
        ("float8", "double precision"),
        ("float4", "real"),
        ("bool", "boolean"),
        ("  Integer ", "integer"),
        ("text", "text"),
    ],
)
def test_normalize_catalog_spellings(catalog: str, expected: str) -> None:
    """The catalog's spellings compare equal to map_type's, so an unchanged column is not reported as changed."""
    assert normalize(catalog) == expected


@pytest.mark.parametrize(
    ("old", "new", "safe"),
    [
        ("text", "text", True),  # same type: nothing to do, and nothing unsafe
        ("jsonb", "jsonb", True),
        ("int4", "integer", True),
        ("varchar(10)", "character varying(10)", True),
        ("varchar(10)", "varchar(010)", True),  # the same length, spelled with a leading zero
        ("integer", "integer", True),
        ("integer", "numeric(10,0)", True),  # 10 integer digits hold every integer
        ("integer", "numeric(11,2)", False),  # only 9 integer digits
        ("integer", "numeric(12,3)", False),
        ("bigint", "numeric(19,0)", True),  # 19 integer digits hold every bigint
        ("bigint", "numeric(18,0)", False),
        ("bigint", "numeric(20,2)", False),
        ("bigint", "double precision", False),  # doubles lose integers beyond 2**53
        ("integer", "text", False),  # not among the protocol's safe widenings
        ("integer", "real", False),
        ("numeric(10,3)", "numeric(11,4)", True),  # one more decimal, same integer digits
        ("numeric(10,3)", "numeric(11,3)", True),
        ("numeric(10,3)", "numeric(11,5)", False),  # loses an integer digit
        ("numeric(10,3)", "numeric(10,2)", False),
        ("numeric(10,3)", "text", False),
        ("text", "numeric(10,2)", False),
        ("varchar(10)", "numeric(10,2)", False),
        ("numeric(10,3)", "integer", False),
        ("timestamp(0)", "timestamp", True),  # fractional seconds gained
        ("timestamp(0) without time zone", "timestamp without time zone", True),
        ("timestamp", "timestamp(0)", False),  # would round fractional seconds
        ("timestamptz", "timestamptz", True),
        ("date", "timestamp", False),
    ],
)
def test_widening_boundaries(old: str, new: str, safe: bool) -> None:
    """Every value of old fits new unchanged exactly when is_widening says so."""
    assert is_widening(old, new) is safe
