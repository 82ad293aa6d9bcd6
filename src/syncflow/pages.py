"""The page stream: pages of ``GET /api/v1/data/{slug}`` as they arrive (protocol section 2).

Rows are never collected: the stream yields one page at a time, and
:func:`prefetch` runs it in a thread so the next page downloads and decodes
while PostgreSQL loads the current one.

No row may be lost to a source that changes while we page through it. For
the ``rowversion`` strategy the stream therefore reads by *keyset*: every
request is page 1 of ``rowversion_gt=<cursor>``, and the next cursor is the
greatest row version on the page that is strictly below the page's last one,
so a group of equal row versions cut by the page boundary is read again
whole. A change at the source gives the row a higher version, so it comes
later in the same stream — nothing shifts under a page-1 read. Only when one
row version fills a whole page (or the server does not order by row version)
does the stream fall back to page numbers within that query, and then the
checkpoint is capped below that query if the paging looked unstable (the
announced total changed or a key came twice).
"""

from __future__ import annotations

import functools
import itertools
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from syncflow.client import APISmithClient
from syncflow.errors import Cancelled, SourceProtocolError

# (data, row_version, is_tombstone, oracle_keys)
MAX_PASSES = 3

RawRow = tuple[dict[str, Any], str | None, bool, dict[str, Any] | None]


def compare_rowversions(a: str, b: str) -> int:
    """Order row versions as the source does: digit strings as integers, else as strings."""
    if a.isdigit() and b.isdigit():
        ia, ib = int(a), int(b)
        return (ia > ib) - (ia < ib)
    return (a > b) - (a < b)


rowversion_key = functools.cmp_to_key(compare_rowversions)


def max_rowversion(values: Sequence[str | None]) -> str | None:
    present = [v for v in values if v is not None]
    return max(present, key=rowversion_key) if present else None


@dataclass
class Page:
    """One decoded page."""

    number: int
    rows: list[RawRow]
    nbytes: int
    total: int | None


def _as_rowversion(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def parse_page(
    body: Any, *, connector: str, slug: str, url: str, preview: str = ""
) -> tuple[list[RawRow], int | None, bool | None, int | None]:
    """Rows, total, has_more and total_pages of one page; tolerant of the bare-array form."""

    def broken(why: str) -> SourceProtocolError:
        return SourceProtocolError(
            f"connector {connector}: {url} returned a page of the wrong shape: {why}: {preview!r}",
            details={"url": url, "body": preview},
        )

    if isinstance(body, list):
        raw_rows, total, has_more, total_pages = body, None, None, None
        bare = True
    elif isinstance(body, dict) and isinstance(body.get("rows"), list):
        raw_rows = body["rows"]
        total = body.get("total") if isinstance(body.get("total"), int) else None
        has_more = body.get("has_more") if isinstance(body.get("has_more"), bool) else None
        total_pages = body.get("total_pages") if isinstance(body.get("total_pages"), int) else None
        bare = False
    else:
        raise broken("expected an object with a 'rows' array, or an array of rows")
    rows: list[RawRow] = []
    for item in raw_rows:
        if not isinstance(item, dict):
            raise broken("a row is not a JSON object")
        data = item.get("data")
        if bare or not isinstance(data, dict):
            if not bare and "data" in item:
                raise broken("a row's 'data' is not a JSON object")
            rows.append((item, None, False, None))
            continue
        tomb = item.get("deleted") is True or item.get("_deleted") is True
        okeys = item.get("oracle_keys")
        rows.append((data, _as_rowversion(item.get("row_version")), tomb, okeys if isinstance(okeys, dict) else None))
    return rows, total, has_more, total_pages


@dataclass
class StreamState:
    """What the stream learned, read by the loader once the stream is exhausted."""

    pages: int = 0
    bytes: int = 0
    complete: bool = False
    first_total: int | None = None
    total_changed: bool = False
    max_rowversion: str | None = None
    checkpoint_cap: str | None = None
    capped: bool = False
    keyset: bool = False
    passes: int = 1
    missing_rowversions: bool = False
    warnings: list[str] = field(default_factory=list)

    def checkpoint(self, previous: str | None) -> str | None:
        """The checkpoint this stream earned: every row at or below it was read."""
        if not self.complete or self.missing_rowversions:
            return previous
        if self.capped:
            cap = self.checkpoint_cap
            if cap is None or (previous is not None and compare_rowversions(cap, previous) < 0):
                return previous
            return cap
        best = self.max_rowversion
        if best is None:
            return previous
        if previous is not None and compare_rowversions(best, previous) < 0:
            return previous
        return best


class PageStream:
    """Iterates the pages of one entity, deciding each next request itself."""

    def __init__(
        self,
        client: APISmithClient,
        slug: str,
        *,
        page_size: int,
        key_names: Sequence[str],
        rowversion_gt: str | None = None,
        keyset: bool = False,
    ) -> None:
        self.client = client
        self.slug = slug
        self.page_size = page_size
        self.key_names = list(key_names)
        self.start = rowversion_gt
        self.state = StreamState(keyset=keyset)
        self.checkpointing = keyset
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def _key_hash(self, row: RawRow) -> int:
        data = row[0]
        return hash(tuple(str(data.get(k)) for k in self.key_names))

    def __iter__(self) -> Iterator[Page]:
        st = self.state
        start = self.start
        for attempt in range(MAX_PASSES):
            st.capped, st.checkpoint_cap, st.complete = False, None, False
            yield from self._pass(start)
            if not st.complete or not st.capped or self._stop.is_set() or attempt == MAX_PASSES - 1:
                return
            # Rows may have shifted past us: read again from the last safe point, so that
            # rows nobody changed are stored by this run rather than left to the next one.
            st.passes += 1
            start = st.checkpoint_cap if st.checkpoint_cap is not None else self.start

    def _pass(self, start: str | None) -> Iterator[Page]:
        st = self.state
        cursor = start
        page = 1
        query_rows = 0
        query_total: int | None = None
        query_keys: set[int] | None = None  # only while paging by number in a checkpointed stream
        while True:
            if self._stop.is_set():
                return
            resp = self.client.get_page(self.slug, page=page, page_size=self.page_size, rowversion_gt=cursor)
            rows, total, has_more, total_pages = parse_page(
                resp.data, connector=self.client.connector, slug=self.slug, url=resp.url, preview=resp.preview
            )
            st.pages += 1
            st.bytes += resp.nbytes
            if st.first_total is None:
                st.first_total = total
            if page == 1:
                query_total = total
            elif total is not None and query_total is not None and total != query_total:
                st.total_changed = True
                if self.checkpointing:
                    self._cap(cursor)
            rvs = [r[1] for r in rows]
            page_max = max_rowversion(rvs)
            if page_max is not None and (
                st.max_rowversion is None or compare_rowversions(page_max, st.max_rowversion) > 0
            ):
                st.max_rowversion = page_max
            if query_keys is not None:
                for r in rows:
                    h = self._key_hash(r)
                    if h in query_keys:
                        self._cap(cursor)
                    query_keys.add(h)
            yield Page(number=page, rows=rows, nbytes=resp.nbytes, total=total)
            query_rows += len(rows)
            if not rows or has_more is False:
                break
            if has_more is None and (
                (total_pages is not None and page >= total_pages) or (total is not None and query_rows >= total)
            ):
                break
            if st.keyset:
                nxt = self._next_cursor(rvs, cursor)
                if nxt is not None:
                    cursor, page, query_rows, query_total, query_keys = nxt, 1, 0, None, None
                    continue
            if self.checkpointing and query_keys is None:
                # One row version fills the page, or rows are not in order: page by number,
                # watching for the signs of shifted rows.
                query_keys = {self._key_hash(r) for r in rows}
            page += 1
        st.complete = True

    def _next_cursor(self, rvs: list[str | None], cursor: str | None) -> str | None:
        """The greatest row version below the page's last one, if it moves the cursor forward."""
        if not rvs or any(v is None for v in rvs):
            if self.state.keyset:
                self.state.warnings.append(
                    "rows carry no row_version; paging by page number and keeping the checkpoint"
                )
                self.state.keyset = False
            self.state.missing_rowversions = True
            return None
        ordered = all(compare_rowversions(a, b) <= 0 for a, b in itertools.pairwise(rvs))  # type: ignore[arg-type]
        if not ordered:
            if self.state.keyset:
                self.state.warnings.append("the server does not order rows by row version; paging by page number")
                self.state.keyset = False
            return None
        last = rvs[-1]
        assert last is not None
        for v in reversed(rvs):
            assert v is not None
            if compare_rowversions(v, last) < 0:
                if cursor is None or compare_rowversions(v, cursor) > 0:
                    return v
                return None
        return None

    def _cap(self, cursor: str | None) -> None:
        """Keep the checkpoint at or below ``cursor``: rows above it may have shifted."""
        st = self.state
        if not st.capped:
            st.checkpoint_cap = cursor
        elif st.checkpoint_cap is None or cursor is None:
            st.checkpoint_cap = None
        elif compare_rowversions(cursor, st.checkpoint_cap) < 0:
            st.checkpoint_cap = cursor
        st.capped = True


_END = object()


T = TypeVar("T")


def prefetch(
    stream: PageStream,
    max_pages: int = 24,
    *,
    max_bytes: int = 12 * 2**20,
    cancel: threading.Event | None = None,
    prepare: Callable[[Page], T],
) -> Iterator[T]:
    """Run the stream in a thread, up to ``max_pages`` (and ``max_bytes`` of JSON) ahead.

    ``prepare`` runs in that thread too (turning rows into COPY tuples), so the
    download, the JSON decoding and the tuple building of the next pages
    overlap with PostgreSQL's work on the current batch; the lead is deep
    enough to cover a whole merge, and bounded in bytes so that wide rows do
    not make memory grow. The consumer wakes up regularly to notice
    ``cancel`` (set by a signal handler), so a stop request is honoured even
    while a page is downloading.
    """
    cond = threading.Condition()
    items: deque[tuple[Any, int]] = deque()
    queued = [0]  # bytes of JSON behind the queued items
    stopping = threading.Event()

    def put(item: Any, nbytes: int) -> bool:
        with cond:
            while items and (len(items) >= max_pages or queued[0] >= max_bytes) and not stopping.is_set():
                cond.wait(0.2)
            if stopping.is_set():
                return False
            items.append((item, nbytes))
            queued[0] += nbytes
            cond.notify_all()
            return True

    def produce() -> None:
        try:
            for page in stream:
                if not put(prepare(page), page.nbytes):
                    return
        except BaseException as exc:
            put(exc, 0)
            return
        put(_END, 0)

    thread = threading.Thread(target=produce, name=f"fetch-{stream.slug}", daemon=True)
    thread.start()
    try:
        while True:
            with cond:
                while not items:
                    cond.wait(0.2)
                    if not items and cancel is not None and cancel.is_set():
                        raise Cancelled(f"{stream.client.connector}.{stream.slug}: cancelled by a signal")
                item, nbytes = items.popleft()
                queued[0] -= nbytes
                cond.notify_all()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stream.stop()
        stopping.set()
        with cond:
            items.clear()
            cond.notify_all()
        thread.join()
