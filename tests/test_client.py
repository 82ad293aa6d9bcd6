"""APISmith client: envelopes, error classification, retries (HTTP mocked with pytest-httpx)."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from pytest_httpx import HTTPXMock

from syncflow.client import APISmithClient, decode_json, parse_retry_after
from syncflow.errors import (
    ConfigError,
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
    assert len(sleeps) == 2
    assert 0.5 <= sleeps[0] <= 1.0
    assert 1.0 <= sleeps[1] <= 1.5


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


# -- exact JSON -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"1234567890123456789012345678.1234567891", Decimal("1234567890123456789012345678.1234567891")),
        (
            b"3.14159265358979323846264338327950288419716939937510",
            Decimal("3.14159265358979323846264338327950288419716939937510"),
        ),
        (b"1e400", Decimal("1e400")),
        (b"-1.5E-400", Decimal("-1.5E-400")),
        (b"12345678901234567890123456789012", 12345678901234567890123456789012),
        (b"-99999999999999999999999999999999999999", -99999999999999999999999999999999999999),
        (b"18446744073709551616", 2**64),
        (b"9007199254740993", 9007199254740993),  # 2**53 + 1: a float would make it ...992
        (b"42", 42),
        (b'"\\ud83d\\ude00 \\u0000 \xf0\x9f\x90\x8d"', "\U0001f600 \x00 \U0001f40d"),
    ],
)
def test_decode_json_numbers_and_strings_are_exact(text: bytes, expected: object) -> None:
    value = decode_json(text)
    assert value == expected
    assert type(value) is type(expected)
    if isinstance(expected, Decimal):
        assert str(value) == str(expected)


def test_decode_json_negative_zero_and_nesting() -> None:
    doc = decode_json(b'{"a": [-0.0, {"b": [1, 2.50, null, true]}], "k": 12345678901234567890123456789012}')
    zero = doc["a"][0]
    assert isinstance(zero, Decimal)
    assert zero.is_signed()
    assert str(zero) == "-0.0"
    assert doc["a"][1] == {"b": [1, Decimal("2.50"), None, True]}
    assert str(doc["a"][1]["b"][1]) == "2.50"
    assert doc["k"] == 12345678901234567890123456789012


def test_decode_json_keeps_distinct_big_keys_distinct() -> None:
    rows = decode_json(b"[12345678901234567890123456789012, 12345678901234567890123456789013]")
    assert len(set(rows)) == 2


@pytest.mark.parametrize("bad", [b"", b"[1,]", b"NaN", b"[]x", b'"\xff"', b"<html>", b"[" * 100_000 + b"]" * 100_000])
def test_decode_json_rejects_what_is_not_json(bad: bytes) -> None:
    with pytest.raises(ValueError, match=r"."):
        decode_json(bad)


def test_client_decodes_pages_exactly(client: APISmithClient, httpx_mock: HTTPXMock) -> None:
    httpx_mock.add_response(
        url=f"{BASE}/api/v1/data/items?page=1&page_size=2",
        content=b'{"rows": [{"data": {"k": 12345678901234567890123456789012, "v": 0.1}}]}',
    )
    data = client.get_page("items", page=1, page_size=2).data
    assert data["rows"][0]["data"] == {"k": 12345678901234567890123456789012, "v": Decimal("0.1")}


# -- bounds and messages ----------------------------------------------------------------------


def test_backoff_is_capped(httpx_mock: HTTPXMock) -> None:
    waits: list[float] = []
    client = APISmithClient(connector="erp", base_url=BASE, attempts=12, backoff=100.0, sleep=waits.append)
    for _ in range(12):
        httpx_mock.add_response(url=f"{BASE}/api/v1/apis", status_code=503)
    with pytest.raises(SourceTransientError):
        client.list_apis()
    assert len(waits) == 11
    assert max(waits) <= 300.0


def test_retry_after_is_capped() -> None:
    assert parse_retry_after("86400") == 300.0
    assert parse_retry_after("inf") == 300.0
    assert parse_retry_after("-5") == 0.0
    assert parse_retry_after("nan") is None
    assert parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now=0.0) == 300.0


@pytest.mark.parametrize("status", [401, 403])
def test_auth_error_names_the_configured_variable(httpx_mock: HTTPXMock, status: int) -> None:
    client = APISmithClient(connector="erp", base_url=BASE, token=TOKEN, token_env="ERP_APISMITH_TOKEN")
    httpx_mock.add_response(url=f"{BASE}/api/v1/apis", status_code=status)
    with pytest.raises(SourceAuthError) as info:
        client.list_apis()
    assert "environment variable ERP_APISMITH_TOKEN" in str(info.value)
    assert TOKEN not in str(info.value)
    assert TOKEN not in repr(info.value.details)


def test_auth_error_without_token_says_none_is_configured(httpx_mock: HTTPXMock) -> None:
    client = APISmithClient(connector="erp", base_url=BASE)
    httpx_mock.add_response(url=f"{BASE}/api/v1/apis", status_code=401)
    with pytest.raises(SourceAuthError, match="no token is configured: set token_env for connector erp"):
        client.list_apis()


def test_missing_ca_bundle_is_a_configuration_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "ca.pem"
    with pytest.raises(ConfigError) as info:
        APISmithClient(connector="erp", base_url=BASE, verify=str(missing))
    assert info.value.exit_code == 2
    assert str(missing) in str(info.value)
    assert "verify_tls" in str(info.value)


def test_pushback_reaches_the_connector_s_limiter(httpx_mock: HTTPXMock, sleeps: list[float]) -> None:
    """429, 503 and timeouts cut the shared limit; a 500 says nothing of load; Retry-After holds everyone."""
    from syncflow.limiter import ConnectorLimiter

    limiter = ConnectorLimiter("erp", max_concurrent=8)
    one = APISmithClient(connector="erp", base_url=BASE, attempts=6, sleep=sleeps.append, limiter=limiter)
    other = APISmithClient(connector="erp", base_url=BASE, attempts=1, limiter=limiter)
    url = f"{BASE}/api/v1/apis"
    httpx_mock.add_response(url=url, status_code=429, headers={"Retry-After": "0.3"})
    httpx_mock.add_response(url=url, status_code=500)
    httpx_mock.add_response(url=url, status_code=503)
    httpx_mock.add_exception(httpx.ReadTimeout("slow"), url=url)
    httpx_mock.add_response(url=url, json=[])
    httpx_mock.add_response(url=url, json=[])
    assert one.list_apis()[0] == []
    assert (one.stats.requests, one.stats.retries, one.stats.throttled) == (5, 4, 3)
    assert (limiter.lowest, limiter.throttled) == (1, 3)  # 8 → 4 → 2 → 1
    assert limiter.current == 2  # the answer at 1 was a round of answers: one more
    assert (one.stats.limit_max, one.stats.in_flight_max) == (8, 1)
    assert one.stats.limit_avg is not None
    assert 1 <= one.stats.limit_avg < 8
    assert sleeps[0] == pytest.approx(0.3)
    assert limiter.not_before > 0
    assert other.list_apis()[0] == []
    assert other.stats.throttled == 0
    assert other.concurrency == 2


def test_a_burst_above_what_the_source_bears_does_not_use_up_the_retries() -> None:
    """Thirty-two requests at once against a source that answers 429 above two in flight: each round of cuts
    (32 -> 16 -> 8 -> 4 -> 2) answers most requests 429, which is the limiter learning, not the request
    failing, so none of them gives up after its three attempts (all did fail that way before)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from syncflow.limiter import ConnectorLimiter

    lock = threading.Lock()
    seen = {"in_flight": 0, "throttled": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with lock:
                seen["in_flight"] += 1
                over = seen["in_flight"] > 2
                seen["throttled"] += over
            if not over:
                time.sleep(0.03)
            # Out of flight before a byte of the answer leaves: a client that has its answer must not find
            # this request still counted (a race of the test server, not the source's limit).
            with lock:
                seen["in_flight"] -= 1
            if over:
                self.send_response(429)
                self.send_header("Retry-After", "0.05")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = b"[]"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    limiter = ConnectorLimiter("erp", max_concurrent=32)
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    clients = [
        APISmithClient(connector="erp", base_url=base, attempts=3, backoff=0.01, limiter=limiter) for _ in range(32)
    ]
    failures: list[BaseException] = []
    start = threading.Barrier(32)

    def call(c: APISmithClient) -> None:
        start.wait()
        try:
            c.list_apis()
        except BaseException as exc:  # collected for the assertion
            failures.append(exc)

    try:
        threads = [threading.Thread(target=call, args=(c,)) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        httpd.shutdown()
        httpd.server_close()
        for c in clients:
            c.close()
    assert failures == []
    assert seen["throttled"] > 0  # the source did push back
    assert limiter.lowest < 32  # the limiter learnt (how far down depends on when the answers came)
