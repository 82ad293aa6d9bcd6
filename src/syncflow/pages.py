"""The page stream: pages of ``GET /api/v1/data/{slug}`` as they arrive (protocol section 2).

Rows are never collected: the stream yields one page at a time, and
:func:`prefetch` runs it in a thread so the next page downloads and decodes
while PostgreSQL loads the current one.

No row may be lost to a source that changes while we page through it. For
the ``rowversion`` strategy the stream therefore reads by *keyset*: every
request is page 1 of ``rowversion_gt=<cursor>``, and the next cursor is the
greatest row version on the page that is strictly below the page's last one,
so a group of equal row versions cut by the page boundary is read again
whole (and the rows read again unchanged are dropped, not passed on). A
change at the source gives the row a higher version, so it comes later in
the same stream — nothing shifts under a page-1 read. Only when one row
version fills a whole page (or the server does not order by row version, or
sends none) does the stream page by number within that query; that segment
is read again until two reads agree, and a segment that never settles makes
the stream ``unstable`` (the run ends partial, the checkpoint stays). Why
each mode keeps the invariant is argued in ``docs/correctness.md``.
"""

from __future__ import annotations

import functools
import itertools
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

from syncflow.client import APISmithClient
from syncflow.errors import Cancelled, SourceError, SourceProtocolError

AHEAD_BYTES = 16 * 2**20  # JSON bytes of the pages one read fetches ahead in parallel (from the largest page seen)
PREFETCH_BYTES = 12 * 2**20  # JSON bytes of the pages waiting for the loader
MAX_PASSES = 3  # reads of one page-number segment before the run gives up on it (status partial)
JOIN_SECONDS = 2.0  # how long a stopping stream waits for its fetch thread before abandoning it
IDLE_SECONDS = 1.0  # a source silent this long: the loader commits what it has (see prefetch's on_idle)
PROBE_PAGES = 3  # the first pages of a by-number read, fetched one after another to measure the wait (Pace)

# (data, row_version, is_tombstone, oracle_keys, problem): ``problem`` says why the row must be
# rejected (a row version that is no version); such rows never steer paging or the checkpoint.
RawRow = tuple[dict[str, Any], str | None, bool, dict[str, Any] | None, str | None]
# rows, total, has_more, total_pages of one page
Parsed = tuple[list[RawRow], int | None, bool | None, int | None]
# The business key of a raw row, as the loader reads it (by alias, by source name, from oracle_keys).
KeyFn = Callable[[dict[str, Any], dict[str, Any] | None], Hashable]


def is_digits(value: str) -> bool:
    """ASCII digits only: ``"²".isdigit()`` is true, yet ``int("²")`` fails."""
    return value.isascii() and value.isdigit()


def compare_rowversions(a: str, b: str) -> int:
    """Order row versions as the source does: digit strings as integers, else as strings."""
    if is_digits(a) and is_digits(b):
        ia, ib = int(a), int(b)
        return (ia > ib) - (ia < ib)
    return (a > b) - (a < b)


rowversion_key = functools.cmp_to_key(compare_rowversions)


def max_rowversion(values: Sequence[str | None]) -> str | None:
    present = [v for v in values if v is not None]
    return max(present, key=rowversion_key) if present else None


def rowversion_before(value: str) -> str | None:
    """The greatest digit version below ``value`` (same width), or None for other versions.

    Asking for ``rowversion_gt`` of it re-reads the rows tied with ``value``:
    with second-granular versions a row written after a sync can carry the
    very version the checkpoint holds.
    """
    if not is_digits(value) or int(value) == 0:
        return None
    return str(int(value) - 1).zfill(len(value))


@dataclass
class Page:
    """One decoded page.

    ``number`` is its page number in a by-number read (0 in a keyset read).
    ``position`` (keyset reads) is a row version every row at or below which
    was passed on by this page or an earlier one: once this page is merged,
    a checkpoint there is safe (None where paging by number made it unknown).
    """

    rows: list[RawRow]
    nbytes: int
    number: int = 0
    position: str | None = None
    # Range reads (syncflow.ranges): version ranges (lo, hi] above ``position`` read whole by this page.
    done: tuple[tuple[str, str], ...] = ()
    # No rows: the read starts over from here (a split read fell back to the sequential one), so the keys
    # seen before it are not evidence of what is live.
    restart: bool = False


class Degrade(Exception):
    """A range of a range-parallel read met a source it cannot split safely (rows out of row-version
    order, rows without a usable row version): the whole read falls back to one sequential keyset read."""


def _as_rowversion(value: Any) -> tuple[str | None, str | None]:
    """(row version, problem): a string or a number, printable, never empty."""
    if value is None:
        return None, None
    if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
        return None, f"row_version {str(value)[:40]!r} is not a string or a number"
    if isinstance(value, (float, Decimal)):
        if not math.isfinite(value):
            return None, f"row_version {value} is not a usable row version"
        return (str(int(value)) if value == int(value) else str(value)), None
    text = str(value)
    if not text or not text.isprintable() or (not text.isascii() and any(ch.isdigit() for ch in text)):
        return None, f"row_version {text[:40]!r} is not a usable row version"
    return text, None


def parse_page(
    body: Any, *, connector: str, url: str, preview: str = ""
) -> tuple[list[RawRow], int | None, bool | None, int | None]:
    """Rows, total, has_more and total_pages of one page; tolerant of the bare-array form."""

    def broken(why: str) -> SourceProtocolError:
        return SourceProtocolError(
            f"connector {connector}: {url} returned a page of the wrong shape: {why}: {preview!r}",
            details={"url": url, "body": preview},
        )

    def whole(value: Any) -> int | None:
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    if isinstance(body, list):
        raw_rows, total, has_more, total_pages = body, None, None, None
        bare = True
    elif isinstance(body, dict) and isinstance(body.get("rows"), list):
        raw_rows = body["rows"]
        total = whole(body.get("total"))
        has_more = body.get("has_more") if isinstance(body.get("has_more"), bool) else None
        total_pages = whole(body.get("total_pages"))
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
            rows.append((item, None, False, None, None))
            continue
        tomb = item.get("deleted") is True or item.get("_deleted") is True
        okeys = item.get("oracle_keys")
        rv, problem = _as_rowversion(item.get("row_version"))
        rows.append((data, rv, tomb, okeys if isinstance(okeys, dict) else None, problem))
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
    keyset: bool = False
    missing_rowversions: bool = False
    # A page-number segment kept changing through MAX_PASSES reads: rows may be missing.
    unstable: bool = False
    rereads: int = 0  # rows read again on purpose and not passed on (keyset ties, verification passes)
    digest: int = 0  # the order of the keys of every row passed on, for comparing two passes
    warnings: list[str] = field(default_factory=list)

    def checkpoint(self, previous: str | None) -> str | None:
        """The checkpoint this stream earned: every row at or below it was read and passed on."""
        if not self.complete or self.missing_rowversions or self.unstable or not self.keyset:
            return previous
        best = self.max_rowversion
        if best is None:
            return previous
        if previous is not None and compare_rowversions(best, previous) < 0:
            return previous
        return best


def _token(key: Hashable) -> Hashable:
    """A hashable stand-in for a key that tells apart what PostgreSQL may tell apart.

    Python holds ``1 == Decimal("1.0")``, yet in a text column they are the keys
    ``"1"`` and ``"1.0"``; so non-strings count with their type and spelling
    (``(1, "1")`` stays distinct from ``"1"`` too). An object or array is repr'd.
    """
    if type(key) is str:
        return key
    if type(key) is tuple:
        return tuple(_token(v) for v in key)
    try:
        hash(key)
    except TypeError:
        return repr(key)
    return (type(key).__name__, str(key))


def fingerprint(row: RawRow) -> Hashable:
    """A row read again is "the same" only with the same data and tombstone flag, not just its version:
    a second-granular source can rewrite a row, or delete it, within its version's second."""
    return (row[2], repr(row[0]))


class PageStream:
    """Iterates the pages of one entity, deciding each next request itself.

    ``keyset`` streams (rowversion entities) ask page 1 of ``rowversion_gt=<cursor>``
    each time and drop the rows of a tie group they read again on purpose.
    Where they must page by number (one row version fills a page, or the
    server does not order by row version) the pages of that query form a
    *segment* that is read again until two reads agree; a segment that never
    settles marks the stream unstable. Other streams (full / hash) page by
    number throughout; their ``digest`` lets the loader compare two passes.
    """

    def __init__(  # noqa: PLR0913 - the query, then keyword-only facts about where a read starts and ends
        self,
        client: APISmithClient,
        slug: str,
        *,
        page_size: int,
        key_fn: KeyFn,
        rowversion_gt: str | None = None,
        keyset: bool = False,
        first_page: int = 1,
        rows_before: int = 0,
        upper: str | None = None,
        ranged: bool = False,
        first: tuple[Parsed, int] | None = None,
    ) -> None:
        self.client = client
        self.slug = slug
        self.page_size = page_size
        self.key_fn = key_fn
        self.start = rowversion_gt
        # A by-number read resumed by a later run starts here (the pages before it were loaded then).
        self.first_page = first_page
        self.rows_before = rows_before  # the rows the pages before first_page served (a server may cap a page)
        # A range of a range-parallel read (syncflow.ranges): only rows up to ``upper`` (None: all);
        # what a split read cannot handle raises Degrade instead of the sequential read's remedies.
        self.upper = upper
        self.ranged = ranged
        self._first = first  # the first keyset page, already fetched by whoever planned the read
        self.ahead_bytes = AHEAD_BYTES  # what may be fetched ahead in parallel (a share of it per entity at once)
        self.pace = Pace()  # how long its requests wait against what a page costs here
        self.state = StreamState(keyset=keyset)
        self._stop = threading.Event()
        self._nbytes = 0
        self._unordered = False  # found out of row-version order: no more keyset paging
        # Set while a keyset page is with the reader: the cursor of the next request and the rows (key,
        # version, fingerprint) it will ask for again (see ranges.RangeStream._in_order_first).
        self.next_cursor: str | None = None
        self.next_tail: set[tuple[Hashable, str | None, Hashable]] = set()
        # Keys passed on by a segment paged by number from the start that its last read no longer had and no
        # page has had since: deleted during the read, and such requests (no rowversion_gt) serve no tombstone.
        self._vanished: set[Hashable] = set()

    def stop(self) -> None:
        self._stop.set()

    def _key(self, row: RawRow) -> Hashable:
        return _token(self.key_fn(row[0], row[3]))

    def _fetch(self, page: int, cursor: str | None) -> Parsed:
        return self._took(*self._get(page, cursor))

    def _get(self, page: int, cursor: str | None) -> tuple[Parsed, int]:
        """One page requested and decoded, and its size; touches no stream state (runs in fetch threads)."""
        alone, wait = self.pace.start(), None
        try:
            resp = self.client.get_page(self.slug, page=page, page_size=self.page_size, rowversion_gt=cursor)
            wait = resp.elapsed
            parsed = parse_page(resp.data, connector=self.client.connector, url=resp.url, preview=resp.preview)
        finally:
            self.pace.fetched(wait, alone=alone)
        return parsed, resp.nbytes

    def _took(self, parsed: Parsed, nbytes: int) -> Parsed:
        """A page taken in page order: counted, and its total noted."""
        st = self.state
        st.pages += 1
        st.bytes += nbytes
        self._nbytes = nbytes
        self.pace.pages += 1
        if st.first_total is None:
            st.first_total = parsed[1]
        return parsed

    def _page(
        self,
        rows: list[RawRow],
        keys: tuple[Hashable, ...] | None = None,
        *,
        number: int = 0,
        position: str | None = None,
    ) -> Page:
        self._pass_on(rows, keys)
        st = self.state
        if self._vanished:
            self._vanished.difference_update(keys if keys is not None else map(self._key, rows))
        if st.unstable or st.missing_rowversions or self._unordered or self._vanished:
            position = None  # rows may be missing below any cursor: no safe checkpoint from here on
        return Page(rows=rows, nbytes=self._nbytes, number=number, position=position)

    def _warn(self, message: str) -> None:
        if message not in self.state.warnings:
            self.state.warnings.append(message)

    def _note_max(self, rows: list[RawRow]) -> None:
        st = self.state
        page_max = max_rowversion([r[1] for r in rows if r[4] is None])
        if page_max is not None and (st.max_rowversion is None or compare_rowversions(page_max, st.max_rowversion) > 0):
            st.max_rowversion = page_max

    def _pass_on(self, rows: list[RawRow], keys: tuple[Hashable, ...] | None = None) -> None:
        st = self.state
        if not st.keyset:  # full / hash: the loader may compare this pass with the next
            st.digest = hash((st.digest, keys if keys is not None else tuple(map(self._key, rows))))
        self._note_max(rows)

    def __iter__(self) -> Iterator[Page]:
        if not self.state.keyset:
            yield from self._by_number(self.start)
            return
        yield from self._keyset()

    # -- page numbers: full / hash entities ----------------------------------------------------

    def _by_number(self, cursor: str | None) -> Iterator[Page]:
        """Every page of one query by number; repeats and total changes are noted.

        Once a page announces how many rows or pages there are, the pages after it are fetched
        ahead, up to the connector's concurrency at once (:class:`_Ahead`); they are taken here
        strictly in page order, so the checks, the digest and what the loader sees are those
        of a read page after page.
        """
        st = self.state
        previous: tuple[Hashable, ...] | None = None
        query_total: int | None = None
        max_total = 0
        page = self.first_page
        rows_read = self.rows_before  # what the pages before a resumed read's first served
        ahead = _Ahead(functools.partial(self._get, cursor=cursor), self._stop, f"fetch-{self.slug}")
        while True:
            if self._stop.is_set():
                return
            got = ahead.take(page)
            if got is None:
                return
            rows, total, has_more, total_pages = self._took(*got)
            keys = tuple(self._key(r) for r in rows)
            if rows and keys == previous:
                raise self._ignores_page(page)
            previous = keys
            if total is not None:
                if query_total is None:
                    query_total = total
                elif total != query_total:
                    st.total_changed = True
                max_total = max(max_total, total)
                if rows_read > 2 * max_total + 2 * self.page_size:
                    raise self._ignores_page(page)
            ahead.note(len(rows), self._nbytes)
            if not self._at_end(rows, has_more, total, total_pages, page, rows_read + len(rows)):
                self._plan(ahead, page, total, total_pages)
            yield self._page(rows, keys, number=page)
            rows_read += len(rows)
            if self._at_end(rows, has_more, total, total_pages, page, rows_read):
                break
            page += 1
        ahead.close()
        st.complete = True

    def _plan(self, ahead: _Ahead, page: int, total: int | None, total_pages: int | None) -> None:
        """Start fetching the pages after ``page`` that the counts announce, as many as may be in flight.

        The connector's concurrency, fewer when pages are large (``AHEAD_BYTES``) and when the
        requests wait too little for overlapping them to pay (:class:`Pace`); with one, nothing
        is fetched ahead and the next page is fetched when its turn comes.
        """
        most = self.pace.width(self.client.concurrency, always=self.client.parallel_reads == "always")
        width = max(1, min(most, self.ahead_bytes // max(ahead.largest, 1)))
        if width > 1:
            ahead.plan(page + 1, min(_last_page(page, ahead.served, total, total_pages), page + width))

    @staticmethod
    def _at_end(
        rows: list[RawRow], has_more: bool | None, total: int | None, total_pages: int | None, page: int, read: int
    ) -> bool:
        if not rows or has_more is False:
            return True
        return has_more is None and (
            (total_pages is not None and page >= total_pages) or (total is not None and read >= total)
        )

    def _ignores_page(self, page: int) -> SourceProtocolError:
        return SourceProtocolError(
            f"connector {self.client.connector}: the source answered page={page} of {self.slug!r} with the same"
            " rows as the page before (or more rows than its total allows): it ignores the 'page' parameter"
            " (a proxy that drops the query string?)",
            details={"slug": self.slug, "page": page},
        )

    # -- keyset: rowversion entities -----------------------------------------------------------

    def _keyset(self) -> Iterator[Page]:
        st = self.state
        cursor = self.start
        # (key, version, fingerprint) of the rows at the previous page's last version
        tail: set[tuple[Hashable, str | None, Hashable]] = set()
        previous: str | None = None  # the cursor of the query before this one
        expect: int | None = None  # what this query's total must at least be, if rows are in version order
        while True:
            if self._stop.is_set():
                return
            rows, total, has_more, total_pages = self._keyset_page(cursor)
            if expect is not None and total is not None and total < expect and not self._unordered:
                if self.ranged:
                    raise Degrade("rows out of row-version order")
                # Rows at or below the cursor existed beyond the page just read: the server does not
                # order by row version (it only seemed to on that page). Read that query again, whole.
                self._unordered = True
                self._warn("the server does not order rows by row version; paging by page number and reading twice")
                outcome: list[str | None] = []
                yield from self._segment(previous, outcome, first=None)
                if outcome and not self._stop.is_set():
                    st.complete = True
                return
            if tail:
                again = {t[1] for t in tail}
                fresh = [r for r in rows if r[1] not in again or (self._key(r), r[1], fingerprint(r)) not in tail]
            else:
                fresh = rows
            st.rereads += len(rows) - len(fresh)
            if self.upper is not None and self._past_upper(rows):
                # In version order, the page reaches past the range: the range's last rows are on it.
                upper = self.upper
                self._confirm_end(total, sum(1 for r in rows if compare_rowversions(r[1] or "", upper) <= 0))
                yield self._page([r for r in fresh if compare_rowversions(r[1] or "", upper) <= 0], position=cursor)
                break
            # Every row at or below this page's cursor came on earlier pages (the total just checked that).
            if not rows or self._at_end(rows, has_more, total, total_pages, 1, len(rows)):
                yield self._page(fresh, position=cursor)
                break
            nxt = self._next_cursor(rows, cursor)
            if nxt is not None:
                last = rows[-1][1]
                tail = {(self._key(r), r[1], fingerprint(r)) for r in rows if r[1] == last}
                # Where the next request starts, and the rows it asks for again (for a read continued elsewhere).
                self.next_cursor, self.next_tail = nxt, tail
                yield self._page(fresh, position=cursor)
                self.next_cursor = None
                consumed = sum(1 for r in rows if r[1] is not None and compare_rowversions(r[1], nxt) <= 0)
                expect = total - consumed if total is not None else None
                previous, cursor = cursor, nxt
                continue
            # One version fills the page, or the rows are not in version order: page by number.
            outcome = []
            yield from self._segment(cursor, outcome, first=(rows, total, has_more, total_pages))
            if not outcome or self._stop.is_set():
                return
            if outcome[0] is None:
                break  # the query ended inside the segment
            cursor, tail, expect = outcome[0], set(), None
        self._check_vanished()
        st.complete = True

    def _check_vanished(self) -> None:
        """Rows that went away while paged by number from the start are still in the table, and their
        tombstones are below the checkpoint this read would earn: the run must not end success."""
        if self._vanished:
            self.state.unstable = True
            self._warn(
                f"{len(self._vanished)} row(s) of {self.slug!r} went away while rows sharing one row version were"
                " paged by number from the start, where the source serves no tombstones; the next run reads"
                " from the start again to delete them (a page_size above the largest such group avoids this)"
            )

    def _keyset_page(self, cursor: str | None) -> Parsed:
        """Page 1 of ``rowversion_gt=cursor`` (the first one may have come with the stream)."""
        if self._first is not None:
            parsed, self._first = self._took(*self._first), None
        else:
            parsed = self._fetch(1, cursor)
        if self.ranged and any(r[4] is not None for r in parsed[0]):
            raise Degrade("a row without a usable row version")
        return parsed

    def _segment(  # noqa: PLR0915 - one loop over the passes; split up, its state would be scattered
        self,
        cursor: str | None,
        outcome: list[str | None],
        *,
        first: tuple[list[RawRow], int | None, bool | None, int | None] | None,
    ) -> Iterator[Page]:
        """Page one query by number until keyset paging can resume; read it again until two reads agree.

        Rows leaving a tie group while it is paged by number shift the rest
        towards the front, so a row nobody touched can fall between two
        pages. Such a move changes the sequence of rows a second read sees,
        so a segment counts as read only when two consecutive reads of it
        agree. Rows already passed on are not passed on again. Appends
        ``resume`` (the cursor keyset paging continues from, or None at the
        end of the query) to ``outcome``.
        """
        st = self.state
        passed: set[tuple[Hashable, str | None, Hashable]] = set()
        before: int | None = None
        for _attempt in range(MAX_PASSES):
            sequence = 0
            resume: str | None = None
            page = 1
            read = 0
            previous: tuple[Hashable, ...] | None = None
            first_total: int | None = None
            seen: list[Hashable] = []  # the keys of this pass's rows in the segment
            within = 0  # rows of the range (at or below ``upper``) on this pass's pages
            while True:
                if self._stop.is_set():
                    return
                if first is not None:  # page 1, already fetched by the caller
                    (rows, total, has_more, total_pages), first = first, None
                else:
                    rows, total, has_more, total_pages = self._fetch(page, cursor)
                keys = tuple(self._key(r) for r in rows)
                if rows and keys == previous:
                    raise self._ignores_page(page)
                previous = keys
                if total is not None and read > 2 * total + 2 * self.page_size:
                    raise self._ignores_page(page)
                read += len(rows)
                end = self._at_end(rows, has_more, total, total_pages, page, read)
                first_total = total if page == 1 else first_total
                within, past = self._within_range(rows, within, first_total)
                end = end or past  # the range ends on this page; the rows above it are the next range's
                nxt = None if end else self._next_cursor(rows, cursor)
                # Rows above the resume cursor are read again by keyset paging: not part of the segment.
                inside = rows if nxt is None else [r for r in rows if compare_rowversions(r[1] or "", nxt) <= 0]
                if self.upper is not None:
                    inside = [r for r in inside if compare_rowversions(r[1] or "", self.upper) <= 0]
                sequence = hash((sequence, tuple((self._key(r), r[1]) for r in inside)))
                seen += map(self._key, inside)
                fresh = [r for r in inside if (self._key(r), r[1], fingerprint(r)) not in passed]
                passed.update((self._key(r), r[1], fingerprint(r)) for r in fresh)
                st.rereads += len(inside) - len(fresh)
                if fresh:
                    yield self._page(fresh)
                if end or nxt is not None:
                    resume = nxt
                    break
                page += 1
            if sequence == before:
                if cursor is None and not self.ranged:  # no tombstones: what went away must be noticed here
                    self._vanished |= {k for k, _v, _f in passed} - set(seen)
                outcome.append(resume)
                return
            before = sequence
        else:
            st.unstable = True
            st.warnings.append(
                f"rows kept moving while a group of {self.slug!r} rows was paged by number"
                f" (rowversion_gt={cursor}); they are read again by the next run"
            )
        outcome.append(resume)

    def _within_range(self, rows: list[RawRow], within: int, total: int | None) -> tuple[int, bool]:
        """(the range's rows on a segment's pages so far, whether this page ends the range)."""
        if self.upper is None:
            return within, False
        upper = self.upper
        within += sum(1 for r in rows if compare_rowversions(r[1] or "", upper) <= 0)
        if not self._past_upper(rows):
            return within, False
        self._confirm_end(total, within)
        return within, True

    def _confirm_end(self, total: int | None, within: int) -> None:
        """A range ends on a page that shows a row above it; in row-version order every row of the range
        up to there came first. Check that order as the sequential read's next query would: of the
        ``total`` rows above the query's cursor, ``within`` came at or below ``upper``, so at least
        ``total - within`` rows must be above ``upper``. Fewer means rows of the range were still to come
        (a server ordered by something else, each page sorted by version): the split read cannot go on.
        Rows changing meanwhile only raise the count above ``upper``; a hard delete can lower it (then
        the split read gives way to the sequential one, which is slower but never wrong).
        """
        if total is None or self.upper is None:
            return  # no totals: not checkable (the sequential read has the same blind spot)
        above = probe_total(self.client, self.slug, self.upper)
        st = self.state
        st.pages, st.bytes = st.pages + 1, st.bytes + above[1]
        if above[0] is not None and above[0] < total - within:
            raise Degrade("rows out of row-version order")

    def _past_upper(self, rows: list[RawRow]) -> bool:
        """The page's rows are in row-version order and the last is above the range's upper bound."""
        rvs = [r[1] for r in rows]
        if not rvs or any(v is None for v in rvs) or self.upper is None:
            return False
        if not all(compare_rowversions(a, b) <= 0 for a, b in itertools.pairwise(rvs)):  # type: ignore[arg-type]
            raise Degrade("rows out of row-version order")
        return compare_rowversions(rvs[-1], self.upper) > 0  # type: ignore[arg-type]

    def _next_cursor(self, rows: list[RawRow], cursor: str | None) -> str | None:
        """The greatest row version below the page's last one, if it moves the cursor forward."""
        st = self.state
        rvs = [r[1] for r in rows if r[4] is None]
        if self.ranged and (not rvs or any(v is None for v in rvs)):
            raise Degrade("rows without row versions")
        if not rvs or any(v is None for v in rvs):
            self._warn("rows carry no row_version; paging by page number, reading twice, keeping the checkpoint")
            st.missing_rowversions = True
            return None
        ordered = all(compare_rowversions(a, b) <= 0 for a, b in itertools.pairwise(rvs))  # type: ignore[arg-type]
        if self.ranged and not ordered:
            raise Degrade("rows out of row-version order")
        if not ordered or self._unordered:
            self._warn("the server does not order rows by row version; paging by page number and reading twice")
            return None
        versions = [v for v in rvs if v is not None]  # all of them: a missing one returned above
        last = versions[-1]
        for v in reversed(versions):
            if compare_rowversions(v, last) < 0:
                if cursor is None or compare_rowversions(v, cursor) > 0:
                    return v
                return None
        return None


def probe(client: APISmithClient, slug: str, cursor: str | None, page: int) -> tuple[list[RawRow], int | None, int]:
    """One row (``page_size=1``) of ``rowversion_gt=cursor`` at ``page``: its rows, the query's total and the
    answer's size. A source that cannot answer it (a refused page size, a page of the wrong shape) cannot be
    split by row version: Degrade, and the sequential read finds out what is wrong with it, if anything."""
    try:
        resp = client.get_page(slug, page=page, page_size=1, rowversion_gt=cursor)
        rows, total, _more, _pages = parse_page(
            resp.data, connector=client.connector, url=resp.url, preview=resp.preview
        )
    except Cancelled:
        raise
    except SourceError as exc:
        raise Degrade(f"a page_size=1 request failed ({type(exc).__name__})") from exc
    return rows, total, resp.nbytes


def probe_total(client: APISmithClient, slug: str, cursor: str | None) -> tuple[int | None, int]:
    """How many rows are above ``cursor`` (None: the source does not say), and the answer's size."""
    _rows, total, nbytes = probe(client, slug, cursor, 1)
    return total, nbytes


def _last_page(page: int, served: int, total: int | None, total_pages: int | None) -> int:
    """The last page number the counts announce (``page`` itself when they announce none).

    ``served`` is the most rows a page has had: a server may cap the page size below the one asked
    for. Page numbers count from the query's first row, whatever page a read starts at.
    """
    last = page
    if total_pages is not None:
        last = max(last, total_pages)
    if total is not None and served > 0:
        last = max(last, -(-total // served))
    return last


class Pace:
    """How long one read's requests wait, against the CPU a page costs this process: how many to overlap.

    By Little's law, a read whose requests each wait ``W`` seconds and whose pages
    each cost this process ``C`` seconds of CPU (decoding, staging, COPY, merging:
    Python work under one GIL, which does not overlap with itself) keeps its
    consumer busy with about ``W / C`` requests in flight. A request that waits
    less than a page costs (a source on the same machine or a fast network) is not
    worth overlapping: more requests then only contend for the same CPU (measured
    15-25 % slower at 0 ms per page here).

    ``W`` is taken from requests that were alone in flight (the first pages of a
    read are fetched one after another for that): a source that serves requests
    one at a time makes each of several requests in flight wait for the others,
    and that queueing must not pass for latency worth hiding.
    ``parallel_reads = "always"`` (a connector setting) overlaps up to the
    connector's limit regardless.
    """

    FORGET = 1.05  # the lowest wait drifts up this much per request alone, to follow a source slowing down

    def __init__(self, cpu: Callable[[], float] = time.process_time) -> None:
        self.lock = threading.Lock()
        self.cpu = cpu
        self.in_flight = 0
        self.wait: float | None = None  # the lowest recent wait of a request alone in flight (not decoding)
        self.pages = 0  # pages taken by the reader
        self.cpu0 = cpu()  # the process's CPU when the read began

    def start(self) -> bool:
        """A request of this read starts; True when no other one is in flight."""
        with self.lock:
            self.in_flight += 1
            return self.in_flight == 1

    def fetched(self, wait: float | None, *, alone: bool) -> None:
        """A request ended (``wait`` None: it failed): how long it waited."""
        with self.lock:
            self.in_flight -= 1
            if wait is None or not alone:
                return
            self.wait = wait if self.wait is None else min(wait, self.wait * self.FORGET)

    def page_cpu(self) -> float | None:
        """CPU seconds this process spent per page taken since the read began (every thread of it)."""
        if self.pages == 0:
            return None
        return max((self.cpu() - self.cpu0) / self.pages, 1e-4)

    def width(self, most: int, *, always: bool = False) -> int:
        """Requests worth having in flight, at most ``most``."""
        if always or most <= 1:
            return max(1, most)
        cpu, wait = self.page_cpu(), self.wait
        if self.pages < PROBE_PAGES or cpu is None or wait is None:
            return 1
        return max(1, min(most, round(wait / cpu + 0.5)))


class _Ahead:
    """The pages of one query fetched ahead, each in a daemon thread, handed over in page order.

    At most the pages planned are in flight (the caller bounds them by the connector's
    concurrency and by bytes), and a result waits here only until its turn, so memory stays
    bounded. A page never planned is fetched by :meth:`take` itself, in the caller's thread:
    with a concurrency of one, the read is the sequential one. A stop, a close, an error or
    an abandoned stream leaves the threads still fetching to end with their request (its
    deadline, the cancel event); their pages are dropped (with the stream, at the latest).
    """

    def __init__(self, fetch: Callable[[int], tuple[Parsed, int]], stop: threading.Event, name: str) -> None:
        self.fetch, self.stop, self.name = fetch, stop, name
        self.cond = threading.Condition()
        self.started: set[int] = set()
        self.done: dict[int, tuple[tuple[Parsed, int] | None, BaseException | None]] = {}
        self.closed = False
        self.served = self.largest = 0  # the most rows and JSON bytes one page had

    def note(self, rows: int, nbytes: int) -> None:
        """A page taken: the server's page size (it may cap the one asked for) and the largest page."""
        self.served, self.largest = max(self.served, rows), max(self.largest, nbytes)

    def plan(self, first: int, last: int) -> None:
        """Start fetching the pages ``first`` .. ``last`` not yet started."""
        for number in range(first, last + 1):
            if number not in self.started and not self.closed:
                self.started.add(number)
                threading.Thread(target=self._run, args=(number,), name=f"{self.name}-{number}", daemon=True).start()

    def _run(self, number: int) -> None:
        result: tuple[tuple[Parsed, int] | None, BaseException | None]
        try:
            result = (self.fetch(number), None)
        except BaseException as exc:  # handed to the reader with the page, in its turn
            result = (None, exc)
        with self.cond:
            if not self.closed:
                self.done[number] = result
            self.cond.notify_all()

    def take(self, number: int) -> tuple[Parsed, int] | None:
        """Page ``number`` once fetched (raising what its fetch raised), or None when the stream stopped."""
        if number not in self.started:
            return self.fetch(number)
        with self.cond:
            while number not in self.done:
                if self.stop.is_set() or self.closed:
                    return None
                self.cond.wait(0.2)
            got, exc = self.done.pop(number)
        if exc is not None:
            raise exc
        return got

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.done.clear()
            self.cond.notify_all()


_END = object()
_IDLE = object()  # prefetch: the source has been silent for a while


T = TypeVar("T")


def prefetch(
    stream: PageStream,
    max_pages: int = 24,
    *,
    max_bytes: int = PREFETCH_BYTES,
    cancel: threading.Event | None = None,
    prepare: Callable[[Page], T],
    on_idle: Callable[[], None] | None = None,
    idle_after: float = IDLE_SECONDS,
) -> Generator[T, None, None]:
    """Run the stream in a thread, up to ``max_pages`` (and ``max_bytes`` of JSON) ahead.

    ``prepare`` runs in that thread too (turning rows into COPY tuples), so the
    download, the JSON decoding and the tuple building of the next pages
    overlap with PostgreSQL's work on the current batch; the lead is deep
    enough to cover a whole merge, and bounded in bytes so that wide rows do
    not make memory grow. The consumer wakes up regularly to notice
    ``cancel`` (set by a signal handler), so a stop request is honoured even
    while a page is downloading. ``on_idle`` runs in the consumer's thread,
    once per stall, when nothing came for ``idle_after`` seconds: the loader
    commits what it holds then, so a source that stops answering (a held
    request, a long Retry-After) and a kill meanwhile lose nothing read.
    """
    lead = _Lead(max_pages, max_bytes)

    def produce() -> None:
        try:
            for page in stream:
                if not lead.put(prepare(page), page.nbytes):
                    return
        except BaseException as exc:
            lead.put(exc, 0)
            return
        lead.put(_END, 0)

    thread = threading.Thread(target=produce, name=f"fetch-{stream.slug}", daemon=True)
    thread.start()
    try:
        label = f"{stream.client.connector}.{stream.slug}"
        while True:
            item = lead.take(cancel, label, idle_after if on_idle is not None else None)
            if item is _IDLE and on_idle is not None:
                on_idle()
                item = lead.take(cancel, label)
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stream.stop()
        lead.stop()
        # A fetch blocked on a slow source must not hold up a stop: the thread is a daemon, and its
        # request ends by its own deadline; the caller closes the client.
        thread.join(JOIN_SECONDS)


class _Lead:
    """The pages fetched ahead of the loader: bounded in count and in bytes of JSON."""

    def __init__(self, max_pages: int, max_bytes: int) -> None:
        self.max_pages, self.max_bytes = max_pages, max_bytes
        self.cond = threading.Condition()
        self.items: deque[tuple[Any, int]] = deque()
        self.queued = 0  # bytes of JSON behind the queued items
        self.stopping = threading.Event()

    def put(self, item: Any, nbytes: int) -> bool:
        """Queue an item once there is room; False when the consumer has stopped."""
        with self.cond:
            while self.items and self._full() and not self.stopping.is_set():
                self.cond.wait(0.2)
            if self.stopping.is_set():
                return False
            self.items.append((item, nbytes))
            self.queued += nbytes
            self.cond.notify_all()
            return True

    def _full(self) -> bool:
        return len(self.items) >= self.max_pages or self.queued >= self.max_bytes

    def take(self, cancel: threading.Event | None, label: str, idle_after: float | None = None) -> Any:
        """The next item; wakes up regularly so that a signal (``cancel``) is seen while a page downloads.

        With ``idle_after``: ``_IDLE`` once nothing came for that many seconds."""
        deadline = None if idle_after is None else time.monotonic() + idle_after
        with self.cond:
            while not self.items:
                self.cond.wait(0.2)
                if not self.items and cancel is not None and cancel.is_set():
                    raise Cancelled(f"{label}: cancelled by a signal")
                if not self.items and deadline is not None and time.monotonic() >= deadline:
                    return _IDLE
            item, nbytes = self.items.popleft()
            self.queued -= nbytes
            self.cond.notify_all()
            return item

    def stop(self) -> None:
        self.stopping.set()
        with self.cond:
            self.items.clear()
            self.cond.notify_all()
