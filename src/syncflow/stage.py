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
import re
from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any

import orjson
import psycopg
from psycopg import sql

from syncflow import merge
from syncflow.pages import RawRow
from syncflow.runs import Reject
from syncflow.store import Conn, StoredColumn

# What a bad value raises: class 22 (data exception) and 23 (integrity, e.g. a null key).
BAD_VALUE = (psycopg.errors.DataError, psycopg.errors.IntegrityError)
_CONTEXT_COLUMN = re.compile(r"column (\S+?):")
SMALL = 8
COPY_CHUNK = 5000  # rows per COPY statement: few round trips, small bisect on a bad value
VALUE_PREVIEW = 200
Row = tuple[Any, ...]


def _json_text(value: Any) -> Any:
    return orjson.dumps(value).decode()


def _bytea(value: Any) -> Any:
    if isinstance(value, str):
        return base64.b64decode(value, validate=True)
    raise ValueError("expected a base64 string")


def _integer(value: Any) -> Any:
    if type(value) is float and value.is_integer():
        return int(value)
    return value


def _plain(value: Any) -> Any:
    """Anything psycopg cannot dump as text becomes JSON text."""
    if isinstance(value, (dict, list)):
        return orjson.dumps(value).decode()
    return value


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
    ) -> None:
        self.conn = conn
        self.track_seen = track_seen
        self.columns = list(columns)
        self.keys = list(keys)
        self.names = [c.pg_name for c in self.columns]
        self.api_names = [c.api_name for c in self.columns]
        self.known_names = {c.api_name for c in self.columns} | {c.source_name for c in self.columns}
        self._getter = itemgetter(*self.api_names)
        self._single = len(self.api_names) == 1
        self._convert = [(i, f) for i, c in enumerate(self.columns) if (f := converter(c.pg_type)) is not None]
        self._key_index = [self.names.index(k) for k in self.keys]
        self._copy_sql = merge.copy_sql(self.columns)
        self.seq = 0
        self.staged = 0
        self.has_dups = False
        self._pending: list[Row] = []
        self._batch_keys: set[Any] = set()
        self._key_of: Callable[[Row], Any] = (
            itemgetter(3 + self._key_index[0])
            if len(self._key_index) == 1
            else itemgetter(*(3 + i for i in self._key_index))
        )
        self.drift: set[str] = set()
        for name in (merge.STAGE, merge.SEEN):
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(merge.stage_ddl(self.columns, self.keys))
        if track_seen:
            conn.execute(merge.seen_ddl(schema, table, self.keys))

    def close(self) -> None:
        for name in (merge.STAGE, merge.SEEN):
            self.conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))

    # -- rows ----------------------------------------------------------------------------

    def _slow_values(self, data: dict[str, Any], okeys: dict[str, Any] | None) -> list[Any]:
        out = []
        for c in self.columns:
            if c.api_name in data:
                out.append(data[c.api_name])
            elif c.source_name in data:
                out.append(data[c.source_name])
            elif okeys is not None and c.is_business_key and c.source_name in okeys:
                out.append(okeys[c.source_name])
            else:
                out.append(None)
        return out

    def build(self, rows: Sequence[RawRow], rejects: list[Reject]) -> list[Row]:
        """Page rows as COPY tuples ``(_seq, _rv, _tomb, values...)``; unknown keys noted as drift."""
        if rows:
            seen_keys = set().union(*(r[0].keys() for r in rows))
            extra = seen_keys - self.known_names
            if extra:
                self.drift |= extra
        out: list[Row] = []
        getter, single, convert = self._getter, self._single, self._convert
        for data, rv, tomb, okeys in rows:
            self.seq += 1
            try:
                got = getter(data)
                values: Any = [got] if single else got
            except KeyError:
                values = self._slow_values(data, okeys)
            if convert:
                values = list(values)
                try:
                    for i, f in convert:
                        if values[i] is not None:
                            values[i] = f(values[i])
                except (ValueError, TypeError) as exc:
                    rejects.append(self._reject(values, self.columns[i].pg_name, f"invalid value: {exc}"))
                    continue
            out.append((self.seq, rv, tomb, *values))
        return out

    # -- COPY ----------------------------------------------------------------------------

    def _copy(self, rows: Sequence[Row]) -> None:
        with self.conn.cursor() as cur, cur.copy(self._copy_sql) as cp:
            for r in rows:
                cp.write_row(r)

    def add(self, rows: Sequence[Row], rejects: list[Reject]) -> None:
        """Queue rows for staging; they are sent in chunks of ``COPY_CHUNK`` rows."""
        keys = self._batch_keys
        before = len(keys)
        keys.update(map(self._key_of, rows))
        if len(keys) - before < len(rows):
            self.has_dups = True  # this batch needs deduplication before the merge
        self._pending.extend(rows)
        if len(self._pending) >= COPY_CHUNK:
            self.send(rejects)

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
        except (*BAD_VALUE, psycopg.ProgrammingError):
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
        except BAD_VALUE as exc:
            if len(rows) == 1:
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
        if column in ("_seq", "_rv", "_tomb"):
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
        self._batch_keys = set()


def _preview(value: Any) -> Any:
    if value is None or isinstance(value, (int, float, bool)):
        return value
    text = value if isinstance(value, str) else repr(value)
    return text[:VALUE_PREVIEW]
