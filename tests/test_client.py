"""APISmith client: envelopes, error classification, retries (HTTP mocked with pytest-httpx)."""

from __future__ import annotations

import httpx
import pytest
from pytest_httpx import HTTPXMock

from syncflow.client import APISmithClient, parse_retry_after
from syncflow.errors import (
    SourceAuthError,
    SourceNotFound,
    SourceProtocolError,
    SourceTransientError,
)

BASE = "https://apismith.test:8007/smith"
TOKEN = "eyJ.secret.token"


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(sleeps: list[float]) -> APISmithClient:
    return APISmithClient(connector="erp", base_url=BASE, token=TOKEN, attempts=3, backoff=0.5, sleep=sleeps.append)


@pytest.mark.parametrize("envelope", [None, "apis", "items", "data"])
def test_discovery_envelopes(client: APISmithClient, httpx_mock: HTTPXMock, envelope: str | None) -> None:
    apis = [{"slug": "items"}]
    httpx_mock.add_response(url=f"{BASE}/api/v1/apis", json=apis if envelope is None else {envelope: apis})
    found, _ = client.list_apis()
    assert found == apis
    request = httpx_mock.get_request()
    assert request is not None
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"


def test_transient_errors_are_retried_then_succeed(
    client: APISmithClient, httpx_mock: HTTPXMock, sleeps: list[float]
) -> None:
    url = f"{BASE}/api/v1/apis"
    httpx_mock.add_response(url=url, status_code=503)
    httpx_mock.add_exception(httpx.ReadTimeout("slow"), url=url)
    httpx_mock.add_response(url=url, json=[])
    assert client.list_apis()[0] == []
    assert client.stats.retries == 2
    assert len(sleeps) == 2 and 0.5 <= sleeps[0] <= 1.0 and 1.0 <= sleeps[1] <= 1.5


def test_transient_errors_give_up_after_attempts(client: APISmithClient, httpx_mock: HTTPXMock) -> None:
    for _ in range(3):
        httpx_mock.add_response(url=f"{BASE}/api/v1/apis", status_code=502, text="bad gateway")
    with pytest.raises(SourceTransientError, match="HTTP 502"):
        client.list_apis()


def test_429_honours_retry_after(client: APISmithClient, httpx_mock: HTTPXMock, sleeps: list[float]) -> None:
    httpx_mock.add_response(url=f"{BASE}/api/v1/apis", status_code=429, headers={"Retry-After": "7"})
    httpx_mock.add_response(url=f"{BASE}/api/v1/apis", json=[])
    client.list_apis()
    assert sleeps == [7.0]


def test_retry_after_http_date() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("garbage") is None


@pytest.mark.parametrize("status", [401, 403])
def test_auth_errors_not_retried_and_token_not_shown(
    client: APISmithClient, httpx_mock: HTTPXMock, status: int
) -> None:
    httpx_mock.add_response(url=f"{BASE}/api/v1/apis", status_code=status, text=f"bad token {TOKEN}")
    with pytest.raises(SourceAuthError) as info:
        client.list_apis()
    assert f"HTTP {status}" in str(info.value)
    assert TOKEN not in str(info.value)
    assert len(httpx_mock.get_requests()) == 1


def test_404_on_data(client: APISmithClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=f"{BASE}/api/v1/data/gone?page=1&page_size=10", status_code=404)
    with pytest.raises(SourceNotFound):
        client.get_page("gone", page=1, page_size=10)


def test_html_body_is_a_protocol_error_with_preview(client: APISmithClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(
        url=f"{BASE}/api/v1/apis",
        text="<html><body>Login</body></html>",
        headers={"content-type": "text/html"},
    )
    with pytest.raises(SourceProtocolError) as info:
        client.list_apis()
    assert "<html><body>Login" in str(info.value)
    assert info.value.details["body"].startswith("<html>")


def test_wrong_shape_is_a_protocol_error(client: APISmithClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(url=f"{BASE}/api/v1/apis", json={"unexpected": 1})
    with pytest.raises(SourceProtocolError, match="not a list of APIs"):
        client.list_apis()


def test_data_params_and_slug_quoting(client: APISmithClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(
        url=f"{BASE}/api/v1/data/odd%2Fslug?page=2&page_size=50&rowversion_gt=123", json={"rows": []}
    )
    client.get_page("odd/slug", page=2, page_size=50, rowversion_gt="123")
