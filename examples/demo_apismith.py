#!/usr/bin/env python3
"""A demo APISmith server speaking ``shared/apismith-protocol.md``.

Standard library plus orjson (already a SyncFlow dependency; the stdlib json
module is used when it is missing). Run it::

    python examples/demo_apismith.py --port 8007 --token demo-token \
        --rows items=5000,customers=500,orders=2000

It serves ``GET /api/v1/apis`` and ``GET /api/v1/data/{slug}`` (page,
page_size, rowversion_gt; bearer auth), ordered by (row version, key) as an
ERP view would be. Data changes between runs through::

    POST /_demo/mutate?entity=items&update=10&insert=5&delete=2

and the latency and throttling modes (below) through
``POST /_demo/settings?latency_ms=50&jitter_ms=10&max_concurrent=4`` (0: no limit).

Every mutation gives all the rows it touches one new row version (ties, as
an Oracle SCN would), and deleted rows of ``rowversion`` entities come back
as tombstones (``"deleted": true``) to incremental requests. Tests import
:class:`DemoServer` and change :class:`DemoState` directly, including between
two page requests (``state.before_page``).

Like a real ERP it can be slow and push back (issue 16): ``--latency-ms N``
delays every data page by N ms (``--jitter-ms J``: by N +/- J, uniformly), and
``--max-concurrent K`` answers ``429`` with ``Retry-After`` (``--retry-after``
seconds, default 1) to a data request that would make more than K in flight.
Tests set the same as :class:`DemoState` attributes and read ``in_flight``,
``peak_in_flight`` and ``throttled``.
"""

from __future__ import annotations

import argparse
import bisect
import copy
import random
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

try:
    import orjson

    def _fragment(obj: Any) -> Any:
        if isinstance(obj, Decimal):  # exact: a Decimal goes out as the JSON number it spells
            return orjson.Fragment(str(obj).encode())
        raise TypeError(type(obj).__name__)

    def _big_ints(obj: Any) -> Any:
        if isinstance(obj, int) and not isinstance(obj, bool):
            return Decimal(obj)
        if isinstance(obj, dict):
            return {k: _big_ints(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [_big_ints(v) for v in obj]
        return obj

    def dumps(obj: Any) -> bytes:
        try:
            return orjson.dumps(obj, default=_fragment)
        except orjson.JSONEncodeError:  # an integer beyond 64 bits: written out exactly
            return orjson.dumps(_big_ints(obj), default=_fragment)

except ImportError:  # pragma: no cover - orjson is a SyncFlow dependency
    import json

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":"), default=str).encode()


DROP = -1  # a fault status: the connection is dropped in the middle of the body
RV_BASE = 20251208120000  # row versions look like fixed-width timestamps
DEFAULT_MAX_PAGE_SIZE = 5000
WORDS = [
    "Bolt",
    "Nut",
    "Washer",
    "Screw",
    "Bracket",
    "Gasket",
    "Valve",
    "Flange",
    "Ring",
    "Pin",
    "Schraube",
    "Mutter",
    "Écrou",
    "Vis",
    "Rondelle",
    "Träger",
    "Ventil",
    "Dichtung",
    "ボルト",
    "Ø-ring",
]


def _col(name: str, alias: str, data_type: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "output_alias": alias, "data_type": data_type, **extra}


def default_apis() -> dict[str, dict[str, Any]]:
    """The three demo APIs, with Oracle-style types as in the protocol's example."""
    return {
        "items": {
            "slug": "items",
            "name": "Items",
            "description": "Product master data",
            "delta_strategy": "rowversion",
            "business_key_columns": ["item_number"],
            "columns": [
                _col("PART_NO", "item_number", "VARCHAR2(50)", is_nullable=False, is_business_key=True),
                _col("DESCRIPTION", "item_description", "VARCHAR2(4000)"),
                _col("BASE_UOM", "base_uom", "VARCHAR2(10)"),
                _col("WEIGHT", "weight_per_unit", "NUMBER(10,3)"),
                _col("PRICE", "unit_price", "NUMBER(12,2)"),
                _col("QTY_ON_HAND", "qty_on_hand", "NUMBER(9)"),
                _col("ACTIVE", "is_active", "boolean"),
                _col("CATEGORY", "category", "VARCHAR2(30)"),
                _col("LAUNCH", "launch_date", "date"),
                _col("CREATED", "created_on", "DATE"),
                _col("MODIFIED", "modified_at", "TIMESTAMP(6) WITH TIME ZONE"),
                _col("ROWVER", "erp_rowversion", "VARCHAR2(50)"),
            ],
        },
        "customers": {
            "slug": "customers",
            "name": "Customers",
            "description": "Customer master",
            "delta_strategy": "hash",
            "columns": [
                _col("CUST_ID", "customer_id", "NUMBER(10)", is_business_key=True),
                _col("NAME", "name", "NVARCHAR2(200)"),
                _col("COUNTRY", "country", "CHAR(2)"),
                _col("CREDIT_LIMIT", "credit_limit", "NUMBER(14,2)"),
                _col("EMAIL", "email", "VARCHAR2(320)"),
                _col("CREATED_AT", "created_at", "TIMESTAMP"),
            ],
        },
        "orders": {
            "slug": "orders",
            "name": "Order lines",
            "description": "Open sales order lines",
            "delta_strategy": "full",
            "business_key_columns": ["ORDER_NO", "LINE_NO"],
            "columns": [
                _col("ORDER_NO", "order_no", "VARCHAR2(20)"),
                _col("LINE_NO", "line_no", "NUMBER(5)"),
                _col("CUST_ID", "customer_id", "NUMBER(10)"),
                _col("PART_NO", "item_number", "VARCHAR2(50)"),
                _col("QTY", "quantity", "NUMBER(9)"),
                _col("AMOUNT", "amount", "NUMBER(12,2)"),
                _col("ORDER_DATE", "order_date", "DATE"),
                _col("STATUS", "status", "VARCHAR2(10)"),
                _col("NOTES", "notes", "CLOB"),
            ],
        },
    }


TEMPLATES = ("items", "customers", "orders")


def _maybe(rng: random.Random, value: Any, null_share: float = 0.2) -> Any:
    return None if rng.random() < null_share else value


BASE_TIME = datetime(2020, 1, 1, tzinfo=UTC)
_CYCLE = 10_000
_DATES = [(BASE_TIME + timedelta(days=i)).date().isoformat() for i in range(2000)]
_STAMPS = [(BASE_TIME + timedelta(minutes=i * 7)).strftime("%Y-%m-%dT%H:%M:%S") for i in range(_CYCLE)]
_STAMPS_TZ = [(BASE_TIME + timedelta(seconds=i * 13)).isoformat() for i in range(_CYCLE)]
_UOMS = ["EA", "KG", "M", "BOX"]


def make_row(slug: str, n: int, rng: random.Random, version: int = 0) -> dict[str, Any]:
    """Row number ``n`` of an entity; ``version`` varies the non-key values. About 20 % nulls."""
    base = BASE_TIME
    if slug == "items":
        r = rng.random
        word = WORDS[(n + version) % len(WORDS)]
        return {
            "item_number": f"P{n:08d}",
            "item_description": None if r() < 0.2 else f'{word} M{n % 40 + 1} v{version} — ¼" zinc-plated',
            "base_uom": None if r() < 0.2 else _UOMS[n % 4],
            "weight_per_unit": None if r() < 0.2 else f"{(n % 9973) / 1000 + version:.3f}",
            "unit_price": None if r() < 0.2 else f"{(n % 50000) / 100 + version:.2f}",
            "qty_on_hand": None if r() < 0.2 else (n * 7 + version) % 100000,
            "is_active": None if r() < 0.2 else ("Y" if (n + version) % 5 else "N"),
            "category": None if r() < 0.2 else f"CAT-{n % 17}",
            "launch_date": None if r() < 0.2 else _DATES[n % 2000],
            "created_on": None if r() < 0.2 else _STAMPS[n % _CYCLE],
            "modified_at": None if r() < 0.2 else _STAMPS_TZ[(n + version) % _CYCLE],
        }
    if slug == "customers":
        return {
            "customer_id": n,
            "name": f"Customer {n} {WORDS[n % len(WORDS)]} GmbH v{version}",
            "country": ["DE", "FR", "US", "JP", "BR"][n % 5],
            "credit_limit": _maybe(rng, f"{(n % 1000) * 100 + version}.00"),
            "email": _maybe(rng, f"buyer{n}@example.com"),
            "created_at": (base + timedelta(hours=n)).strftime("%Y-%m-%d %H:%M:%S"),
        }
    if slug == "orders":
        order, line = divmod(n, 4)
        return {
            "order_no": f"SO{order:07d}",
            "line_no": line + 1,
            "customer_id": n % 500,
            "item_number": f"P{(n * 31) % 5000:08d}",
            "quantity": (n % 20) + 1 + version,
            "amount": f"{((n % 20) + 1) * 12.5 + version:.2f}",
            "order_date": (base + timedelta(days=n % 900)).strftime("%Y-%m-%dT%H:%M:%S"),
            "status": ["OPEN", "PICKED", "SHIPPED"][(n + version) % 3],
            "notes": _maybe(rng, f"Deliver to gate {n % 9}", 0.5),
        }
    return {"id": n, "value": f"v{version}"}


class Entity:
    """One API's metadata and rows, with a change log ordered by row version.

    Every change appends ``(row_version, key)`` to ``log``; row versions only
    grow, so the log stays sorted and serving a page is a bisect plus a slice
    of a compacted copy that is rebuilt once after each batch of changes.
    """

    def __init__(self, api: dict[str, Any]) -> None:
        self.api = api
        slug = str(api.get("slug", ""))
        self.template = slug if slug in TEMPLATES else slug.rsplit("_", 1)[0]
        self.rows: dict[tuple[Any, ...], dict[str, Any]] = {}
        self.versions: dict[tuple[Any, ...], int] = {}
        self.tombstones: dict[tuple[Any, ...], int] = {}
        self.next_n = 0
        self.log: list[tuple[int, tuple[Any, ...]]] = []
        self._log_sorted = True
        self._valid: list[tuple[int, tuple[Any, ...]]] | None = None
        self._valid_rvs: list[int] = []
        self._live: list[tuple[int, tuple[Any, ...]]] | None = None

    @property
    def key_columns(self) -> list[str]:
        cached = getattr(self, "_keys_for", None)
        if cached is not None and cached[0] is self.api:
            return list(cached[1])
        keys = self._key_columns()
        self._keys_for = (self.api, keys)
        return keys

    def _key_columns(self) -> list[str]:
        keys = self.api.get("business_key_columns")
        cols = self.api.get("columns", [])
        if not keys:
            keys = [c.get("output_alias") or c["name"] for c in cols if c.get("is_business_key")]
        by_source = {c["name"]: c.get("output_alias") or c["name"] for c in cols}
        return [by_source.get(k, k) for k in keys]

    def key(self, row: dict[str, Any]) -> tuple[Any, ...]:
        return tuple([row.get(k) for k in self.key_columns])

    def touch(self, key: tuple[Any, ...], rv: int) -> None:
        if self.log and rv < self.log[-1][0]:
            self._log_sorted = False
        self.log.append((rv, key))

    def invalidate(self) -> None:
        self._valid = None
        self._live = None

    def ordered(self) -> tuple[list[tuple[int, tuple[Any, ...]]], list[int]]:
        """(row version, key) of live rows and tombstones in serving order, and their versions."""
        if self._valid is None:
            if not self._log_sorted:
                self.log.sort(key=lambda e: (e[0], tuple(str(x) for x in e[1])))
                self._log_sorted = True
            versions, tombs = self.versions, self.tombstones
            valid = [e for e in self.log if versions.get(e[1]) == e[0] or tombs.get(e[1]) == e[0]]
            self.log = list(valid)
            self._valid = valid
            self._valid_rvs = [e[0] for e in valid]
        return self._valid, self._valid_rvs

    def live(self) -> list[tuple[int, tuple[Any, ...]]]:
        if self._live is None:
            self._live = [e for e in self.ordered()[0] if e[1] in self.rows]
        return self._live


class DemoState:
    """All demo data, guarded by one lock; tests may change it between requests."""

    def __init__(  # noqa: PLR0913 - keyword-only settings of the demo, each with a default
        self,
        rows: dict[str, int] | None = None,
        *,
        token: str | None = None,
        seed: int = 42,
        max_page_size: int = DEFAULT_MAX_PAGE_SIZE,
        strategies: dict[str, str] | None = None,
        latency_ms: float = 0,
        jitter_ms: float = 0,
        max_concurrent: int | None = None,
        retry_after: float = 1,
    ) -> None:
        self.lock = threading.RLock()
        # A slow source: each data page waits latency_ms +/- jitter_ms (uniform, never below 0) before it is
        # read, outside the lock, so that concurrent requests overlap as they would at a real ERP.
        self.latency_ms = latency_ms
        self.jitter_ms = jitter_ms
        # Its own generator: the data stay the same with or without jitter.
        self.jitter_rng = random.Random(seed)
        # A source that pushes back: a data request that would make more than max_concurrent in flight is
        # answered 429 with Retry-After: retry_after (seconds) at once, and never counts as in flight.
        self.max_concurrent = max_concurrent
        self.retry_after = retry_after
        self.in_flight = 0  # data requests being answered now
        self.peak_in_flight = 0  # the most ever answered at once
        self.throttled = 0  # data requests answered 429 by max_concurrent
        self.token = token
        self.max_page_size = max_page_size
        self.rng = random.Random(seed)
        self.rv = RV_BASE
        self.entities: dict[str, Entity] = {}
        self.requests: list[str] = []
        # Called with (slug, page, params) before a data page is served.
        self.before_page: Callable[[str, int, dict[str, str]], None] | None = None
        self.envelope = "list"  # how /api/v1/apis is wrapped: list | apis | items | data
        self.data_keys = "alias"  # rows' data keyed by output_alias (alias) or by source column name (name)
        self.ignore_page = False  # answer page 1 whatever is asked, as a proxy dropping the query string
        # Injected failures, served in order to the next GET requests: (status, body, headers).
        self.faults: list[tuple[int, bytes, dict[str, str]]] = []
        counts = {"items": 1000, "customers": 200, "orders": 800} if rows is None else rows
        apis = default_apis()
        for slug, count in counts.items():
            template = apis.get(slug) or apis.get(slug.rsplit("_", 1)[0])  # items_3: a copy of items
            api = copy.deepcopy(template) if template else {"slug": slug, "columns": []}
            api["slug"] = slug
            if strategies and slug in strategies:
                api["delta_strategy"] = strategies[slug]
            self.entities[slug] = Entity(api)
            self.insert(slug, count, new_version=False)

    # -- changing data --------------------------------------------------------------------------

    def _bump(self) -> int:
        self.rv += 1
        return self.rv

    def insert(self, slug: str, count: int, *, new_version: bool = True) -> list[tuple[Any, ...]]:
        """Add ``count`` new rows; returns their keys."""
        with self.lock:
            ent = self.entities[slug]
            rv = self._bump() if new_version else None
            keys = []
            for _ in range(count):
                row = make_row(ent.template, ent.next_n, self.rng)
                ent.next_n += 1
                k = ent.key(row)
                ent.rows[k] = row
                self._set_version(ent, k, rv if rv is not None else self._bump())
                ent.tombstones.pop(k, None)
                keys.append(k)
            ent.invalidate()
            return keys

    def update(
        self,
        slug: str,
        count: int | None = None,
        keys: list[tuple[Any, ...]] | None = None,
        *,
        changes: dict[str, Any] | None = None,
    ) -> list[tuple[Any, ...]]:
        """Change non-key values of some rows; all of them get one new row version."""
        with self.lock:
            ent = self.entities[slug]
            if keys is None:
                pool = list(ent.rows)
                keys = self.rng.sample(pool, min(count or 0, len(pool)))
            rv = self._bump()
            for k in keys:
                row = ent.rows[k]
                if changes:
                    row.update(changes)
                else:
                    for col, value in make_row(ent.template, rv % 1000, self.rng, version=rv - RV_BASE).items():
                        if col not in ent.key_columns:
                            row[col] = value
                self._set_version(ent, k, rv)
            ent.invalidate()
            return keys

    def delete(
        self,
        slug: str,
        count: int | None = None,
        keys: list[tuple[Any, ...]] | None = None,
        *,
        hard: bool = False,
    ) -> list[tuple[Any, ...]]:
        """Remove rows; ``rowversion`` entities keep a tombstone with a new row version unless ``hard``."""
        with self.lock:
            ent = self.entities[slug]
            if keys is None:
                keys = self.rng.sample(list(ent.rows), min(count or 0, len(ent.rows)))
            rv = self._bump()
            for k in keys:
                ent.rows.pop(k, None)
                ent.versions.pop(k, None)
                if not hard and str(ent.api.get("delta_strategy", "")).lower() == "rowversion":
                    ent.tombstones[k] = rv
                    ent.touch(k, rv)
            ent.invalidate()
            return keys

    def _set_version(self, ent: Entity, k: tuple[Any, ...], rv: int) -> None:
        ent.versions[k] = rv
        ent.touch(k, rv)
        if ent.template == "items":  # the items API also carries its version as a column
            ent.rows[k]["erp_rowversion"] = str(rv)

    def set_api(self, slug: str, api: dict[str, Any]) -> None:
        """Replace an API's metadata (tests use it to evolve the schema)."""
        with self.lock:
            if slug in self.entities:
                self.entities[slug].api = api
                self.entities[slug].invalidate()
            else:
                self.entities[slug] = Entity(api)

    def put_rows(self, slug: str, rows: list[dict[str, Any]], *, version: int | None = None) -> None:
        """Insert or replace rows verbatim, one row version for all of them."""
        with self.lock:
            ent = self.entities[slug]
            rv = version if version is not None else self._bump()
            self.rv = max(self.rv, rv)
            for row in rows:
                k = ent.key(row)
                ent.rows[k] = dict(row)
                self._set_version(ent, k, rv)
                ent.tombstones.pop(k, None)
            ent.invalidate()

    def snapshot(self, slug: str) -> dict[tuple[Any, ...], dict[str, Any]]:
        """A copy of the live rows by key, for comparing with the target table."""
        with self.lock:
            return copy.deepcopy(self.entities[slug].rows)

    def fail_next(
        self,
        status: int,
        count: int = 1,
        *,
        body: bytes = b'{"detail": "injected"}',
        headers: dict[str, str] | None = None,
    ) -> None:
        """Make the next ``count`` GET requests answer ``status`` with ``body``."""
        with self.lock:
            self.faults += [(status, body, headers or {})] * count

    def take_fault(self) -> tuple[int, bytes, dict[str, str]] | None:
        with self.lock:
            return self.faults.pop(0) if self.faults else None

    def configure(self, values: dict[str, str]) -> None:
        """Change the latency and throttling modes between runs (``POST /_demo/settings?latency_ms=50``)."""
        with self.lock:
            for name in ("latency_ms", "jitter_ms", "retry_after"):
                if name in values:
                    setattr(self, name, float(values[name]))
            if "max_concurrent" in values:
                self.max_concurrent = int(values["max_concurrent"]) or None

    def settings(self) -> dict[str, Any]:
        """The modes and the in-flight counters."""
        with self.lock:
            return {
                "latency_ms": self.latency_ms,
                "jitter_ms": self.jitter_ms,
                "max_concurrent": self.max_concurrent,
                "retry_after": self.retry_after,
                "in_flight": self.in_flight,
                "peak_in_flight": self.peak_in_flight,
                "throttled": self.throttled,
            }

    # -- serving -----------------------------------------------------------------------------------

    def page_delay(self) -> float:
        """Seconds the next data page waits: ``latency_ms`` +/- ``jitter_ms``, uniformly, never below 0."""
        with self.lock:
            jitter = self.jitter_rng.uniform(-self.jitter_ms, self.jitter_ms) if self.jitter_ms else 0.0
        return max(self.latency_ms + jitter, 0.0) / 1000

    def admit(self) -> bool:
        """Count a data request in flight, or refuse it (False) when that would pass ``max_concurrent``."""
        with self.lock:
            if self.max_concurrent is not None and self.in_flight >= self.max_concurrent:
                self.throttled += 1
                return False
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            return True

    def release(self) -> None:
        """A data request admitted by :meth:`admit` is answered."""
        with self.lock:
            self.in_flight -= 1

    def apis_body(self) -> Any:
        with self.lock:
            apis = [copy.deepcopy(e.api) for e in self.entities.values() if e.api.get("slug")]
        return apis if self.envelope == "list" else {self.envelope: apis}

    def page_body(self, slug: str, params: dict[str, str]) -> dict[str, Any] | None:
        try:
            page = max(int(params.get("page", "1")), 1)
            size = max(min(int(params.get("page_size", "1000")), self.max_page_size), 1)
        except ValueError:
            page, size = 1, 1000
        gt = params.get("rowversion_gt")
        if self.ignore_page:
            page, gt = 1, None
        if self.before_page is not None:
            self.before_page(slug, page, params)
        with self.lock:
            ent = self.entities.get(slug)
            if ent is None or not ent.api.get("slug"):
                return None
            if gt is not None:
                entries, rvs = ent.ordered()
                try:
                    threshold = int(gt)
                except ValueError:
                    threshold = -1
                start = bisect.bisect_right(rvs, threshold)  # first entry with version > threshold
            else:
                entries, start = ent.live(), 0
            total = len(entries) - start
            chunk = entries[start + (page - 1) * size : start + page * size]
            key_cols = ent.key_columns
            source_of = {(c.get("output_alias") or c["name"]): c["name"] for c in ent.api.get("columns", [])}
            by_name = self.data_keys == "name"
            rows = []
            for rv, k in chunk:
                data = ent.rows.get(k)
                if data is not None and by_name:
                    data = {source_of.get(a, a): v for a, v in data.items()}
                oracle_keys = {source_of.get(c, c): v for c, v in zip(key_cols, k, strict=False)}
                if data is None:
                    rows.append(
                        {
                            "oracle_keys": oracle_keys,
                            "row_version": str(rv),
                            "deleted": True,
                            "data": dict(zip(key_cols, k, strict=False)),
                        }
                    )
                else:
                    rows.append({"oracle_keys": oracle_keys, "row_version": str(rv), "data": data})
            return {
                "rows": rows,
                "page": page,
                "page_size": size,
                "total": total,
                "has_more": page * size < total,
            }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: DemoHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            sys.stderr.write("demo-apismith: " + format % args + "\n")

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _authorized(self) -> bool:
        token = self.server.state.token
        if not token:
            return True
        if self.headers.get("Authorization") == f"Bearer {token}":
            return True
        self._send(401, dumps({"detail": "invalid or missing bearer token"}))
        return False

    def _route(self) -> tuple[str, dict[str, str]]:
        parts = urlsplit(self.path)
        path = parts.path
        prefix = self.server.prefix
        if prefix and path.startswith(prefix):
            path = path[len(prefix) :] or "/"
        params = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        return path, params

    def do_GET(self) -> None:
        path, params = self._route()
        state = self.server.state
        state.requests.append(self.path)
        if not self._authorized():
            return
        fault = state.take_fault()
        if fault is not None:
            status, body, headers = fault
            if status == DROP:
                # Promise a body, send a little of it, and hang up.
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body) + 100_000))
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            ctype = "text/html" if body.lstrip().startswith(b"<") else "application/json"
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if path == "/api/v1/apis":
            self._send(200, dumps(state.apis_body()))
            return
        if path.startswith("/api/v1/data/"):
            if not state.admit():
                self.send_response(429)
                self.send_header("Retry-After", f"{state.retry_after:g}")
                body = dumps({"detail": f"more than {state.max_concurrent} concurrent requests"})
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            try:
                delay = state.page_delay()
                if delay:
                    time.sleep(delay)
                page = state.page_body(unquote(path[len("/api/v1/data/") :]), params)
                if page is None:
                    self._send(404, dumps({"detail": "no such API"}))
                else:
                    self._send(200, dumps(page))
            finally:
                state.release()
            return
        self._send(404, dumps({"detail": "not found"}))

    def do_POST(self) -> None:
        path, params = self._route()
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if not self._authorized():
            return
        state = self.server.state
        if path == "/_demo/mutate":
            slug = params.get("entity", "items")
            if slug not in state.entities:
                self._send(404, dumps({"detail": f"no entity {slug}"}))
                return
            done = {
                "updated": len(state.update(slug, int(params.get("update", 0)))),
                "inserted": len(state.insert(slug, int(params.get("insert", 0)))),
                "deleted": len(state.delete(slug, int(params.get("delete", 0)))),
            }
            self._send(200, dumps({"entity": slug, **done}))
            return
        if path == "/_demo/settings":  # latency_ms, jitter_ms, max_concurrent (0: no limit), retry_after
            try:
                state.configure(params)
            except ValueError as exc:
                self._send(400, dumps({"detail": str(exc)}))
                return
            self._send(200, dumps(state.settings()))
            return
        self._send(404, dumps({"detail": "not found"}))


class DemoHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], state: DemoState, *, prefix: str = "", verbose: bool = False) -> None:
        super().__init__(addr, Handler)
        self.state = state
        self.prefix = prefix.rstrip("/")
        self.verbose = verbose


class DemoServer:
    """The demo server on a free local port, in a background thread."""

    def __init__(
        self,
        state: DemoState | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        prefix: str = "",
        tls: tuple[str, str] | None = None,
        latency_ms: float | None = None,
        jitter_ms: float | None = None,
        max_concurrent: int | None = None,
    ) -> None:
        self.state = state or DemoState()
        # Shortcuts for the state's modes (see DemoState): set only when given.
        if latency_ms is not None:
            self.state.latency_ms = latency_ms
        if jitter_ms is not None:
            self.state.jitter_ms = jitter_ms
        if max_concurrent is not None:
            self.state.max_concurrent = max_concurrent
        self.httpd = DemoHTTPServer((host, port), self.state, prefix=prefix)
        self.scheme = "http"
        if tls is not None:  # (certificate file, key file)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
            self.scheme = "https"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="demo-apismith", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"{self.scheme}://{host!s}:{port}{self.httpd.prefix}"

    def __enter__(self) -> DemoServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _parse_rows(text: str) -> dict[str, int]:
    """``items=1000,orders=50`` or ``items*10=100000`` (ten copies: items_1 ... items_10)."""
    out = {}
    for part in text.split(","):
        if part.strip():
            slug, _, count = part.partition("=")
            slug = slug.strip()
            if "*" in slug:
                base, _, copies = slug.partition("*")
                for i in range(1, int(copies) + 1):
                    out[f"{base}_{i}"] = int(count)
            else:
                out[slug] = int(count)
    return out


def _parse_strategies(text: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in text.split(",") if "=" in part)


def build_parser() -> argparse.ArgumentParser:
    """The command line's options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8007, help="0 picks a free port")
    parser.add_argument("--token", default=None, help="require this bearer token")
    parser.add_argument(
        "--rows",
        default="items=1000,customers=200,orders=800",
        help="rows per entity, e.g. items=1000000,customers=500",
    )
    parser.add_argument("--prefix", default="", help="serve under a path prefix, e.g. /smith")
    parser.add_argument("--max-page-size", type=int, default=DEFAULT_MAX_PAGE_SIZE)
    parser.add_argument("--strategy", default="", help="override delta strategies, e.g. items=full")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--latency-ms", type=float, default=0, help="delay every data page by this many ms")
    parser.add_argument("--jitter-ms", type=float, default=0, help="vary that delay by up to +/- this many ms")
    parser.add_argument(
        "--max-concurrent",
        type=int,
        default=None,
        help="answer 429 to a data request that would make more than this many in flight",
    )
    parser.add_argument("--retry-after", type=float, default=1, help="the Retry-After (seconds) of those 429s")
    return parser


def state_from_args(args: argparse.Namespace) -> DemoState:
    """The demo data and modes the command line asks for."""
    rows = _parse_rows(args.rows)
    strategies = _parse_strategies(args.strategy)
    for slug in list(strategies):
        if slug not in rows:  # items=full applies to the copies items_1 ... too
            strategies.update({s: strategies[slug] for s in rows if s.rsplit("_", 1)[0] == slug})
    return DemoState(
        rows,
        token=args.token,
        max_page_size=args.max_page_size,
        strategies=strategies,
        latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms,
        max_concurrent=args.max_concurrent,
        retry_after=args.retry_after,
    )


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    state = state_from_args(args)
    httpd = DemoHTTPServer((args.host, args.port), state, prefix=args.prefix, verbose=args.verbose)
    host, port = httpd.server_address[:2]
    print(f"demo APISmith listening on http://{host!s}:{port}{httpd.prefix}", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()


if __name__ == "__main__":
    main()
