"""Range-parallel keyset reads of rowversion entities.

A keyset read asks for page 1 of ``rowversion_gt=<cursor>`` again and again:
each request waits for the one before it. Against a source that answers a
page in 100 ms that is the whole run. This module splits the read into
row-version ranges ``(b0, b1], (b1, b2], ... (bk, open)`` and reads several
ranges at once, each by the ordinary keyset paging of
:class:`syncflow.pages.PageStream` bounded above.

- **Boundaries** are sampled ahead of the workers, in order: the row at offset ``n*S - 1`` of
  the query ``rowversion_gt=b0`` (a ``page_size=1`` request for page ``n*S``)
  gives ``bn``, so a range holds about ``S`` rows (``S`` = a few pages, one row
  short so that a range's last page shows where it ends). A boundary never
  goes below the one before it (rows moving up can only raise the row at an
  offset); a sample past the last row makes the range open-ended.
- **Ranges are handed out in order** to as many workers as the connector may
  have requests in flight, never more than a window ahead of the lowest
  unfinished range; pages wait for the reader in a queue bounded in pages and
  in bytes (the stream's ``ahead_bytes``).
- **Rows that change during the read** get a row version above every version
  that existed: they land in the open range. That range is read again, from
  the highest version it saw, once every other range has finished, so a row
  that left a range not yet read is still read by this run (as the
  sequential read would).
- **Pages are merged as they arrive**, so one row can be read in an old
  version by one range after its new version was merged from another: the
  merge of such a run never lets a version it wrote be overwritten by an
  older one (:func:`syncflow.merge.merge` ``versioned``).
- **The checkpoint** of a page is the cursor of the lowest unfinished range
  (every row at or below it was passed on); the finished ranges above it are
  recorded with it (``Page.done``), so a resumed run reads only the rest.
- **A source that cannot be split** (rows out of row-version order, rows
  without a usable row version) makes the whole read fall back to the
  sequential keyset read from the start, with all of its remedies.

Why this keeps the invariant: ``docs/correctness.md``, "Range-parallel reads".
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from syncflow.client import APISmithClient
from syncflow.pages import (
    PROBE_PAGES,
    Degrade,
    KeyFn,
    Page,
    PageStream,
    Parsed,
    RawRow,
    compare_rowversions,
    fingerprint,
    max_rowversion,
    probe,
    rowversion_before,
    rowversion_key,
)

RANGE_PAGES_MAX = 16  # pages in one range at most (one boundary request per range)
TOP_REMEMBERED = 100_000  # rows at or above ``top`` remembered so that reading its tie group again passes none twice
MAX_SKIPPED = 3  # boundary samples in a row at or below the last boundary before the rest is one range
# Fewer pages, and the requests a range adds (its boundary, its end check, its last page) cost more than they save.
RANGE_PAGES_MIN = 4
WINDOW = 2  # ranges handed out at most this many times the workers ahead of the lowest unfinished one


@dataclass
class _Range:
    lo: str | None
    hi: str | None  # None: open-ended
    position: str | None = None  # every row of the range at or below it was passed on
    done: bool = False
    streams: list[PageStream] = field(default_factory=list)  # its read, and the open range's second one


@dataclass
class _Shared:
    """The plan and the progress, under one condition shared by the workers and the reader."""

    cond: threading.Condition = field(default_factory=threading.Condition)
    ranges: list[_Range] = field(default_factory=list)
    planned: bool = False  # the last range is known
    taken: int = 0  # ranges handed out
    # (range, Page | None | exception, last): ``last`` (no page) says every page of the range was queued;
    # the finished range is recorded with the next page passed on.
    items: list[tuple[int, Any, bool]] = field(default_factory=list)
    lowest: int = 0  # the lowest unfinished range
    queued: int = 0  # JSON bytes of the pages in ``items``


class RangeStream(PageStream):
    """A rowversion read from ``rowversion_gt`` that reads row-version ranges concurrently.

    ``skip`` holds ranges ``(lo, hi]`` a killed run already read whole (its
    resume record): they are not read again. ``workers`` is the connector's
    concurrency; with one worker and nothing to skip this is the sequential read.
    """

    def __init__(
        self,
        client: APISmithClient,
        slug: str,
        *,
        page_size: int,
        key_fn: KeyFn,
        rowversion_gt: str | None,
        workers: int,
        skip: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(client, slug, page_size=page_size, key_fn=key_fn, rowversion_gt=rowversion_gt, keyset=True)
        self.workers = max(1, workers)
        self.skip = sorted(skip, key=lambda r: rowversion_key(r[0]))
        self.span = 0  # rows per range (one short of whole pages)
        self._subs: list[PageStream] = []
        self._lock = threading.Lock()
        self._samples = 0
        self._sample_bytes = 0
        self._shared = _Shared()
        self._halt = threading.Event()  # the parallel read ends (done, failed, or falling back)
        self._split_base: str | None = None  # the query the open gap's boundaries are sampled from
        self._split_lo: str | None = None  # the lower bound of the next range split from it
        self._next_sample = 0
        self._first_page: tuple[Parsed, int] | None = None
        self._top: str | None = None  # the highest row version when the ranges began (see _top_version)
        self._below_top: str | None = None  # the highest version read below it
        self._passed_top: set[tuple[Any, str | None, Any]] = set()  # rows at or above it passed on (bounded)
        self._skipped = 0  # boundary samples skipped in a row
        self._cut: str | None = None  # where the in-order pages ended and the split read began ("auto")
        self._cut_tail: set[tuple[Any, str | None, Any]] = set()  # rows passed on before the split began

    def stop(self) -> None:
        super().stop()
        self._halt_workers()

    # -- planning ----------------------------------------------------------------------------------

    def _sub(self, lo: str | None, hi: str | None, first: tuple[Parsed, int] | None = None) -> PageStream:
        sub = PageStream(
            self.client,
            self.slug,
            page_size=self.page_size,
            key_fn=self.key_fn,
            rowversion_gt=lo,
            keyset=True,
            upper=hi,
            ranged=True,
            first=first,
        )
        with self._lock:
            self._subs.append(sub)
        if self._stop.is_set():
            sub.stop()
        return sub

    def __iter__(self) -> Iterator[Page]:
        got = self._get(1, self.start)
        rows, total = got[0][0], got[0][1]
        self.state.first_total = total
        versions = [r[1] for r in rows]
        splittable = (
            total is not None
            and bool(rows)
            and all(v is not None for v in versions)
            and all(r[4] is None for r in rows)
            and all(compare_rowversions(a, b) <= 0 for a, b in itertools.pairwise(versions))  # type: ignore[arg-type]
        )
        pages = max(1, (total or 0) // self.page_size)
        per_range = max(RANGE_PAGES_MIN, min(RANGE_PAGES_MAX, pages // (2 * self.workers)))
        # A keyset page moves the cursor by one row less than it holds (the last row is asked for again,
        # for ties), and a range's last page must show a row above it: so many rows end on its last page.
        self.span = per_range * max(self.page_size - 1, 1)
        small = (total or 0) <= self.span + self.page_size
        if not self.skip and (not splittable or self.workers == 1 or small):
            yield from self._sequential(first=got)
            return
        start, first = self.start, (got if not self.skip else None)
        if not self.skip and self.client.parallel_reads != "always":
            # Split only what is left once the first pages, read in order, show that requests wait longer
            # than a page costs here (pages.Pace): a source on this machine is not worth it.
            cut = yield from self._in_order_first(got, total or 0)
            if cut is None:
                return  # read whole, in order
            start, first = cut, None
        if self.skip:  # a resumed read starts at its gaps: the first page was only looked at, count it here
            self._samples, self._sample_bytes = self._samples + 1, self._sample_bytes + got[1]
        try:
            yield from self._parallel(_gaps(start, self.skip), first)
        except Degrade as why:
            self._halt_workers()
            self.state.warnings.append(
                f"{why}: the read of {self.slug!r} could not be split by row version; it was read again in order"
            )
            # The read starts over: what the split read saw must not count for the delete step.
            yield Page(rows=[], nbytes=0, restart=True)
            yield from self._sequential(first=None)

    def _in_order_first(self, got: tuple[Parsed, int], total: int) -> Generator[Page, None, str | None]:
        """Read in order until ``PROBE_PAGES`` pages measured the wait; then return the cursor the split
        read of the rest starts from, or read on to the end (and return None) when splitting would not
        pay, or the read cannot be split from here (page numbers in a tie group, an unordered source),
        or what is left is small."""
        sub = PageStream(
            self.client, self.slug, page_size=self.page_size, key_fn=self.key_fn, rowversion_gt=self.start, keyset=True
        )
        sub._first, sub.pace = got, self.pace
        with self._lock:
            self._subs.append(sub)
        if self._stop.is_set():
            sub.stop()
        pages = iter(sub)
        passed = 0
        for page in pages:
            passed += len(page.rows)
            self._count()
            self.state.max_rowversion = sub.state.max_rowversion
            yield page
            st = sub.state
            if (
                self.pace.pages >= PROBE_PAGES
                and page.position is not None
                and sub.next_cursor is not None
                and not (st.unstable or st.missing_rowversions or sub._unordered)
                and total - passed > self.span + self.page_size
                and self.pace.width(self.workers) > 1
            ):
                sub.stop()
                pages.close()  # type: ignore[attr-defined]
                self.state.rereads += st.rereads
                self.state.warnings += st.warnings
                # The split read starts where the next request would have: it asks for the page's last
                # version again (for ties); those rows, passed on already, are not passed on twice.
                self._cut, self._cut_tail = sub.next_cursor, set(sub.next_tail)
                return sub.next_cursor
        # Read whole in order: what the stream learned is the read's.
        self._count()
        st = sub.state
        st.pages, st.bytes = self.state.pages, self.state.bytes
        st.warnings[:0] = self.state.warnings
        st.rereads += self.state.rereads
        self.state = st
        return None

    def _sequential(self, *, first: tuple[Parsed, int] | None) -> Iterator[Page]:
        """The read as one keyset stream (what a PageStream would have done), counted with what came before."""
        sub = PageStream(
            self.client, self.slug, page_size=self.page_size, key_fn=self.key_fn, rowversion_gt=self.start, keyset=True
        )
        sub._first = first
        with self._lock:
            self._subs.append(sub)
        self._count()
        before = self.state
        sub.state.pages += before.pages
        sub.state.bytes += before.bytes
        sub.state.warnings[:0] = before.warnings
        sub.state.rereads += before.rereads
        self.state = sub.state
        if self._stop.is_set():
            sub.stop()
        yield from sub

    def _halt_workers(self) -> None:
        self._halt.set()
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            sub.stop()
        with self._shared.cond:
            self._shared.cond.notify_all()

    # -- the parallel read -------------------------------------------------------------------------

    def _parallel(self, gaps: list[tuple[str | None, str | None]], first: tuple[Parsed, int] | None) -> Iterator[Page]:
        sh = self._shared
        # The gaps a resumed read must still read, one range each; the last (open) gap is split as it goes.
        # A gap above a finished range starts with that range's top version: with second-granular
        # versions a row can have joined it after the killed run read it.
        exact = (self.start, self._cut)  # the read's own start, or where its in-order pages ended
        gaps = [(lo if lo is None or lo in exact else rowversion_before(lo) or lo, hi) for lo, hi in gaps]
        for lo, hi in gaps[:-1]:
            sh.ranges.append(_Range(lo, hi, position=lo))
        self._split_base = self._split_lo = gaps[-1][0]
        self._first_page = first
        # Every row that changes from now on gets a version at or above the highest there is now: the open
        # range reads from there again once every other range has finished.
        self._top = self._top_version(first)
        threads = [
            threading.Thread(target=self._work, name=f"range-{self.slug}-{i}", daemon=True) for i in range(self.workers)
        ]
        threads.append(threading.Thread(target=self._sample_ahead, name=f"range-{self.slug}-plan", daemon=True))
        for t in threads:
            t.start()
        try:
            yield from self._merge_pages()
        finally:
            self._halt_workers()

    def _merge_pages(self) -> Iterator[Page]:
        sh = self._shared
        while True:
            with sh.cond:
                while not sh.items:
                    if self._stop.is_set():
                        return
                    if sh.planned and sh.lowest >= len(sh.ranges):
                        self._finish()
                        return
                    sh.cond.wait(0.2)
                index, item, last = sh.items.pop(0)
                sh.queued -= item.nbytes if isinstance(item, Page) else 0
                sh.cond.notify_all()
                if isinstance(item, BaseException):
                    raise item
                rng = sh.ranges[index]
                page: Page | None = item
                if page is not None and page.position is not None:
                    rng.position = page.position
                if last:  # every row of the range is passed on
                    rng.done = True
                    self._absorb(rng)
                    while sh.lowest < len(sh.ranges) and sh.ranges[sh.lowest].done:
                        sh.lowest += 1
                    if page is None:  # no rows, only the news that the range is done (for the resume record)
                        page = Page(rows=[], nbytes=0)
                if page is not None:
                    page.position, page.done = self._progress()
            self._count()
            if page is not None:
                page.rows = self._not_again(self._not_twice(page.rows))
                self._note_max(page.rows)
                yield page

    def _not_twice(self, rows: list[RawRow]) -> list[RawRow]:
        """Drop the rows the in-order pages passed on that the split read asks for again (once each)."""
        if not self._cut_tail:
            return rows
        kept: list[RawRow] = []
        for r in rows:
            mark = (self._key(r), r[1], fingerprint(r))
            if mark in self._cut_tail:
                self._cut_tail.discard(mark)
                self.state.rereads += 1
            else:
                kept.append(r)
        return kept

    def _not_again(self, rows: list[RawRow]) -> list[RawRow]:
        """Drop rows at or above ``top`` passed on before exactly as they are (the open range's second read
        asks for ``top``'s tie group again): they are not news, and not counted twice. Remembered up to
        ``TOP_REMEMBERED`` rows; beyond that a row may be passed on twice (the merge writes it once)."""
        top = self._top
        if top is None:
            return rows
        kept: list[RawRow] = []
        for r in rows:
            if r[1] is None or compare_rowversions(r[1], top) < 0:
                kept.append(r)
                continue
            mark = (self._key(r), r[1], fingerprint(r))
            if mark in self._passed_top:
                self.state.rereads += 1
                continue
            if len(self._passed_top) < TOP_REMEMBERED:
                self._passed_top.add(mark)
            kept.append(r)
        return kept

    def _progress(self) -> tuple[str | None, tuple[tuple[str, str], ...]]:
        """The position every row at or below which was passed on, and the finished ranges above it."""
        sh = self._shared
        if self.state.unstable or sh.lowest >= len(sh.ranges):
            return None, ()
        position = sh.ranges[sh.lowest].position
        done: list[tuple[str, str]] = []
        for r in sh.ranges[sh.lowest + 1 :]:
            if r.done and r.lo is not None and r.hi is not None:
                if done and done[-1][1] == r.lo:
                    done[-1] = (done[-1][0], r.hi)
                else:
                    done.append((r.lo, r.hi))
        return position, tuple(done)

    def _absorb(self, rng: _Range) -> None:
        """What a finished range's read learned, added to the whole read's state."""
        st = self.state
        for sub in rng.streams:
            ss = sub.state
            st.rereads += ss.rereads
            # A range that stopped early (it never does unless the read stops) is no complete read.
            st.unstable = st.unstable or ss.unstable or not ss.complete
            for w in ss.warnings:
                if w not in st.warnings:
                    st.warnings.append(w)

    def _count(self) -> None:
        with self._lock:
            subs = list(self._subs)
            samples, sample_bytes = self._samples, self._sample_bytes
        self.state.pages = samples + sum(s.state.pages for s in subs)
        self.state.bytes = sample_bytes + sum(s.state.bytes for s in subs)

    def _finish(self) -> None:
        st = self.state
        st.complete = not st.unstable and not self._stop.is_set()
        if st.complete:
            # Every row up to a skipped range's top was read (by the run that recorded it, or now).
            st.max_rowversion = max_rowversion([st.max_rowversion, *(hi for _lo, hi in self.skip)])

    # -- workers -----------------------------------------------------------------------------------

    def _work(self) -> None:
        try:
            while not self._halted():
                index = self._take()
                if index is None:
                    return
                self._read(index)
        except BaseException as exc:  # handed to the reader, which raises it (Degrade: falls back)
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        sh = self._shared
        with sh.cond:
            sh.items.insert(0, (-1, exc, False))
            sh.cond.notify_all()

    def _sample_ahead(self) -> None:
        """Sample the boundaries of the open gap ahead of the workers: the first round in parallel (one per
        worker), then one at a time while fewer than a round of ranges waits to be read."""
        sh = self._shared
        try:
            with ThreadPoolExecutor(self.workers, thread_name_prefix=f"range-{self.slug}-sample") as pool:
                first = list(pool.map(self._sample_at, range(1, self.workers + 1)))
            self._next_sample = self.workers
            if self._add(first):
                return
            while not self._halted():
                with sh.cond:
                    while len(sh.ranges) - sh.taken >= self.workers and not self._halted():
                        sh.cond.wait(0.2)
                if self._halted():
                    return
                self._next_sample += 1
                if self._add([self._sample_at(self._next_sample)]):
                    return
        except BaseException as exc:
            self._fail(exc)

    def _add(self, samples: list[str | None]) -> bool:
        """Ranges up to the sampled boundaries, in order; True once the open range is added."""
        sh = self._shared
        with sh.cond:
            for rv in samples:
                lo = self._split_lo
                if rv is not None and lo is not None and compare_rowversions(rv, lo) <= 0:
                    # Rows moved up since, or one row version spans the offsets: no range here. When it
                    # keeps happening, the rest is one range.
                    self._skipped += 1
                    if self._skipped < MAX_SKIPPED:
                        continue
                    rv = None
                self._skipped = 0
                sh.ranges.append(_Range(lo, rv, position=lo))
                self._split_lo = rv
                if rv is None:
                    sh.planned = True
                    break
            sh.cond.notify_all()
            return sh.planned

    def _halted(self) -> bool:
        return self._halt.is_set() or self._stop.is_set()

    def _take(self) -> int | None:
        """The next range to read, in order, within the window; None when there is none."""
        sh = self._shared
        with sh.cond:
            while not self._halted():
                if sh.taken < len(sh.ranges) and sh.taken - sh.lowest < WINDOW * self.workers:
                    sh.taken += 1
                    sh.cond.notify_all()
                    return sh.taken - 1
                if sh.planned and sh.taken >= len(sh.ranges):
                    return None
                sh.cond.wait(0.2)
        return None

    def _sample_at(self, n: int) -> str | None:
        """The row version at offset ``n * span - 1`` of the open gap's query (None: past its last row)."""
        page = n * self.span
        rows, total, nbytes = probe(self.client, self.slug, self._split_base, page)
        with self._lock:
            self._samples += 1
            self._sample_bytes += nbytes
        if not rows:
            return None
        if total is not None and page > total:
            raise Degrade("the source answers a page past its total with rows (does it ignore 'page'?)")
        rv, problem = rows[0][1], rows[0][4]
        if rv is None or problem is not None:
            raise Degrade("a row without a usable row version")
        return rv

    def _top_version(self, first: tuple[Parsed, int] | None) -> str | None:
        """The highest row version there is now (the last row of the open gap's query), or a version below
        it; None only when the query has no rows at all."""
        total = first[0][1] if first is not None else probe(self.client, self.slug, self._split_base, 1)[1]
        rows: list[RawRow] = []
        if total:
            rows, _total, nbytes = probe(self.client, self.slug, self._split_base, total)
            with self._lock:
                self._samples += 1
                self._sample_bytes += nbytes
        found = max_rowversion([r[1] for r in rows if r[4] is None])
        if found is None and first is not None:  # rows went away meanwhile: the first page's are older
            found = max_rowversion([r[1] for r in first[0][0] if r[4] is None])
        return found

    def _read(self, index: int) -> None:
        sh = self._shared
        rng = sh.ranges[index]
        first = None
        if self._first_page is not None and index == 0 and rng.lo == self.start:
            first, self._first_page = self._first_page, None
        sub = self._sub(rng.lo, rng.hi, first)
        rng.streams.append(sub)
        self._pump(index, sub)
        if rng.hi is None and not self._halted():
            # The open range ends the read: rows that changed while other ranges were read moved up here.
            with sh.cond:
                while any(not r.done for i, r in enumerate(sh.ranges) if i != index) and not self._halted():
                    sh.cond.wait(0.2)
            if not self._halted():
                # From the highest version there was when the ranges began (its own tie group included, for
                # second-granular versions): every row changed since is there, whichever range it left.
                top = self._top
                if top is None:
                    again = rng.lo
                else:  # just below it: for versions that are not digits, the highest version below it read
                    again = rowversion_before(top) or (self._below_top if self._below_top is not None else self.start)
                tail = self._sub(again, None)
                rng.streams.append(tail)
                self._pump(index, tail)
        self._put(index, None, last=True)

    def _pump(self, index: int, sub: PageStream) -> None:
        """Queue a range's pages for the reader, a few at a time (the reader's pace)."""
        for page in sub:
            self._note_below_top(page.rows)
            if not self._put(index, page, last=False):
                return

    def _note_below_top(self, rows: list[RawRow]) -> None:
        """The highest version read below ``top``: where a read of ``top``'s tie group can start when
        versions are not digits (no "version just below" exists for them)."""
        top = self._top
        if top is None:
            return
        below = max_rowversion([r[1] for r in rows if r[1] is not None and compare_rowversions(r[1], top) < 0])
        if below is None:
            return
        with self._lock:
            if self._below_top is None or compare_rowversions(below, self._below_top) > 0:
                self._below_top = below

    def _put(self, index: int, page: Page | None, *, last: bool) -> bool:
        sh = self._shared
        with sh.cond:
            while (
                sh.items and (len(sh.items) >= 2 * self.workers or sh.queued >= self.ahead_bytes) and not self._halted()
            ):
                sh.cond.wait(0.2)
            if self._halted():
                return False
            sh.items.append((index, page, last))
            sh.queued += page.nbytes if page is not None else 0
            sh.cond.notify_all()
            return True


def _gaps(start: str | None, skip: Sequence[tuple[str, str]]) -> list[tuple[str | None, str | None]]:
    """The ranges above ``start`` not in ``skip``; the last is open-ended."""
    gaps: list[tuple[str | None, str | None]] = []
    lo = start
    for a, b in skip:
        if lo is not None and compare_rowversions(b, lo) <= 0:
            continue
        if lo is None or compare_rowversions(a, lo) > 0:
            gaps.append((lo, a))
        lo = b
    gaps.append((lo, None))
    return gaps
