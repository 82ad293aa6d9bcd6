"""PostgreSQL names derived from untrusted APISmith metadata (protocol "Names").

Deterministic: the same input gives the same name on every machine. The
mapping is stored with the entity, so a name never changes once assigned;
:func:`assign_names` only derives names for columns it has not seen before.
The result is always passed through ``psycopg.sql.Identifier`` by the DDL
and merge code: these rules make names readable, not safe — quoting does that.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping

MAX_IDENTIFIER_BYTES = 63
RESERVED_PREFIX = "_bridge_"
# PostgreSQL's system columns: a table cannot have a column of that name.
SYSTEM_COLUMNS = frozenset({"tableoid", "xmin", "cmin", "xmax", "cmax", "ctid", "oid"})
_HASH_LEN = 8


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:_HASH_LEN]


def pg_name(raw: str) -> str:
    """The base PostgreSQL name for an API name, before collision handling.

    Lower-case; anything outside ``[a-z0-9_]`` becomes ``_``; a leading digit
    gets a ``_`` prefix; a name in SyncFlow's reserved ``_bridge_`` space gets
    a ``src`` prefix, a system column's name (``xmin``, ``ctid``, ...) a
    ``src_`` prefix; longer than 63 bytes is truncated with a hash of the full
    name so that two long names differing only at the end stay distinct.
    """
    name = re.sub(r"[^a-z0-9_]", "_", raw.lower())
    if not name:
        name = "col_" + _short_hash(raw)
    if name[0].isdigit():
        name = "_" + name
    if name.startswith(RESERVED_PREFIX) or name in SYSTEM_COLUMNS:
        name = "src_" + name if name in SYSTEM_COLUMNS else "src" + name
    if len(name) > MAX_IDENTIFIER_BYTES:
        name = name[: MAX_IDENTIFIER_BYTES - _HASH_LEN - 1] + "_" + _short_hash(raw)
    return name


def _with_suffix(base: str, n: int) -> str:
    suffix = f"_{n}"
    return base[: MAX_IDENTIFIER_BYTES - len(suffix)] + suffix


def assign_names(
    api_names: Iterable[str],
    existing: Mapping[str, str] | None = None,
    *,
    taken: Iterable[str] = (),
) -> dict[str, str]:
    """Map each API name to a unique PostgreSQL name, keeping existing mappings.

    ``existing`` holds mappings stored by earlier runs (never changed);
    ``taken`` holds names already used otherwise. New names are derived in the
    given order; a collision gets ``_2``, ``_3``, ... so the outcome depends
    only on the metadata, not on chance.
    """
    existing = dict(existing or {})
    result: dict[str, str] = {}
    used = set(taken) | set(existing.values())
    for api in api_names:
        if api in existing:
            result[api] = existing[api]
            continue
        if api in result:
            continue
        base = pg_name(api)
        candidate, n = base, 1
        while candidate in used:
            n += 1
            candidate = _with_suffix(base, n)
        used.add(candidate)
        result[api] = candidate
    return result


# -- internal tables ---------------------------------------------------------------------------

# Names ending in this suffix belong to history tables: a data table never gets one.
HISTORY_SUFFIX = "__history"


def is_reserved_table_name(name: str) -> bool:
    """True for names kept for SyncFlow's own tables beside the data tables."""
    return name.endswith(HISTORY_SUFFIX)


def history_table_name(table: str, n: int = 1) -> str:
    """``<table>__history`` within 63 bytes, ending in the reserved suffix even when cut.

    ``n`` > 1 gives the alternatives tried when the first is taken. A cut
    name keeps a hash of the full table name, so two long tables that share
    a prefix still get different history tables.
    """
    stem = table if n == 1 else f"{table}_{n}"
    name = stem + HISTORY_SUFFIX
    if len(name.encode()) <= MAX_IDENTIFIER_BYTES:
        return name
    keep = MAX_IDENTIFIER_BYTES - len(HISTORY_SUFFIX) - _HASH_LEN - 1
    return f"{stem.encode()[:keep].decode(errors='ignore')}_{_short_hash(stem)}{HISTORY_SUFFIX}"
