"""Staging: rows of a page into the temporary staging table with ``COPY``.

The staging table is typed like the target, so PostgreSQL itself checks
every value. A page that fails is split in halves (each under a savepoint)
until the offending rows are isolated; they become rejects with their key,
column and reason, and the rest of the page loads. Rows are built as plain
tuples with ``itemgetter``; only columns that need it (jsonb, bytea,
integers sent as ``12.0``) get a Python conversion.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable, Hashable, Sequence
from decimal import Decimal
from operator import itemgetter
from typing import Any

import orjson
import psycopg
from psycopg import sql

from syncflow import merge
from syncflow.errors import SourceProtocolError
from syncflow.models import StoredColumn
from syncflow.pages import RawRow, compare_rowversions
from syncflow.records import Reject
from syncflow.store import Conn, one


class SchemaChanged(SourceProtocolError):
    """The rows' names no longer match the stored metadata in a way NULLs would paper over."""


# What a bad value raises: class 22 (data exception) and 23 (integrity, e.g. a null key).
BAD_VALUE = (psycopg.errors.DataError, psycopg.errors.IntegrityError)
_CONTEXT_COLUMN = re.compile(r"column (\S+?):")
SMALL = 8
COPY_CHUNK = 5000  # rows per COPY statement: few round trips, small bisect on a bad value
VALUE_PREVIEW = 200
COUNT_WORK_MEM = "64MB"  # for the run-end counts over the seen keys (Stage._count)
Row = tuple[Any, ...]
_TOMB = itemgetter(2)  # a staged row's tombstone flag: (seq, rv, tomb, values...)


def _exact(value: Any) -> Any:
    """orjson's ``default``: a Decimal goes out as the JSON number it spells, digit for digit."""
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value).encode())
    raise TypeError(f"{type(value).__name__} is not JSON")


def _big_ints(value: Any) -> Any:
    """Integers beyond 64 bits as Decimals, which :func:`_exact` writes out exactly."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, dict):
        return {k: _big_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_big_ints(v) for v in value]
    return value


def json_text(value: Any) -> str:
    """JSON text of a decoded value with every number exactly as the source sent it."""
    try:
        return orjson.dumps(value, default=_exact).decode()
    except orjson.JSONEncodeError:  # an integer orjson cannot hold in 64 bits
        return orjson.dumps(_big_ints(value), default=_exact).decode()


def _json_text(value: Any) -> Any:
    return json_text(value)


def _bytea(value: Any) -> Any:
    if isinstance(value, str):
        return base64.b64decode(value, validate=True)
    raise ValueError("expected a base64 string")


def _integer(value: Any) -> Any:
    """``12.0`` and ``Decimal("12.0")`` are whole numbers; ``12.5`` stays, for PostgreSQL to refuse."""
    t = type(value)
    if t is float:
        return int(value) if value.is_integer() else value
    if t is Decimal and value.is_finite() and value == value.to_integral_value():
        return int(value)
    return value


def _plain(value: Any) -> Any:
    """Anything psycopg cannot dump as text becomes JSON text."""
    if isinstance(value, (dict, list)):
        return json_text(value)
    return value


def hash_text(value: Any) -> str:
    """The text a hashed column's value is hashed as: a string as sent, anything else as its JSON text.

    Numbers keep the digits the source sent (``12.50`` stays ``12.50``), booleans are
    ``true``/``false``, dates and times are the strings the source sent.
    """
    return value if isinstance(value, str) else json_text(value)


def hasher(key: bytes) -> Callable[[Any], str]:
    """HMAC-SHA256 (hex) of a value's :func:`hash_text` (UTF-8) under ``key``."""

    def digest(value: Any) -> str:
        return hmac.new(key, hash_text(value).encode("utf-8"), hashlib.sha256).hexdigest()

    return digest


def converter(pg_type: str) -> Callable[[Any], Any] | None:
    if pg_type == "jsonb":
        return _json_text
    if pg_type == "bytea":
        return _bytea
    if pg_type in ("integer", "bigint"):
        return _integer
    return None


class Stage:
    """Temporary staging and seen-key tables for one entity on one connection."""

    def __init__(
        self,
        conn: Conn,
        *,
        schema: str,
        table: str,
        columns: Sequence[StoredColumn],
        keys: Sequence[str],
        track_seen: bool = True,
        ignored: Sequence[str] = (),
        hash_key: bytes | None = None,
    ) -> None:
        """``ignored``: names of excluded columns (alias and source name), read past without
        a drift warning; ``hash_key``: the HMAC key of the columns whose policy is "hash"."""
        self.conn = conn
        self.track_seen = track_seen
        self.earlier_seen = False
        self.schema, self.table = schema, table
        self.columns = list(columns)
        self.keys = list(keys)
        self.names = [c.pg_name for c in self.columns]
        self.api_names = [c.api_name for c in self.columns]
        self.source_names = [c.source_name for c in self.columns]
        self.aliases = set(self.api_names)
        self.sources = set(self.source_names)
        # Rows keyed by alias (the protocol's form) or by source name (tolerated); never a mix:
        # with an alias that is another column's source name, a mixed reading stores wrong values.
        self._getters = {
            "alias": itemgetter(*self.api_names),
            "source": itemgetter(*self.source_names),
        }
        self._single = len(self.api_names) == 1
        self._key_cols = [c for c in self.columns if c.pg_name in self.keys]
        self._key_cols.sort(key=lambda c: self.keys.index(c.pg_name))
        self._alias_key = itemgetter(*(c.api_name for c in self._key_cols))
        self.ignored = frozenset(ignored)
        self._convert = self._converters(hash_key)
        self._key_index = [self.names.index(k) for k in self.keys]
        self._copy_sql = merge.copy_sql(self.columns)
        self.seq = 0
        self.staged = 0
        self.has_dups = False
        self.has_tombs = False  # this batch holds a tombstone: it needs the merge, not a plain insert
        self._pending: list[Row] = []
        self._batch_keys: set[Any] = set()
        # Versioned (range-parallel) runs: each key's highest row version in the batch, by the source's order.
        self._batch_versions: dict[Any, str | None] = {}
        self._key_of: Callable[[Row], Any] = (
            itemgetter(3 + self._key_index[0])
            if len(self._key_index) == 1
            else itemgetter(*(3 + i for i in self._key_index))
        )
        self.drift: set[str] = set()
        # Run-end counts already asked (see _count), by what they count.
        self._counted: dict[str, tuple[int, ...]] = {}
        for name in (merge.STAGE, merge.SEEN, merge.SEEN_EARLIER, merge.DEAD):
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
        self.versioned = False
        conn.execute(merge.stage_ddl(self.columns, self.keys))
        if track_seen:
            conn.execute(merge.seen_ddl(schema, table, self.keys))

    def _converters(self, hash_key: bytes | None) -> list[tuple[int, Callable[[Any], Any]]]:
        """Per-column conversions before COPY: by type, or the keyed hash for a hashed column."""
        out: list[tuple[int, Callable[[Any], Any]]] = []
        for i, c in enumerate(self.columns):
            if c.policy == "hash":
                if hash_key is None:
                    raise ValueError(f"column {c.pg_name} is hashed but no hash key was given")
                out.append((i, hasher(hash_key)))
            elif (f := converter(c.pg_type)) is not None:
                out.append((i, f))
        return out

    # -- the keys seen in this run: for deletes and duplicate counts --------------------------

    def start_seen(self) -> None:
        """Track seen keys from now on (a first load that turns out to need a verification read)."""
        if not self.track_seen:
            self.conn.execute(merge.seen_ddl(self.schema, self.table, self.keys))
            self.track_seen = True
        self._counted = {}

    def start_versioned(self) -> None:
        """Keep the run's tombstones from now on (a range-parallel read: see ``merge.merge(versioned=)``)."""
        if not self.versioned:
            self.conn.execute(merge.dead_ddl(self.schema, self.table, self.keys))
            self.versioned = True

    def record_dead(self) -> None:
        """Add the staged batch's tombstones to the run's (before its merge)."""
        if self.versioned:
            self.conn.execute(merge.dead_insert(self.keys))

    def record_seen(self) -> None:
        """Add the staged batch's keys to the run's seen keys."""
        if self.track_seen:
            self.conn.execute(merge.seen_insert(self.keys))
            self._counted = {}

    def forget_seen(self) -> None:
        """Start the seen keys afresh: a verification read replaces the read before it for the delete step;
        the earlier reads' keys are kept aside, for :meth:`distinct_seen_all`."""
        if self.track_seen:
            self.conn.execute(merge.keep_earlier_seen())
            self.earlier_seen = True
            self._counted = {}

    def _count(self, what: str, statement: sql.Composed) -> tuple[int, ...]:
        """One of the run-end counts over the seen keys, asked once while neither they nor the table change.

        The end of a run needs them up to three times (the confirmation, the counts, the delete step);
        each hashes every key seen, so the answer is kept until the next batch (``record_seen``,
        ``truncate``) or a new read (``forget_seen``). PostgreSQL's default ``work_mem`` (4 MB) makes
        those hashes spill to disk from about 100,000 keys: the statement's transaction gets more.
        """
        got = self._counted.get(what)
        if got is None:
            self.conn.execute(sql.SQL("SET LOCAL work_mem = {}").format(sql.Literal(COUNT_WORK_MEM)))
            row = one(self.conn.execute(statement).fetchone(), f"counting {what}")
            got = self._counted[what] = tuple(int(v) for v in row)
        return got

    def distinct_seen_all(self) -> int:
        """Distinct keys seen by any read of this run: every row it wrote was fetched once."""
        if not self.earlier_seen:
            return self.seen_counts()[1]
        return self._count("all seen keys", merge.distinct_seen_all(self.keys, earlier=True))[0]

    def seen_counts(self) -> tuple[int, int]:
        """(keys staged, distinct keys) over the seen keys."""
        staged, distinct = self._count("the seen keys", merge.seen_stats(self.keys))
        return staged, distinct

    def analyze_seen(self) -> None:
        """Refresh the seen keys' statistics, so that the delete step's anti-join is planned as a hash join."""
        self.conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(merge.SEEN)))

    def unseen_counts(self) -> tuple[int, int]:
        """(live rows in the target, live rows whose key was not seen): what a full read would delete."""
        live, unseen = self._count("rows", merge.delete_counts(self.schema, self.table, self.keys))
        return live, unseen

    def close(self) -> None:
        for name in (merge.STAGE, merge.SEEN, merge.SEEN_EARLIER, merge.DEAD):
            self.conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))

    # -- rows ----------------------------------------------------------------------------

    def _mode(self, names: set[str]) -> str:
        """How a row (or a page) is keyed: by ``alias`` unless only source names explain it."""
        names = names - self.ignored
        if names <= self.aliases:
            return "alias"
        if names <= self.sources:
            return "source"
        return "alias" if len(names - self.aliases) <= len(names - self.sources) else "source"

    def _slow_values(self, data: dict[str, Any], okeys: dict[str, Any] | None, mode: str) -> list[Any]:
        names = self.api_names if mode == "alias" else self.source_names
        out = []
        for c, name in zip(self.columns, names, strict=True):
            if name in data:
                out.append(data[name])
            elif okeys is not None and c.is_business_key and c.source_name in okeys:
                out.append(okeys[c.source_name])
            else:
                out.append(None)
        return out

    def _check_renamed(self, seen: set[str], extra: set[str], mode: str) -> None:
        """Unknown names in, known ones gone from every row: a renamed column, not a column of NULLs.

        Storing NULL for the known column would blank every row's value; stop instead, so nothing
        is overwritten until discovery has learnt the new name.
        """
        names = self.api_names if mode == "alias" else self.source_names
        gone = sorted(n for n, c in zip(names, self.columns, strict=True) if n not in seen and not c.is_business_key)
        if gone:
            raise SchemaChanged(
                f"the source no longer sends {', '.join(gone)} but sends {', '.join(sorted(extra))}: the API"
                " changed; nothing was overwritten; run 'syncflow discover' and sync again",
                details={"missing_columns": gone, "new_columns": sorted(extra)},
            )

    def raw_key(self, data: dict[str, Any], okeys: dict[str, Any] | None) -> Hashable:
        """A row's business key before staging, read as :meth:`build` reads it (for the page stream).

        One value for a one-column key, else a tuple, as :func:`key_of_stored` gives it.
        """
        # A row of aliases only is read by alias; any other row (a key alias may be another column's
        # source name, or source names may explain more of the row) is read by the row's mode.
        names = data.keys() - self.ignored if self.ignored else data.keys()
        by_alias = names <= self.aliases
        if by_alias:
            try:
                return self._alias_key(data)  # type: ignore[no-any-return]
            except KeyError:
                pass
        mode = "alias" if by_alias else self._mode(set(data))
        values = self._slow_key(data, okeys, mode)
        return values[0] if len(values) == 1 else tuple(values)

    def _slow_key(self, data: dict[str, Any], okeys: dict[str, Any] | None, mode: str) -> list[Any]:
        out = []
        for c in self._key_cols:
            name = c.api_name if mode == "alias" else c.source_name
            if name in data:
                out.append(data[name])
            elif okeys is not None and c.source_name in okeys:
                out.append(okeys[c.source_name])
            else:
                out.append(None)
        return out

    def _page_mode(self, rows: Sequence[RawRow]) -> tuple[str, bool]:
        """How the page is keyed, and whether its rows must each be read by their own mode; notes drift."""
        if not rows:
            return "alias", False
        seen_keys = set().union(*(r[0].keys() for r in rows)) - self.ignored
        page_mode = self._mode(seen_keys)
        mixed = not (seen_keys <= (self.aliases if page_mode == "alias" else self.sources))
        extra = seen_keys - (self.aliases | self.sources)
        if extra:
            self.drift |= extra
            self._check_renamed(seen_keys, extra, page_mode)
        return page_mode, mixed

    def build(self, rows: Sequence[RawRow], rejects: list[Reject]) -> list[Row]:
        """Page rows as COPY tuples ``(seq, rv, tomb, values...)``; unknown keys noted as drift.

        A row that cannot be staged (a row version that is no version, an
        object or array as a key value, a value no conversion accepts) becomes
        a reject; the rest of the page goes on.
        """
        page_mode, mixed = self._page_mode(rows)
        out: list[Row] = []
        single, convert, key_index, getters = self._single, self._convert, self._key_index, self._getters
        get = getters[page_mode]
        # Per-row work runs on the fetch thread for every row of every read (attribute look-ups and a
        # generator per row cost about a tenth of it): locals, and the counter written back once.
        seq = self.seq
        try:
            for data, rv, tomb, okeys, problem in rows:
                seq += 1
                mode = page_mode
                if mixed:
                    mode = self._mode(set(data))
                    get = getters[mode]
                try:
                    got = get(data)
                    values: Any = [got] if single else got
                except KeyError:
                    values = self._slow_values(data, okeys, mode)
                if problem is not None:
                    rejects.append(self._reject(values, None, problem))
                    continue
                for i in key_index:
                    if isinstance(values[i], (dict, list)):
                        kind = "an object" if isinstance(values[i], dict) else "an array"
                        rejects.append(self._reject(values, self.names[i], f"business key value is {kind}"))
                        break
                else:
                    if convert:
                        values = list(values)
                        try:
                            for i, f in convert:
                                if values[i] is not None:
                                    values[i] = f(values[i])
                        except (ValueError, TypeError, ArithmeticError) as exc:
                            rejects.append(self._reject(values, self.columns[i].pg_name, f"invalid value: {exc}"))
                            continue
                    out.append((seq, rv, tomb, *values))
        finally:
            self.seq = seq
        return out

    # -- COPY ----------------------------------------------------------------------------

    def _copy(self, rows: Sequence[Row]) -> None:
        with self.conn.cursor() as cur, cur.copy(self._copy_sql) as cp:
            for r in rows:
                cp.write_row(r)

    def add(self, rows: Sequence[Row], rejects: list[Reject]) -> None:
        """Queue rows for staging; they are sent in chunks of ``COPY_CHUNK`` rows."""
        if self.versioned:
            rows = self._newest(rows)
        keys = self._batch_keys
        before = len(keys)
        keys.update(map(self._key_of, rows))
        if len(keys) - before < len(rows):
            self.has_dups = True  # this batch needs deduplication before the merge
        if not self.has_tombs and any(map(_TOMB, rows)):
            self.has_tombs = True
        self._pending.extend(rows)
        if len(self._pending) >= COPY_CHUNK:
            self.send(rejects)

    def _newest(self, rows: Sequence[Row]) -> list[Row]:
        """Drop the rows of a key the batch already holds in a higher row version (``compare_rowversions``:
        the source's own order), so that the batch's last occurrence of a key, which the merge keeps, is its
        newest. SQL has no sort that agrees with that order for every mix of digit and other versions."""
        seen, out = self._batch_versions, []
        for row in rows:
            key, rv = self._key_of(row), row[1]
            before = seen.get(key)
            if before is not None and rv is not None and compare_rowversions(before, rv) > 0:
                continue
            seen[key] = rv
            out.append(row)
        return out

    def send(self, rejects: list[Reject]) -> None:
        """COPY what is queued."""
        pending, self._pending = self._pending, []
        self.load(pending, rejects)

    @property
    def queued(self) -> int:
        return self.staged + len(self._pending)

    def load(self, rows: Sequence[Row], rejects: list[Reject]) -> int:
        """COPY rows into staging; bad ones become rejects. Returns rows staged."""
        if not rows:
            return 0
        try:
            with self.conn.transaction():
                self._copy(rows)
            n = len(rows)
        except (*BAD_VALUE, psycopg.ProgrammingError, UnicodeEncodeError):
            # Values psycopg cannot dump (an object in a text column) become JSON text;
            # then PostgreSQL's own checks isolate the rows it refuses.
            plain = [tuple(_plain(v) for v in r) for r in rows]
            n = self._bisect(plain, rejects)
        self.staged += n
        return n

    def _bisect(self, rows: Sequence[Row], rejects: list[Reject]) -> int:
        try:
            with self.conn.transaction():
                self._copy(rows)
            return len(rows)
        except (*BAD_VALUE, UnicodeEncodeError) as exc:
            if len(rows) == 1:
                if isinstance(exc, UnicodeEncodeError):  # a lone surrogate: no UTF-8 can hold it
                    rejects.append(
                        self._reject(list(rows[0][3:]), None, f"text that is not valid Unicode: {exc.reason}")
                    )
                    return 0
                rejects.append(self._reject_from_error(rows[0], exc))
                return 0
            if len(rows) <= SMALL:
                return sum(self._bisect([r], rejects) for r in rows)
            mid = len(rows) // 2
            return self._bisect(rows[:mid], rejects) + self._bisect(rows[mid:], rejects)

    def _reject_from_error(self, row: Row, exc: psycopg.Error) -> Reject:
        diag = exc.diag
        column = diag.column_name
        if not column and diag.context:
            m = _CONTEXT_COLUMN.search(diag.context)
            column = m.group(1) if m else None
        if column in merge.STAGE_COLUMNS:
            column = None
        reason = (diag.message_primary or str(exc)).strip()
        return self._reject(list(row[3:]), column, reason)

    def _reject(self, values: Sequence[Any], column: str | None, reason: str) -> Reject:
        key = {k: _preview(values[i]) for k, i in zip(self.keys, self._key_index, strict=True)}
        value = None
        if column in self.names:
            raw = values[self.names.index(column)]
            value = None if raw is None else str(_preview(raw))
        return Reject(business_key=key, column=column, reason=reason, value=value)

    def truncate(self) -> None:
        self.conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(merge.STAGE)))
        self.staged = 0
        self.has_dups = False
        self.has_tombs = False
        self._counted = {}  # the merge changed the table
        self._batch_keys = set()
        self._batch_versions = {}


def _preview(value: Any) -> Any:
    if value is None or isinstance(value, (int, float, bool)):
        return value
    text = value if isinstance(value, (str, Decimal)) else repr(value)
    text = str(text)
    return text[:VALUE_PREVIEW]
