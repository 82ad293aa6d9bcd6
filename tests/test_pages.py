"""The page stream alone: keyset continuation, ties, end-of-data rules (HTTP mocked)."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Generator, Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from pytest_httpx import HTTPXMock

from syncflow.client import APISmithClient
from syncflow.errors import Cancelled, SourceNotFound, SourceProtocolError
from syncflow.pages import (
    PROBE_PAGES,
    Pace,
    Page,
    PageStream,
    StreamState,
    _as_rowversion,
    _token,
    compare_rowversions,
    fingerprint,
    max_rowversion,
    parse_page,
    prefetch,
    rowversion_before,
)

BASE = "http://apismith.test"


def serve(
    httpx_mock: HTTPXMock, rows: list[tuple[str, str]], *, page_cap: int | None = None, envelope: bool = True
) -> list[dict[str, str]]:
    """A tiny APISmith over (key, row_version) pairs, ordered by version; returns the requests seen."""
    seen: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        q = {k: v[0] for k, v in parse_qs(urlsplit(str(request.url)).query).items()}
        seen.append(q)
        gt = q.get("rowversion_gt")
        data = sorted(
            (r for r in rows if gt is None or compare_rowversions(r[1], gt) > 0), key=lambda r: (int(r[1]), r[0])
        )
        size = min(int(q["page_size"]), page_cap or 10**9)
        page = int(q["page"])
        chunk = data[(page - 1) * size : page * size]
        out = [{"row_version": v, "data": {"id": k}} for k, v in chunk]
        if not envelope:
            return httpx.Response(200, json=[r["data"] for r in out])
        return httpx.Response(200, json={"rows": out, "total": len(data), "has_more": page * size < len(data)})

    httpx_mock.add_callback(handler, is_reusable=True)
    return seen


def stream(**kw: Any) -> PageStream:
    client = APISmithClient(connector="erp", base_url=BASE, attempts=1)
    return PageStream(client, "items", key_fn=lambda data, _okeys: data.get("id"), **kw)


def keys(s: PageStream) -> list[str]:
    return [r[0]["id"] for page in s for r in page.rows]


def test_compare_rowversions() -> None:
    assert compare_rowversions("10", "9") > 0
    assert compare_rowversions("b", "a") > 0
    assert compare_rowversions("20251208120000", "20251208120000") == 0
    assert max_rowversion(["9", "10", None]) == "10"


def test_keyset_rereads_the_boundary_version(httpx_mock: HTTPXMock) -> None:
    data = [(f"k{i:02d}", str(100 + i // 3)) for i in range(20)]  # groups of three equal versions
    requests = serve(httpx_mock, data)
    s = stream(page_size=7, keyset=True)
    got = keys(s)
    assert set(got) == {k for k, _ in data}
    assert all(q["page"] == "1" for q in requests)
    # The first page ends inside the group "102" (k06); the next cursor re-reads that group.
    assert requests[1]["rowversion_gt"] == "101"
    assert s.state.complete
    assert s.state.checkpoint(None) == "106"


def test_a_tie_larger_than_a_page_is_paged_by_number(httpx_mock: HTTPXMock) -> None:
    data = [(f"k{i:02d}", "500") for i in range(17)] + [("z", "501")]
    requests = serve(httpx_mock, data)
    s = stream(page_size=5, keyset=True, rowversion_gt="499")
    got = keys(s)
    assert sorted(got) == sorted(k for k, _ in data)  # each row passed on once
    # Pages 1-4 by number to the end of the query, then read again to make sure nothing moved.
    assert [q["page"] for q in requests] == ["1", "2", "3", "4"] * 2
    assert s.state.rereads == 18
    assert s.state.checkpoint("499") == "501"


def test_server_capping_page_size_is_not_the_end(httpx_mock: HTTPXMock) -> None:
    data = [(f"k{i:02d}", str(i + 1)) for i in range(25)]
    serve(httpx_mock, data, page_cap=4)
    s = stream(page_size=10, keyset=False)
    assert len(keys(s)) == 25


def test_bare_array_pages_end_on_an_empty_page(httpx_mock: HTTPXMock) -> None:
    data = [(f"k{i:02d}", str(i + 1)) for i in range(12)]
    requests = serve(httpx_mock, data, envelope=False)
    s = stream(page_size=5, keyset=True)
    assert len(keys(s)) == 12
    # No row versions to page by: read by number, then again to make sure nothing moved.
    assert [q["page"] for q in requests] == ["1", "2", "3", "4"] * 2
    # No row versions: the checkpoint cannot move.
    assert s.state.checkpoint("7") == "7"


def test_wrong_shape_is_a_protocol_error(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(json={"data": "nope"})
    with pytest.raises(SourceProtocolError, match="wrong shape"):
        keys(stream(page_size=5))


def test_incomplete_stream_keeps_the_checkpoint() -> None:
    s = stream(page_size=5, keyset=True)
    s.state.max_rowversion = "900"
    assert s.state.checkpoint("10") == "10"


def test_a_tie_group_resumes_keyset_after_it(httpx_mock: HTTPXMock) -> None:
    data = [(f"k{i:02d}", "500") for i in range(12)] + [(f"z{i}", str(501 + i)) for i in range(10)]
    requests = serve(httpx_mock, data)
    s = stream(page_size=5, keyset=True, rowversion_gt="499")
    got = keys(s)
    assert sorted(got) == sorted(k for k, _ in data)
    # Pages 1-3 by number (page 3 reaches past the tie), the same again, then keyset above "502".
    assert [q["page"] for q in requests[:6]] == ["1", "2", "3"] * 2
    assert requests[6] == {"page": "1", "page_size": "5", "rowversion_gt": "502"}
    assert s.state.checkpoint("499") == "510"
    assert not s.state.unstable


def test_a_source_that_ignores_page_fails_clearly(httpx_mock: HTTPXMock) -> None:
    page = {"rows": [{"row_version": "1", "data": {"id": f"k{i}"}} for i in range(5)], "total": 20, "has_more": True}
    httpx_mock.add_response(json=page, is_reusable=True)
    with pytest.raises(SourceProtocolError, match="ignores the 'page' parameter"):
        keys(stream(page_size=5, keyset=False))
    with pytest.raises(SourceProtocolError, match="ignores the 'page' parameter"):
        keys(stream(page_size=5, keyset=True))


def test_rowversion_before_keeps_the_width() -> None:
    from syncflow.pages import rowversion_before

    assert rowversion_before("20251208120000") == "20251208119999"
    assert rowversion_before("000100") == "000099"
    assert rowversion_before("abc") is None
    assert rowversion_before("²") is None
    assert compare_rowversions("²", "1") != 0  # compared as text, never through int()


# -- the pure parts: page shape, row versions, key tokens, the checkpoint rule -----------------


def parse(body: Any) -> tuple[list[Any], int | None, bool | None, int | None]:
    return parse_page(body, connector="erp", url="http://x/api/v1/data/items", preview="BODY")


def test_compare_rowversions_is_a_three_way_comparison() -> None:
    assert compare_rowversions("10", "9") == 1
    assert compare_rowversions("9", "10") == -1
    assert compare_rowversions("7", "7") == 0
    assert compare_rowversions("b", "a") == 1
    assert compare_rowversions("a", "b") == -1
    assert compare_rowversions("a", "a") == 0
    assert compare_rowversions("10", "9a") == -1  # not both digits: as text
    assert compare_rowversions("007", "7") == 0  # digit strings as integers


def test_rowversion_before_at_one_and_zero() -> None:
    assert rowversion_before("1") == "0"
    assert rowversion_before("0") is None
    assert rowversion_before("10") == "09"


def test_parse_page_envelope() -> None:
    body = {
        "rows": [
            {"row_version": "5", "data": {"id": 1}},
            {"row_version": 6, "data": {"id": 2}, "deleted": True},
            {"row_version": "7", "data": {"id": 3}, "_deleted": True},
            {"row_version": "8", "data": {"id": 4}, "deleted": "yes", "_deleted": 1},
            {"data": {"id": 5}, "oracle_keys": {"ID": 5}},
            {"row_version": "9", "data": {"id": 6}, "oracle_keys": [5]},
        ],
        "total": 6,
        "has_more": False,
        "total_pages": 1,
    }
    rows, total, has_more, total_pages = parse(body)
    assert rows == [
        ({"id": 1}, "5", False, None, None),
        ({"id": 2}, "6", True, None, None),
        ({"id": 3}, "7", True, None, None),
        ({"id": 4}, "8", False, None, None),
        ({"id": 5}, None, False, {"ID": 5}, None),
        ({"id": 6}, "9", False, None, None),
    ]
    assert (total, has_more, total_pages) == (6, False, 1)


def test_parse_page_ignores_counts_of_the_wrong_type() -> None:
    assert parse({"rows": [], "total": True, "has_more": "no", "total_pages": 2.0})[1:] == (None, None, None)
    assert parse({"rows": [], "total": "3"})[1:] == (None, None, None)
    assert parse({"rows": [], "total": 0, "has_more": True, "total_pages": 0})[1:] == (0, True, 0)


def test_parse_page_bare_array_and_rows_without_data() -> None:
    assert parse([{"id": 1, "data": {"x": 1}}]) == (
        [({"id": 1, "data": {"x": 1}}, None, False, None, None)],
        None,
        None,
        None,
    )
    # In the envelope, a row without "data" is itself the data.
    assert parse({"rows": [{"id": 2}]})[0] == [({"id": 2}, None, False, None, None)]


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ({"rows": "x"}, "expected an object with a 'rows' array, or an array of rows"),
        ("text", "expected an object with a 'rows' array, or an array of rows"),
        ({"rows": [1]}, "a row is not a JSON object"),
        ([[1]], "a row is not a JSON object"),
        ({"rows": [{"data": [1]}]}, "a row's 'data' is not a JSON object"),
        ({"rows": [{"data": None}]}, "a row's 'data' is not a JSON object"),
    ],
)
def test_parse_page_names_what_is_wrong(body: Any, why: str) -> None:
    with pytest.raises(SourceProtocolError) as info:
        parse(body)
    assert str(info.value) == (
        f"connector erp: http://x/api/v1/data/items returned a page of the wrong shape: {why}: 'BODY'"
    )
    assert info.value.details == {"url": "http://x/api/v1/data/items", "body": "BODY"}


def test_parse_page_preview_defaults_to_empty() -> None:
    with pytest.raises(SourceProtocolError) as info:
        parse_page(3, connector="c", url="u")
    assert str(info.value).endswith(": ''")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, (None, None)),
        ("20251208", ("20251208", None)),
        (42, ("42", None)),
        (42.0, ("42", None)),
        (Decimal("42.000"), ("42", None)),
        (Decimal("4.5"), ("4.5", None)),
        (4.5, ("4.5", None)),
        ("abc", ("abc", None)),
        ("é", ("é", None)),  # not ASCII, but no digit in it
        (True, (None, "row_version 'True' is not a string or a number")),
        ([1], (None, "row_version '[1]' is not a string or a number")),
        ("x" * 50, ("x" * 50, None)),
        (float("nan"), (None, "row_version nan is not a usable row version")),
        (Decimal("Infinity"), (None, "row_version Infinity is not a usable row version")),
        ("", (None, "row_version '' is not a usable row version")),
        ("a\nb", (None, "row_version 'a\\nb' is not a usable row version")),
        ("²", (None, "row_version '²' is not a usable row version")),
        ("1٣", (None, "row_version '1٣' is not a usable row version")),
    ],
)
def test_row_versions(value: Any, expected: tuple[str | None, str | None]) -> None:
    assert _as_rowversion(value) == expected


def test_row_version_problems_quote_at_most_40_characters() -> None:
    assert _as_rowversion({"k": "v" * 60}) == (
        None,
        f"row_version {str({'k': 'v' * 60})[:40]!r} is not a string or a number",
    )
    bad = "\n" + "y" * 60
    assert _as_rowversion(bad) == (None, f"row_version {bad[:40]!r} is not a usable row version")


def test_key_tokens_tell_apart_what_postgresql_tells_apart() -> None:
    assert _token("1") == "1"
    assert _token(1) == ("int", "1")
    assert _token(Decimal("1.0")) == ("Decimal", "1.0")
    assert _token(1) != _token(Decimal("1"))
    assert _token(("a", 1)) == ("a", ("int", "1"))
    assert _token(["x"]) == "['x']"  # type: ignore[arg-type]  # what a broken source may send
    assert _token({"a": 1}) == "{'a': 1}"  # type: ignore[arg-type]
    assert _token(None) == ("NoneType", "None")


def test_fingerprint_is_data_and_tombstone() -> None:
    a: Any = ({"id": 1, "v": 2}, "5", False, None, None)
    assert fingerprint(a) == (False, repr({"id": 1, "v": 2}))
    assert fingerprint(({"id": 1, "v": 2}, "6", True, None, None)) == (True, repr({"id": 1, "v": 2}))


def state(**kw: Any) -> StreamState:
    base: dict[str, Any] = {"complete": True, "keyset": True, "max_rowversion": "9"}
    base.update(kw)
    return StreamState(**base)


def test_checkpoint_rule() -> None:
    assert state().checkpoint("5") == "9"
    assert state().checkpoint(None) == "9"
    assert state(max_rowversion="5").checkpoint("5") == "5"
    assert state(max_rowversion="4").checkpoint("5") == "5"  # never backwards
    assert state(max_rowversion=None).checkpoint("5") == "5"
    for spoiled in ({"complete": False}, {"missing_rowversions": True}, {"unstable": True}, {"keyset": False}):
        assert state(**spoiled).checkpoint("5") == "5", spoiled
        assert state(**spoiled).checkpoint(None) is None, spoiled


# -- the stream's bookkeeping and its end-of-data rules ----------------------------------------

Handler = Any


def scripted(httpx_mock: HTTPXMock, answer: Handler) -> list[dict[str, str]]:
    """Answers each request with ``answer(query)`` (a JSON body); returns the queries seen."""
    seen: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        q = {k: v[0] for k, v in parse_qs(urlsplit(str(request.url)).query).items()}
        seen.append(q)
        return httpx.Response(200, json=answer(q))

    httpx_mock.add_callback(handler, is_reusable=True)
    return seen


def page_of(keys_: list[str], rv: str | None = "1", **extra: Any) -> dict[str, Any]:
    return {"rows": [{"row_version": rv, "data": {"id": k}} for k in keys_], **extra}


def test_stream_counts_pages_bytes_and_keeps_the_first_total(httpx_mock: HTTPXMock) -> None:
    bodies = {
        "1": page_of(["a", "b"], total=5, has_more=True),
        "2": page_of(["c", "d"], total=6, has_more=True),
        "3": page_of(["e"], total=6, has_more=False),
    }
    seen = scripted(httpx_mock, lambda q: bodies[q["page"]])
    s = stream(page_size=2)
    pages = list(s)
    assert [len(p.rows) for p in pages] == [2, 2, 1]
    sizes = [len(httpx.Response(200, json=bodies[str(n)]).content) for n in (1, 2, 3)]
    assert [p.nbytes for p in pages] == sizes
    assert s.state.pages == 3
    assert s.state.bytes == sum(sizes)
    assert s.state.first_total == 5
    assert s.state.total_changed
    assert s.state.complete
    assert seen == [{"page": str(n), "page_size": "2"} for n in (1, 2, 3)]


def test_the_digest_follows_key_order_and_a_keyset_stream_has_none(httpx_mock: HTTPXMock) -> None:
    order = [["a", "b"], ["b", "a"]]
    scripted(httpx_mock, lambda q: page_of(order[0], has_more=False))
    s1 = stream(page_size=5)
    list(s1)
    order.pop(0)
    s2 = stream(page_size=5)
    list(s2)
    s3 = stream(page_size=5)
    list(s3)
    assert s1.state.digest != 0
    assert s1.state.digest != s2.state.digest
    assert s2.state.digest == s3.state.digest
    k = stream(page_size=5, keyset=True)
    list(k)
    assert k.state.digest == 0


def test_the_max_row_version_skips_rejected_rows(httpx_mock: HTTPXMock) -> None:
    body = {"rows": [{"row_version": "3", "data": {"id": "a"}}, {"row_version": "²", "data": {"id": "b"}}]}
    scripted(httpx_mock, lambda q: {**body, "has_more": False})
    s = stream(page_size=5)
    list(s)
    assert s.state.max_rowversion == "3"


@pytest.mark.parametrize(
    ("pages", "requests"),
    [
        # has_more decides when it is there, whatever the counts say
        ([page_of(["a"], has_more=True, total=1), page_of(["b"], has_more=False, total=1)], 2),
        # without has_more: total_pages, then total
        ([page_of(["a"], total_pages=2), page_of(["b"], total_pages=2), page_of(["c"])], 2),
        ([page_of(["a"], total=2), page_of(["b"], total=2), page_of(["c"])], 2),
        ([page_of(["a"], total=3), page_of(["b"], total=3), page_of(["c"], total=3), page_of([])], 3),
        # nothing at all: until an empty page
        ([page_of(["a"]), page_of(["b"]), page_of([])], 3),
    ],
)
def test_end_of_data(httpx_mock: HTTPXMock, pages: list[dict[str, Any]], requests: int) -> None:
    seen = scripted(httpx_mock, lambda q: pages[int(q["page"]) - 1])
    s = stream(page_size=1)
    list(s)
    assert len(seen) == requests
    assert s.state.complete


def test_a_stopped_stream_is_not_complete(httpx_mock: HTTPXMock) -> None:
    scripted(httpx_mock, lambda q: page_of([q["page"]], has_more=True))
    for keyset in (False, True):
        s = stream(page_size=1, keyset=keyset)
        it = iter(s)
        next(it)
        s.stop()
        assert list(it) == []
        assert not s.state.complete


def test_more_rows_than_the_total_allows_is_a_source_ignoring_page(httpx_mock: HTTPXMock) -> None:
    # Different rows every time (so no page repeats), but far more than the total of 2.
    seen = scripted(httpx_mock, lambda q: page_of([f"k{q['page']}"], total=2, has_more=True))
    with pytest.raises(SourceProtocolError) as info:
        list(stream(page_size=1))
    # 2 * total + 2 * page_size = 6 rows may be read; the 8th page is refused.
    assert len(seen) == 8
    assert str(info.value) == (
        "connector erp: the source answered page=8 of 'items' with the same rows as the page before (or more rows"
        " than its total allows): it ignores the 'page' parameter (a proxy that drops the query string?)"
    )
    assert info.value.details == {"slug": "items", "page": 8}


def test_the_bound_uses_the_largest_total_seen(httpx_mock: HTTPXMock) -> None:
    totals = {1: 1, 2: 9}
    seen = scripted(
        httpx_mock, lambda q: page_of([f"k{q['page']}"], total=totals.get(int(q["page"]), 1), has_more=True)
    )
    with pytest.raises(SourceProtocolError):
        list(stream(page_size=1))
    assert len(seen) == 2 * 9 + 2 + 2


def test_empty_pages_repeating_are_just_the_end(httpx_mock: HTTPXMock) -> None:
    seen = scripted(httpx_mock, lambda q: page_of([], total=0, has_more=True))
    s = stream(page_size=3)
    pages = list(s)
    assert len(pages) == 1
    assert pages[0].rows == []
    assert len(seen) == 1
    assert s.state.complete


def test_rows_without_versions_warn_once_and_keep_the_checkpoint(httpx_mock: HTTPXMock) -> None:
    bodies = {"1": page_of(["a", "b"], rv=None, has_more=True), "2": page_of(["c"], rv=None, has_more=False)}
    scripted(httpx_mock, lambda q: bodies[q["page"]])
    s = stream(page_size=2, keyset=True)
    list(s)
    assert s.state.missing_rowversions
    assert s.state.complete
    assert s.state.warnings == [
        "rows carry no row_version; paging by page number, reading twice, keeping the checkpoint"
    ]
    assert s.state.checkpoint("4") == "4"


def test_unordered_versions_are_paged_by_number(httpx_mock: HTTPXMock) -> None:
    body = {"rows": [{"row_version": v, "data": {"id": k}} for k, v in [("a", "5"), ("b", "3"), ("c", "9")]]}
    seen = scripted(
        httpx_mock,
        lambda q: {**body, "has_more": q["page"] == "1"} if q["page"] == "1" else {"rows": [], "has_more": False},
    )
    s = stream(page_size=3, keyset=True)
    assert sorted(keys(s)) == ["a", "b", "c"]
    assert s.state.warnings == [
        "the server does not order rows by row version; paging by page number and reading twice"
    ]
    assert [q["page"] for q in seen] == ["1", "2", "1", "2"]
    assert all("rowversion_gt" not in q for q in seen)


def test_a_cursor_that_would_not_move_forward_pages_by_number(httpx_mock: HTTPXMock) -> None:
    # Asked above "5", the server answers rows at or below it: the next cursor would go backwards.
    body = {"rows": [{"row_version": v, "data": {"id": k}} for k, v in [("a", "4"), ("b", "5"), ("c", "6")]]}
    seen = scripted(
        httpx_mock, lambda q: {**body, "has_more": True} if q["page"] == "1" else {"rows": [], "has_more": False}
    )
    s = stream(page_size=3, keyset=True, rowversion_gt="5")
    assert sorted(keys(s)) == ["a", "b", "c"]
    assert [q["page"] for q in seen] == ["1", "2", "1", "2"]
    assert {q["rowversion_gt"] for q in seen} == {"5"}


def test_a_segment_that_never_settles_makes_the_stream_unstable(httpx_mock: HTTPXMock) -> None:
    reads = [0]

    def answer(q: dict[str, str]) -> dict[str, Any]:
        if q["page"] == "1":
            reads[0] += 1
            # One version fills the page; a different row joins each read.
            return page_of(["a", "b", f"x{reads[0]}"], rv="7", total=3, has_more=True)
        return page_of([], rv="7", total=3, has_more=False)

    seen = scripted(httpx_mock, answer)
    s = stream(page_size=3, keyset=True, rowversion_gt="6")
    got = keys(s)
    assert sorted(got) == ["a", "b", "x1", "x2", "x3"]  # every row once, however often read
    assert len(seen) == 2 * 3  # MAX_PASSES reads of two pages
    assert s.state.unstable
    assert s.state.complete
    assert s.state.rereads == 4
    assert s.state.warnings == [
        "rows kept moving while a group of 'items' rows was paged by number (rowversion_gt=6); they are read again by"
        " the next run"
    ]
    assert s.state.checkpoint("6") == "6"


def test_a_segment_repeating_a_page_is_a_source_ignoring_page(httpx_mock: HTTPXMock) -> None:
    scripted(httpx_mock, lambda q: page_of(["a", "b"], rv="7", total=9, has_more=True))
    with pytest.raises(SourceProtocolError, match="page=2 of 'items'"):
        list(stream(page_size=2, keyset=True))


def test_a_segment_reading_past_its_total_is_a_source_ignoring_page(httpx_mock: HTTPXMock) -> None:
    seen = scripted(httpx_mock, lambda q: page_of([f"k{q['page']}"], rv="7", total=1, has_more=True))
    with pytest.raises(SourceProtocolError, match="ignores the 'page' parameter"):
        list(stream(page_size=1, keyset=True))
    assert len(seen) == 2 * 1 + 2 * 1 + 2


def test_warnings_are_not_repeated(httpx_mock: HTTPXMock) -> None:
    s = stream(page_size=1)
    s._warn("one")
    s._warn("one")
    s._warn("two")
    assert s.state.warnings == ["one", "two"]


# -- prefetch: the fetch thread and its bounds ---------------------------------------------------


class FakeStream:
    """Stands in for a PageStream: yields pages of known sizes and records how far it got."""

    def __init__(self, sizes: list[int], *, fail_at: int | None = None, gate: threading.Event | None = None) -> None:
        self.client = APISmithClient(connector="erp", base_url=BASE, attempts=1)
        self.slug = "items"
        self.sizes = sizes
        self.fail_at = fail_at
        self.gate = gate
        self.produced = 0
        self.stopped = False

    def __iter__(self) -> Iterator[Page]:
        for i, n in enumerate(self.sizes):
            if self.fail_at == i:
                raise SourceProtocolError("broken page")
            if self.gate is not None:
                self.gate.wait(5)
            self.produced += 1
            yield Page(rows=[({"id": i}, None, False, None, None)], nbytes=n)

    def stop(self) -> None:
        self.stopped = True


def run_prefetch(s: FakeStream, **kw: Any) -> Generator[tuple[int, str], None, None]:
    return prefetch(s, prepare=lambda p: (p.nbytes, threading.current_thread().name), **kw)  # type: ignore[arg-type]


def test_prefetch_keeps_order_prepares_in_the_fetch_thread_and_stops_the_stream() -> None:
    s = FakeStream([10, 20, 30])
    got = list(run_prefetch(s))
    assert got == [(10, "fetch-items"), (20, "fetch-items"), (30, "fetch-items")]
    assert s.stopped


def test_prefetch_passes_on_the_streams_error() -> None:
    s = FakeStream([1, 2, 3], fail_at=1)
    it = run_prefetch(s)
    assert next(it)[0] == 1
    with pytest.raises(SourceProtocolError, match="broken page"):
        next(it)


def wait_until(check: Callable[[], bool], timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.01)


@pytest.mark.parametrize(
    ("max_pages", "max_bytes", "ahead"),
    [(3, 10**9, 3), (100, 25, 3), (1, 10**9, 1), (100, 10, 1), (100, 11, 2), (None, 10**9, 24)],
)
def test_prefetch_runs_ahead_at_most_max_pages_or_max_bytes(max_pages: int | None, max_bytes: int, ahead: int) -> None:
    s = FakeStream([10] * 30)
    bounds: dict[str, int] = (
        {"max_bytes": max_bytes} if max_pages is None else {"max_pages": max_pages, "max_bytes": max_bytes}
    )
    it = run_prefetch(s, **bounds)  # no max_pages: the default, 24
    assert next(it)[0] == 10
    wait_until(lambda: s.produced >= 2 + ahead)
    time.sleep(0.3)  # give a runaway producer the chance to show itself
    # One page consumed, ``ahead`` queued, one more fetched and waiting for room.
    assert s.produced == 1 + ahead + 1
    assert len(list(it)) == 29


def test_prefetch_is_cancelled_while_waiting_for_a_page(monkeypatch: pytest.MonkeyPatch) -> None:
    import syncflow.pages as pages

    monkeypatch.setattr(pages, "JOIN_SECONDS", 0.1)
    gate = threading.Event()
    cancel = threading.Event()
    s = FakeStream([1, 2], gate=gate)
    it = run_prefetch(s, cancel=cancel)
    cancel.set()
    started = time.monotonic()
    with pytest.raises(Cancelled, match=r"erp\.items: cancelled by a signal"):
        next(it)
    assert time.monotonic() - started < 1
    assert s.stopped
    gate.set()


def test_prefetch_without_cancel_waits_for_a_slow_page() -> None:
    gate = threading.Event()
    s = FakeStream([7], gate=gate)
    it = run_prefetch(s)
    threading.Timer(0.5, gate.set).start()
    assert next(it)[0] == 7


def test_abandoning_prefetch_does_not_wait_for_a_stuck_fetch(monkeypatch: pytest.MonkeyPatch) -> None:
    import syncflow.pages as pages

    monkeypatch.setattr(pages, "JOIN_SECONDS", 0.2)
    gate = threading.Event()
    s = FakeStream([1, 2], gate=gate)
    gate.set()
    it = run_prefetch(s)
    next(it)
    gate.clear()
    started = time.monotonic()
    it.close()  # the consumer stops early (an error, a signal): the thread is told to stop
    assert time.monotonic() - started < 1.5
    assert s.stopped
    gate.set()


# -- mutation-driven scenarios: each pins a decision a server's behaviour makes visible ---------------

Row = dict[str, Any]


def source(
    httpx_mock: HTTPXMock,
    rows_for: Callable[[dict[str, str], int], list[Row]],
    *,
    counts: tuple[str, ...] = ("total", "has_more"),
) -> list[dict[str, str]]:
    """An APISmith whose whole answer to a query is ``rows_for(query, n)`` (n: requests so far, from 1);
    it cuts the page asked for and announces the ``counts`` named. Returns the queries seen."""
    seen: list[dict[str, str]] = []

    def answer(q: dict[str, str]) -> dict[str, Any]:
        seen.append(q)
        data = rows_for(q, len(seen))
        size, page = int(q["page_size"]), int(q["page"])
        body: dict[str, Any] = {"rows": data[(page - 1) * size : page * size]}
        if "total" in counts:
            body["total"] = len(data)
        if "has_more" in counts:
            body["has_more"] = page * size < len(data)
        if "total_pages" in counts:
            body["total_pages"] = -(-len(data) // size)
        return body

    scripted(httpx_mock, answer)
    return seen


def row(key: str, rv: str, **data: Any) -> Row:
    return {"row_version": rv, "data": {"id": key, **data}}


def above(rows: list[Row], q: dict[str, str]) -> list[Row]:
    """The rows a ``rowversion_gt`` query selects, in the order given."""
    gt = q.get("rowversion_gt")
    return [r for r in rows if gt is None or compare_rowversions(r["row_version"], gt) > 0]


def asked(seen: list[dict[str, str]]) -> list[tuple[str | None, str]]:
    """(rowversion_gt, page) of each request."""
    return [(q.get("rowversion_gt"), q["page"]) for q in seen]


def passed_on(s: PageStream) -> list[list[str]]:
    """The keys of each page the stream passes on."""
    return [[r[0]["id"] for r in page.rows] for page in s]


def test_a_wrong_shape_names_the_connector_the_url_and_the_body(httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(json={"data": "nope"})
    with pytest.raises(SourceProtocolError) as info:
        list(stream(page_size=5))
    url = f"{BASE}/api/v1/data/items?page=1&page_size=5"
    assert str(info.value) == (
        f"connector erp: {url} returned a page of the wrong shape:"
        """ expected an object with a 'rows' array, or an array of rows: '{"data":"nope"}'"""
    )
    assert info.value.details == {"url": url, "body": '{"data":"nope"}'}


def test_the_key_function_sees_oracle_keys_and_runs_once_per_row(httpx_mock: HTTPXMock) -> None:
    # Two pages alike but for their oracle_keys: different rows, not a source repeating page 1.
    def body(n: int) -> dict[str, Any]:
        rows = [{"row_version": "1", "data": {"same": True}, "oracle_keys": {"ID": f"{n}{i}"}} for i in range(2)]
        return {"rows": rows, "has_more": n < 2}

    scripted(httpx_mock, lambda q: body(int(q["page"])))
    calls: list[Any] = []

    def key_fn(data: dict[str, Any], okeys: dict[str, Any] | None) -> Any:
        calls.append(okeys)
        return okeys["ID"] if okeys else None

    client = APISmithClient(connector="erp", base_url=BASE, attempts=1)
    s = PageStream(client, "items", page_size=2, key_fn=key_fn)
    assert [len(p.rows) for p in s] == [2, 2]
    # Once per row: the digest reuses the keys the repeat check computed.
    assert calls == [{"ID": "10"}, {"ID": "11"}, {"ID": "20"}, {"ID": "21"}]
    assert s.state.digest == hash((hash((0, ("10", "11"))), ("20", "21")))


def test_the_checkpoint_keeps_the_spelling_of_the_greatest_version() -> None:
    # "0009" and "9" are one version; the stream's own spelling wins over the stored one.
    assert state(max_rowversion="0009").checkpoint("9") == "0009"
    assert state(max_rowversion="9").checkpoint("0009") == "9"


def test_the_max_row_version_keeps_its_first_spelling(httpx_mock: HTTPXMock) -> None:
    bodies = {"1": page_of(["a"], rv="7", has_more=True), "2": page_of(["b"], rv="007", has_more=False)}
    scripted(httpx_mock, lambda q: bodies[q["page"]])
    s = stream(page_size=1)
    list(s)
    assert s.state.max_rowversion == "7"


def test_a_page_number_stream_from_a_checkpoint_asks_above_it(httpx_mock: HTTPXMock) -> None:
    seen = serve(httpx_mock, [(f"k{i}", str(i)) for i in range(1, 6)])
    s = stream(page_size=2, rowversion_gt="2")
    assert passed_on(s) == [["k3", "k4"], ["k5"]]
    assert asked(seen) == [("2", "1"), ("2", "2")]
    assert s.state.complete
    assert not s.state.total_changed
    assert s.state.first_total == 3


def test_a_repeated_page_is_named_by_its_number(httpx_mock: HTTPXMock) -> None:
    scripted(httpx_mock, lambda q: page_of(["a", "b"], total=20, has_more=True))
    with pytest.raises(SourceProtocolError) as info:
        list(stream(page_size=2))
    assert info.value.details == {"slug": "items", "page": 2}


@pytest.mark.parametrize(
    ("page_size", "total", "refused_at"),
    [
        (2, 1, 5),  # 2 * 1 + 2 * 2 = 6 rows may be read: page 5 would start at row 9
        (1, 0, 4),  # a total of 0 allows only 2 * page_size rows
    ],
)
def test_the_page_number_bound_counts_page_size_and_total(
    httpx_mock: HTTPXMock, page_size: int, total: int, refused_at: int
) -> None:
    seen = scripted(
        httpx_mock, lambda q: page_of([f"{q['page']}-{i}" for i in range(page_size)], total=total, has_more=True)
    )
    with pytest.raises(SourceProtocolError) as info:
        list(stream(page_size=page_size))
    assert len(seen) == refused_at
    assert info.value.details == {"slug": "items", "page": refused_at}


def test_a_segment_bound_counts_page_size(httpx_mock: HTTPXMock) -> None:
    seen = scripted(httpx_mock, lambda q: page_of([f"{q['page']}a", f"{q['page']}b"], rv="7", total=1, has_more=True))
    with pytest.raises(SourceProtocolError) as info:
        list(stream(page_size=2, keyset=True))
    # 2 * 1 + 2 * 2 = 6 rows may be read in the segment; page 5 would start at row 9.
    assert len(seen) == 5
    assert info.value.details == {"slug": "items", "page": 5}


def test_keyset_counts_each_tie_read_again(httpx_mock: HTTPXMock) -> None:
    data = [(f"k{i:02d}", str(100 + i // 3)) for i in range(20)]
    seen = serve(httpx_mock, data)
    s = stream(page_size=7, keyset=True)
    assert passed_on(s) == [
        [f"k{i:02d}" for i in range(7)],
        [f"k{i:02d}" for i in range(7, 13)],
        [f"k{i:02d}" for i in range(13, 19)],
        ["k19"],
    ]
    assert asked(seen) == [(None, "1"), ("101", "1"), ("103", "1"), ("105", "1")]
    assert s.state.rereads == 3  # k06, k12 and k18, each read twice
    assert s.state.pages == 4
    assert s.state.complete
    assert s.state.warnings == []


@pytest.mark.parametrize("counts", [("total",), ("total_pages",)])
def test_keyset_ends_by_the_counts_without_has_more(httpx_mock: HTTPXMock, counts: tuple[str, ...]) -> None:
    short = [row(k, v) for k, v in [("a", "1"), ("b", "2"), ("c", "3")]]
    seen = source(httpx_mock, lambda q, n: above(short, q), counts=counts)
    s = stream(page_size=5, keyset=True)
    assert passed_on(s) == [["a", "b", "c"]]
    assert asked(seen) == [(None, "1")]
    assert s.state.complete


@pytest.mark.parametrize("counts", [("total",), ("total_pages",), ("has_more",)])
def test_keyset_goes_on_while_the_counts_say_more(httpx_mock: HTTPXMock, counts: tuple[str, ...]) -> None:
    rows = [row(f"k{i}", str(i)) for i in range(1, 8)]
    seen = source(httpx_mock, lambda q, n: above(rows, q), counts=counts)
    s = stream(page_size=5, keyset=True)
    assert passed_on(s) == [["k1", "k2", "k3", "k4", "k5"], ["k6", "k7"]]
    assert asked(seen) == [(None, "1"), ("4", "1")]
    assert s.state.complete
    assert s.state.rereads == 1
    assert s.state.checkpoint(None) == "7"


@pytest.mark.parametrize("counts", [("total",), ("total_pages",)])
def test_a_segment_ends_by_the_counts_without_has_more(httpx_mock: HTTPXMock, counts: tuple[str, ...]) -> None:
    tie = [row(f"k{i}", "500") for i in range(7)]
    seen = source(httpx_mock, lambda q, n: above(tie, q), counts=counts)
    s = stream(page_size=5, keyset=True, rowversion_gt="499")
    assert passed_on(s) == [["k0", "k1", "k2", "k3", "k4"], ["k5", "k6"]]
    assert asked(seen) == [("499", "1"), ("499", "2")] * 2
    assert s.state.complete
    assert s.state.rereads == 7
    assert s.state.checkpoint("499") == "500"


def test_a_rejected_row_version_does_not_steer_keyset_paging(httpx_mock: HTTPXMock) -> None:
    rows = [row("a", "1"), row("bad", ""), row("b", "2"), row("c", "3"), row("d", "4")]
    bodies = {None: rows, "2": rows[3:]}
    seen = source(httpx_mock, lambda q, n: bodies[q.get("rowversion_gt")], counts=("has_more",))
    s = stream(page_size=4, keyset=True)
    assert passed_on(s) == [["a", "bad", "b", "c"], ["d"]]
    assert asked(seen) == [(None, "1"), ("2", "1")]
    assert s.state.complete
    assert s.state.checkpoint(None) == "4"


# A server ordered by key, not by row version; every page it sends looks ordered. Row "h" (version 3)
# sits beyond the second page of ``rowversion_gt=2``, so ``rowversion_gt=4`` announces one row fewer
# than keyset paging expects: the query above "2" is read again by page number, twice.
BY_KEY = [row(k, v) for k, v in [("a", "1"), ("b", "2"), ("c", "3"), ("d", "4"), ("e", "5"), ("f", "6"), ("g", "7")]]
BY_KEY.append(row("h", "3"))
UNORDERED = "the server does not order rows by row version; paging by page number and reading twice"


def test_a_total_one_row_short_reveals_a_server_not_ordered_by_version(httpx_mock: HTTPXMock) -> None:
    seen = source(httpx_mock, lambda q, n: above(BY_KEY, q))
    s = stream(page_size=3, keyset=True)
    assert passed_on(s) == [["a", "b", "c"], ["d", "e"], ["c", "d", "e"], ["f", "g", "h"]]
    assert asked(seen) == [(None, "1"), ("2", "1"), ("4", "1")] + [("2", "1"), ("2", "2")] * 2
    assert s.state.warnings == [UNORDERED]
    assert s.state.complete
    assert not s.state.unstable
    assert s.state.rereads == 1 + 6
    assert s.state.pages == 7
    assert s.state.checkpoint(None) == "7"


@pytest.mark.parametrize("stop", [False, True])
def test_a_row_rewritten_in_the_unordered_reread_is_passed_on(httpx_mock: HTTPXMock, stop: bool) -> None:
    rewritten = [*BY_KEY[:-1], row("h", "3", v=2)]
    # Requests 6 and 7 are the second read of the query above "2": "h" changed within its version.
    seen = source(httpx_mock, lambda q, n: above(rewritten if n >= 6 else BY_KEY, q))
    s = stream(page_size=3, keyset=True)
    it = iter(s)
    got = [[r[0] for r in page.rows] for page in itertools.islice(it, 5)]
    if stop:
        s.stop()  # after the last page: the stream has not told us it is done
    got += [[r[0] for r in page.rows] for page in it]
    assert [[d["id"] for d in page] for page in got] == [
        ["a", "b", "c"],
        ["d", "e"],
        ["c", "d", "e"],
        ["f", "g", "h"],
        ["h"],
    ]
    assert got[-1] == [{"id": "h", "v": 2}]
    assert len(seen) == 7
    assert s.state.rereads == 1 + 5
    assert s.state.complete is not stop


@pytest.mark.parametrize("stop", [False, True])
def test_a_segment_to_the_end_stopped_after_its_last_page_is_not_complete(httpx_mock: HTTPXMock, stop: bool) -> None:
    tie = [row(f"k{i}", "500") for i in range(7)]
    rewritten = [*tie[:-1], row("k6", "500", v=2)]
    seen = source(httpx_mock, lambda q, n: above(rewritten if n >= 4 else tie, q))
    s = stream(page_size=5, keyset=True, rowversion_gt="499")
    it = iter(s)
    got = [[r[0]["id"] for r in page.rows] for page in itertools.islice(it, 3)]
    if stop:
        s.stop()
    got += [[r[0]["id"] for r in page.rows] for page in it]
    assert got == [["k0", "k1", "k2", "k3", "k4"], ["k5", "k6"], ["k6"]]
    assert len(seen) == 4
    assert s.state.complete is not stop


def test_a_rejected_row_inside_a_segment_is_passed_on(httpx_mock: HTTPXMock) -> None:
    tie = [row(f"k{i}", "500") for i in range(6)]
    bodies = {
        "499": [*tie, row("bad", ""), row("z1", "501"), row("z2", "502"), row("z3", "503"), row("z4", "504")],
        "502": [row("z3", "503"), row("z4", "504")],
    }
    seen = source(httpx_mock, lambda q, n: bodies[q["rowversion_gt"]])
    s = stream(page_size=5, keyset=True, rowversion_gt="499")
    assert passed_on(s) == [["k0", "k1", "k2", "k3", "k4"], ["k5", "bad", "z1", "z2"], ["z3", "z4"]]
    assert asked(seen) == [("499", "1"), ("499", "2")] * 2 + [("502", "1")]
    assert s.state.rereads == 9
    assert s.state.complete
    assert s.state.checkpoint("499") == "504"


def test_a_segment_read_again_with_one_version_moved_is_read_a_third_time(httpx_mock: HTTPXMock) -> None:
    tie = [row(f"k{i}", "500") for i in range(6)]
    first = [*tie, row("m", "501"), row("n", "502"), row("o", "503"), row("p", "504"), row("q", "505")]
    moved = [
        *tie,
        row("m", "502"),
        row("n", "502"),
        row("o", "503"),
        row("p", "504"),
        row("q", "505"),
    ]  # m rewritten: 501 -> 502
    seen = source(httpx_mock, lambda q, n: above(moved if n >= 3 else first, q))
    s = stream(page_size=5, keyset=True, rowversion_gt="499")
    assert passed_on(s) == [["k0", "k1", "k2", "k3", "k4"], ["k5", "m", "n", "o"], ["m"], ["p", "q"]]
    assert asked(seen) == [("499", "1"), ("499", "2")] * 3 + [("503", "1")]
    assert s.state.rereads == 8 + 9
    assert s.state.complete
    assert not s.state.unstable
    assert s.state.checkpoint("499") == "505"


def test_an_unstable_segment_still_resumes_keyset_paging_above_it(httpx_mock: HTTPXMock) -> None:
    reads = [0]

    def rows_for(q: dict[str, str], n: int) -> list[Row]:
        if q["rowversion_gt"] == "9":
            return [row("e", "10"), row("f", "11")]
        reads[0] += q["page"] == "1"
        # One version fills page 1, and a different row joins it at every read.
        tie = [row("a", "7"), row("b", "7"), row(f"x{reads[0]}", "7")]
        return [*tie, row("c", "8"), row("d", "9"), row("e", "10"), row("f", "11")]

    seen = source(httpx_mock, rows_for)
    s = stream(page_size=3, keyset=True, rowversion_gt="6")
    assert passed_on(s) == [["a", "b", "x1"], ["c", "d"], ["x2"], ["x3"], ["e", "f"]]
    assert asked(seen) == [("6", "1"), ("6", "2")] * 3 + [("9", "1")]
    assert s.state.unstable
    assert s.state.complete
    assert s.state.rereads == 8
    assert s.state.warnings == [
        "rows kept moving while a group of 'items' rows was paged by number (rowversion_gt=6); they are read again by"
        " the next run"
    ]
    assert s.state.checkpoint("6") == "6"


def test_an_abandoned_prefetch_fetches_no_further_and_runs_in_a_daemon_thread() -> None:
    s = FakeStream([10] * 50)
    daemon: list[bool] = []

    def prepare(page: Page) -> int:
        daemon.append(threading.current_thread().daemon)
        return page.nbytes

    it = prefetch(s, 1, prepare=prepare)  # type: ignore[arg-type]
    assert next(it) == 10
    wait_until(lambda: s.produced >= 3)  # one page taken, one queued, the third waiting for room
    it.close()
    # The page waiting for room is dropped and the thread ends: nothing more is fetched.
    assert s.stopped
    assert s.produced == 3
    assert daemon == [True] * 3


# -- pages fetched ahead in parallel (full / hash) ---------------------------------------------


class Overlap:
    """A slow APISmith over keys k000..: counts requests in flight at once; ``fail`` pages answer 404."""

    def __init__(self, n: int, *, delay: float = 0.05, cap: int | None = None, counts: bool = True) -> None:
        self.keys = [f"k{i:03d}" for i in range(n)]
        self.delay, self.cap, self.counts = delay, cap, counts
        self.lock = threading.Lock()
        self.in_flight = self.peak = 0
        self.pages: list[int] = []
        self.fail: set[int] = set()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        q = {k: v[0] for k, v in parse_qs(urlsplit(str(request.url)).query).items()}
        page, size = int(q["page"]), min(int(q["page_size"]), self.cap or 10**9)
        with self.lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            self.pages.append(page)
        try:
            time.sleep(self.delay)
            if page in self.fail:
                return httpx.Response(404, json={"detail": "gone"})
            chunk = self.keys[(page - 1) * size : page * size]
            body: dict[str, Any] = {"rows": [{"row_version": "1", "data": {"id": k}} for k in chunk]}
            body["has_more"] = page * size < len(self.keys)
            if self.counts:
                body["total"] = len(self.keys)
            return httpx.Response(200, json=body)
        finally:
            with self.lock:
                self.in_flight -= 1


def parallel(concurrency: int, **kw: Any) -> PageStream:
    from syncflow.limiter import ConnectorLimiter

    limiter = ConnectorLimiter("erp", max_concurrent=concurrency)
    client = APISmithClient(connector="erp", base_url=BASE, attempts=1, limiter=limiter)
    return PageStream(client, "items", key_fn=lambda data, _okeys: data.get("id"), **kw)


def test_pages_after_the_first_are_fetched_in_parallel_and_taken_in_order(httpx_mock: HTTPXMock) -> None:
    server = Overlap(40)
    httpx_mock.add_callback(server, is_reusable=True)
    s = parallel(4, page_size=3)
    got = keys(s)
    assert got == server.keys  # every row, in page order
    assert 1 < server.peak <= 4
    assert server.pages[0] == 1
    assert sorted(server.pages) == list(range(1, 15))  # the 14 pages, none past the end
    one_by_one = stream(page_size=3)
    server.peak = 0
    assert keys(one_by_one) == got
    assert one_by_one.state.digest == s.state.digest  # the same read, as the comparison of reads sees it
    assert (one_by_one.state.pages, one_by_one.state.complete) == (s.state.pages, s.state.complete)
    assert server.peak == 1  # without a limiter: one page after another


def test_without_counts_nothing_is_fetched_ahead(httpx_mock: HTTPXMock) -> None:
    server = Overlap(12, delay=0.01, counts=False)
    httpx_mock.add_callback(server, is_reusable=True)
    assert keys(parallel(4, page_size=3)) == server.keys
    assert server.peak == 1


def test_a_server_capping_the_page_size_is_read_ahead_by_the_size_it_serves(httpx_mock: HTTPXMock) -> None:
    server = Overlap(30, cap=2)
    httpx_mock.add_callback(server, is_reusable=True)
    assert keys(parallel(4, page_size=10)) == server.keys
    assert sorted(server.pages) == list(range(1, 16))  # 15 pages of 2: nothing asked past them
    assert server.peak > 1


def test_a_failed_page_ahead_fails_the_read_in_its_turn(httpx_mock: HTTPXMock) -> None:
    server = Overlap(30, delay=0.01)
    server.fail = {5}
    httpx_mock.add_callback(server, is_reusable=True)
    s = parallel(4, page_size=3)
    seen: list[str] = []

    def read() -> None:
        for page in s:
            seen.extend(r[0]["id"] for r in page.rows)

    with pytest.raises(SourceNotFound):
        read()
    assert seen == server.keys[:12]  # pages 1-4 were passed on, in order, before page 5's failure
    assert not s.state.complete


def test_a_stopped_parallel_read_ends_without_waiting_for_its_fetches(httpx_mock: HTTPXMock) -> None:
    server = Overlap(60, delay=0.3)
    httpx_mock.add_callback(server, is_reusable=True)
    s = parallel(8, page_size=3)
    it = iter(s)
    next(it)
    started = time.monotonic()
    s.stop()
    assert list(it) == []
    assert time.monotonic() - started < 1.0
    assert not s.state.complete


def test_repeats_and_total_changes_are_seen_in_page_order(httpx_mock: HTTPXMock) -> None:
    bodies = {
        "1": page_of(["a", "b"], total=6, has_more=True),
        "2": page_of(["b", "c"], total=7, has_more=True),  # b again, the total moved
        "3": page_of(["d", "e"], total=7, has_more=True),
        "4": page_of(["f"], total=7, has_more=False),
    }
    scripted(httpx_mock, lambda q: bodies[q["page"]])
    s = parallel(4, page_size=2)
    assert keys(s) == ["a", "b", "b", "c", "d", "e", "f"]
    assert s.state.total_changed
    assert s.state.complete


def test_a_read_resuming_at_a_later_page_fetches_ahead_from_there(httpx_mock: HTTPXMock) -> None:
    """The resume position (``first_page``, being added to the stream) is where parallel fetching starts."""
    server = Overlap(40)
    httpx_mock.add_callback(server, is_reusable=True)
    s = parallel(4, page_size=3)
    s.__dict__["first_page"] = 5  # as the resume position will set it
    assert keys(s) == server.keys[12:]
    assert server.pages[0] == 5
    assert sorted(server.pages) == list(range(5, 15))  # nothing before it, nothing past the end
    assert server.peak > 1


# -- how many requests are worth overlapping (parallel_reads = "auto") ------------------------------------


def _pace(cpu_per_page: float, wait: float, pages: int = PROBE_PAGES) -> Pace:
    clock = [0.0]
    pace = Pace(cpu=lambda: clock[0])
    for _ in range(pages):
        pace.fetched(wait, alone=pace.start())
        pace.pages += 1
        clock[0] += cpu_per_page
    return pace


def test_a_request_that_waits_less_than_a_page_costs_is_not_overlapped() -> None:
    """A source on this machine: 8 ms of waiting against 20 ms of CPU per page: one request at a time."""
    assert _pace(0.020, 0.008).width(4) == 1


def test_waiting_is_hidden_by_about_wait_over_cost_requests() -> None:
    assert _pace(0.020, 0.065).width(8) == 4  # 3.25 requests' worth of waiting: four in flight
    assert _pace(0.020, 0.065).width(3) == 3  # never more than the connector's limit
    assert _pace(0.020, 0.025).width(4) == 2
    assert _pace(0.020, 0.200).width(4) == 4


def test_nothing_is_overlapped_before_the_first_pages_measured_the_wait() -> None:
    assert _pace(0.001, 1.0, pages=PROBE_PAGES - 1).width(4) == 1
    assert _pace(0.001, 1.0, pages=PROBE_PAGES - 1).width(4, always=True) == 4  # parallel_reads = "always"
    assert _pace(0.001, 1.0).width(1) == 1  # max_concurrent_requests = 1


def test_only_a_request_alone_in_flight_tells_the_wait() -> None:
    """Several requests in flight to a source that serves one at a time each wait for the others: that
    queueing is not latency worth hiding. The lowest wait counts, drifting up slowly with a slower source."""
    pace = _pace(0.020, 0.008)
    first, second = pace.start(), pace.start()
    assert (first, second) == (True, False)
    pace.fetched(0.5, alone=second)
    pace.fetched(0.01, alone=first)
    assert pace.wait == pytest.approx(0.008 * Pace.FORGET)
    assert pace.width(4) == 1
    for _ in range(80):  # the source really got slower
        pace.fetched(0.2, alone=pace.start())
    assert pace.wait == pytest.approx(0.2)


def test_auto_fetches_the_first_pages_in_order_then_overlaps_a_slow_source(httpx_mock: HTTPXMock) -> None:
    server = Overlap(40, delay=0.05)
    httpx_mock.add_callback(server, is_reusable=True)
    s = parallel(4, page_size=3)
    assert s.client.parallel_reads == "auto"
    in_flight: list[int] = []
    got: list[str] = []
    for page in s:
        in_flight.append(server.peak)
        got.extend(r[0]["id"] for r in page.rows)
    assert got == server.keys
    assert server.pages[:PROBE_PAGES] == list(range(1, PROBE_PAGES + 1))
    assert in_flight[PROBE_PAGES - 2] == 1  # one request at a time until the wait was measured
    assert server.peak > 1  # then 50 ms of waiting against far less CPU per page: overlapped
