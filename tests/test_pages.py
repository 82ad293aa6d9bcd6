"""The page stream alone: keyset continuation, ties, end-of-data rules (HTTP mocked)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from pytest_httpx import HTTPXMock

from syncflow.client import APISmithClient
from syncflow.errors import SourceProtocolError
from syncflow.pages import PageStream, compare_rowversions, max_rowversion

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
    assert s.state.complete and s.state.checkpoint(None) == "106"


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
    assert s.state.checkpoint("499") == "510" and not s.state.unstable


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
