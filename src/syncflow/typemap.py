"""APISmith ``data_type`` strings to PostgreSQL types (protocol "Types").

One function, :func:`map_type`, and one table. Input is untrusted text from
another system; the output is always one of a fixed set of type spellings
built here, never the input itself, so it is safe to place in DDL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_VARCHAR = 10_485_760
MAX_NUMERIC_PRECISION = 1000

_TEXT = frozenset(
    {
        "VARCHAR2",
        "NVARCHAR2",
        "VARCHAR",
        "STRING",
        "TEXT",
        "CLOB",
        "NCLOB",
        "LONG",
        "CHAR",
        "NCHAR",
        "CHARACTER",
        "CHARACTER VARYING",
    }
)
_VARCHAR_N = frozenset(
    {"VARCHAR2", "NVARCHAR2", "VARCHAR", "CHAR", "NCHAR", "STRING", "CHARACTER", "CHARACTER VARYING"}
)
_BIGINT = frozenset({"INTEGER", "INT", "BIGINT", "SMALLINT"})
_DOUBLE = frozenset({"FLOAT", "BINARY_DOUBLE", "DOUBLE", "DOUBLE PRECISION"})
_REAL = frozenset({"BINARY_FLOAT", "REAL"})
_TIMESTAMP = frozenset({"TIMESTAMP", "DATETIME", "TIMESTAMP WITHOUT TIME ZONE"})
_TIMESTAMPTZ = frozenset({"TIMESTAMP WITH TIME ZONE", "TIMESTAMP WITH LOCAL TIME ZONE", "DATETIMETZ", "TIMESTAMPTZ"})
_BOOL = frozenset({"BOOLEAN", "BOOL"})
_BYTEA = frozenset({"BLOB", "RAW", "LONG RAW", "BINARY", "BYTEA"})
_JSON = frozenset({"JSON", "JSONB", "OBJECT", "ARRAY"})
_NUMERIC = frozenset({"NUMBER", "DECIMAL", "NUMERIC"})

_TYPE_RE = re.compile(
    r"^\s*(?P<head>[A-Za-z_][A-Za-z0-9_ ]*?)\s*"
    r"(?:\(\s*(?P<args>[^()]*)\)\s*(?P<tail>[A-Za-z_ ]*?))?\s*$"
)


@dataclass(frozen=True)
class MappedType:
    """The PostgreSQL type chosen for a source type; ``known`` is False for the fallback."""

    pg_type: str
    known: bool = True


def _args(text: str | None) -> list[int | None] | None:
    """Parse ``50 BYTE`` or ``10, 3`` or ``*, 0``; None when not numbers."""
    if text is None:
        return []
    out: list[int | None] = []
    for part in text.split(","):
        part = re.sub(r"\s+(BYTE|CHAR)$", "", part.strip(), flags=re.IGNORECASE)
        if part == "*":
            out.append(None)
        elif re.fullmatch(r"-?\d+", part):
            out.append(int(part))
        else:
            return None
    return out


def _number(args: list[int | None]) -> str:
    if not args:
        return "numeric"
    precision = args[0] if args[0] is not None else 38
    scale = args[1] if len(args) > 1 and args[1] is not None else 0
    if len(args) > 2 or not 1 <= precision <= MAX_NUMERIC_PRECISION:
        return "numeric"
    if scale == 0:
        if precision <= 9:
            return "integer"
        if precision <= 18:
            return "bigint"
        return f"numeric({precision},0)"
    if 0 < scale <= precision:
        return f"numeric({precision},{scale})"
    return "numeric"


# Source type names that map to one PostgreSQL type: (names, only without arguments, PostgreSQL type).
_PLAIN: tuple[tuple[frozenset[str], bool, str], ...] = (
    (_TEXT, True, "text"),
    (_BIGINT, True, "bigint"),
    (_DOUBLE, False, "double precision"),
    (_REAL, True, "real"),
    (_TIMESTAMP, False, "timestamp"),
    (_TIMESTAMPTZ, False, "timestamptz"),
    (_BOOL, True, "boolean"),
    (_BYTEA, False, "bytea"),
    (_JSON, True, "jsonb"),
)


def map_type(data_type: str | None) -> MappedType:
    """Map a source type to PostgreSQL; unknown spellings fall back to ``text``."""
    if data_type is None or not str(data_type).strip():
        return MappedType("text")
    raw = str(data_type)
    m = _TYPE_RE.match(raw)
    if not m:
        return MappedType("text", known=False)
    head = re.sub(r"\s+", " ", m.group("head")).strip()
    tail = re.sub(r"\s+", " ", m.group("tail") or "").strip()
    name = f"{head} {tail}".strip().upper() if tail else head.upper()
    args = _args(m.group("args"))
    if args is None:
        return MappedType("text", known=False)

    # Oracle DATE carries a time of day; a lower-case "date" comes from a
    # non-Oracle source and means a calendar date (protocol "Types").
    if name == "DATE":
        return MappedType("date" if head == "date" else "timestamp(0)")
    if name == "DATEONLY":
        return MappedType("date")
    if name in _VARCHAR_N and len(args) == 1 and args[0] is not None:
        n = args[0]
        return MappedType(f"varchar({n})" if 1 <= n <= MAX_VARCHAR else "text")
    if name in _NUMERIC:
        return MappedType(_number(args))
    for names, bare_only, pg_type in _PLAIN:
        if name in names and not (bare_only and args):
            return MappedType(pg_type)
    return MappedType("text", known=False)


# -- widening ------------------------------------------------------------------------------

_VARCHAR_RE = re.compile(r"^(?:varchar|character varying)\((\d+)\)$")
_NUMERIC_RE = re.compile(r"^numeric\((\d+),(\d+)\)$")


def normalize(pg_type: str) -> str:
    """Catalog spellings (``format_type``) to the spellings :func:`map_type` uses."""
    t = pg_type.strip().lower()
    t = re.sub(r"^character varying", "varchar", t)
    t = re.sub(r"\s*,\s*", ",", t)
    return {
        "timestamp without time zone": "timestamp",
        "timestamp(0) without time zone": "timestamp(0)",
        "timestamp with time zone": "timestamptz",
        "int4": "integer",
        "int8": "bigint",
        "float8": "double precision",
        "float4": "real",
        "bool": "boolean",
    }.get(t, t)


def _int_rank(t: str) -> int | None:
    return {"integer": 1, "bigint": 2}.get(t)


def is_widening(old: str, new: str) -> bool:
    """True when every value of ``old`` fits ``new`` unchanged (a safe ALTER TYPE).

    Covers the protocol's safe widenings: varchar(n) → varchar(m ≥ n) or text;
    integer → bigint → numeric; numeric(p,s) → numeric with room for as many
    integer digits and as many decimals; timestamp → timestamptz.
    """
    old, new = normalize(old), normalize(new)
    if old == new:
        return True
    vo, vn = _VARCHAR_RE.match(old), _VARCHAR_RE.match(new)
    if vo and (new == "text" or (vn and int(vn.group(1)) >= int(vo.group(1)))):
        return True
    ro, rn = _int_rank(old), _int_rank(new)
    if ro is not None:
        if rn is not None:
            return rn >= ro
        if new == "numeric":
            return True
        nm = _NUMERIC_RE.match(new)
        if nm:
            digits = 10 if old == "integer" else 19
            return int(nm.group(1)) - int(nm.group(2)) >= digits
        return False
    no, nn = _NUMERIC_RE.match(old), _NUMERIC_RE.match(new)
    if no and new == "numeric":
        return True
    if no and nn:
        p0, s0, p1, s1 = (int(no.group(1)), int(no.group(2)), int(nn.group(1)), int(nn.group(2)))
        return s1 >= s0 and (p1 - s1) >= (p0 - s0)
    return bool(old in ("timestamp", "timestamp(0)") and new in ("timestamptz", "timestamp"))
