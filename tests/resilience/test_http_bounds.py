"""The HTTP client's bounds: every wait has a deadline, every body a size cap.

Each case runs against a purpose-built server on 127.0.0.1 that misbehaves
in one precise way (drips, stalls, inflates, rate-limits, speaks the other
scheme). The servers stop misbehaving after a few seconds on their own, so
a client without the bound fails the assertion instead of hanging the suite.
"""

from __future__ import annotations

import gzip
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
import trustme

from syncflow.client import APISmithClient
from syncflow.errors import (
    Cancelled,
    SourceProtocolError,
    SourceTransientError,
    SourceUnreachable,
)

Handler = Callable[[socket.socket, "RawServer"], None]
# The longest any misbehaviour lasts: a client without the bound fails, it does not hang.
GIVE_UP = 6.0


class RawServer:
    """A threaded TCP server on a free 127.0.0.1 port whose handler writes raw bytes."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.stop = threading.Event()
        self.started = time.monotonic()
        self.requests = 0
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def __enter__(self) -> RawServer:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=GIVE_UP)
        self._sock.close()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(GIVE_UP)
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            self.handler(conn, self)
        except OSError:
            pass
        finally:
            conn.close()

    def read_request(self, conn: socket.socket) -> bytes:
        """Read one request head; count it."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        self.requests += 1
        return data

    def pause(self, seconds: float) -> bool:
        """Sleep unless the test is over or the server has misbehaved long enough; False then."""
        left = GIVE_UP - (time.monotonic() - self.started)
        return left > 0 and not self.stop.wait(min(seconds, left))


def head(status: str = "200 OK", **headers: str | int) -> bytes:
    headers.setdefault("connection", "close")
    lines = [f"HTTP/1.1 {status}", *(f"{k.replace('_', '-')}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.fixture
def serve() -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def start(handler: Handler, tls: ssl.SSLContext | None = None) -> RawServer:
        server = RawServer(handler, tls).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__()


def client_for(server: RawServer, **kwargs: Any) -> APISmithClient:
    kwargs.setdefault("attempts", 1)
    kwargs.setdefault("backoff", 0.0)
    return APISmithClient(connector="erp", base_url=server.url, **kwargs)


def timed(fn: Callable[[], Any]) -> tuple[BaseException | None, float]:
    started = time.monotonic()
    try:
        fn()
    except BaseException as exc:  # the test inspects it
        return exc, time.monotonic() - started
    return None, time.monotonic() - started


# -- deadlines ----------------------------------------------------------------------------------


def drip_body(conn: socket.socket, server: RawServer) -> None:
    server.read_request(conn)
    conn.sendall(head(content_type="application/json", content_length=100_000))
    conn.sendall(b"[")
    while server.pause(0.1):
        conn.sendall(b" ")


def drip_head(conn: socket.socket, server: RawServer) -> None:
    server.read_request(conn)
    for byte in head(content_type="application/json", content_length=2) + b"[]":
        if not server.pause(0.1):
            return
        conn.sendall(bytes([byte]))


def stall_after_request(conn: socket.socket, server: RawServer) -> None:
    server.read_request(conn)
    server.pause(GIVE_UP)


@pytest.mark.parametrize("handler", [drip_body, drip_head, stall_after_request])
def test_whole_request_has_a_deadline(serve: Callable[..., RawServer], handler: Handler) -> None:
    server = serve(handler)
    with client_for(server, timeout=1.0) as client:
        exc, elapsed = timed(client.list_apis)
    assert isinstance(exc, SourceTransientError), exc
    assert "timed out after 1 s" in str(exc)
    assert elapsed < 2.0


def test_deadline_applies_to_every_attempt_then_fails(serve: Callable[..., RawServer]) -> None:
    server = serve(drip_body)
    with client_for(server, timeout=0.5, attempts=2) as client:
        exc, elapsed = timed(client.list_apis)
        assert client.stats.retries == 1
    assert isinstance(exc, SourceTransientError)
    assert "timed out after 0.5 s" in str(exc)
    assert server.requests == 2
    assert elapsed < 2.0


def test_slow_name_resolution_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A resolver that never answers cannot hold the request past its deadline."""
    released = threading.Event()

    def hanging_getaddrinfo(*args: Any, **kwargs: Any) -> Any:
        released.wait(GIVE_UP)
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", hanging_getaddrinfo)
    try:
        with APISmithClient(connector="erp", base_url="http://apismith.invalid:8007", timeout=0.5, attempts=1) as c:
            exc, elapsed = timed(c.list_apis)
    finally:
        released.set()
    assert isinstance(exc, SourceTransientError), exc
    assert "timed out after 0.5 s" in str(exc)
    assert elapsed < 1.5


# -- size cap ---------------------------------------------------------------------------------


def gzip_bomb(conn: socket.socket, server: RawServer) -> None:
    server.read_request(conn)
    body = gzip.compress(b"[" + b" " * 20_000_000 + b"]", compresslevel=9)
    conn.sendall(head(content_type="application/json", content_encoding="gzip", content_length=len(body)) + body)
    server.pause(GIVE_UP)


def big_plain(conn: socket.socket, server: RawServer) -> None:
    server.read_request(conn)
    conn.sendall(head(content_type="application/json", transfer_encoding="chunked"))
    chunk = b" " * 65536
    for _ in range(64):  # 4 MiB in all
        conn.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
    conn.sendall(b"0\r\n\r\n")


def big_declared(conn: socket.socket, server: RawServer) -> None:
    server.read_request(conn)
    conn.sendall(head(content_type="application/json", content_length=10_000_000) + b"[")
    server.pause(GIVE_UP)


@pytest.mark.parametrize("handler", [gzip_bomb, big_plain, big_declared])
def test_response_larger_than_the_cap_fails_without_retry(serve: Callable[..., RawServer], handler: Handler) -> None:
    server = serve(handler)
    cap = 1_048_576
    with client_for(server, timeout=5.0, attempts=3, max_response_bytes=cap) as client:
        exc, elapsed = timed(client.list_apis)
    assert isinstance(exc, SourceProtocolError), exc
    assert str(exc) == (f"connector erp: response from {server.url}/api/v1/apis exceeds max_response_bytes ({cap})")
    assert server.requests == 1
    assert elapsed < 5.0


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda b: zlib.compress(b)[2:-4]),  # raw deflate, as some servers send it
        ("identity", lambda b: b),
    ],
)
def test_compressed_bodies_decode_exactly(
    serve: Callable[..., RawServer], encoding: str, compress: Callable[[bytes], bytes]
) -> None:
    doc = b'{"apis": [{"slug": "items", "n": 12345678901234567890123456789.000000001}]}'

    def answer(conn: socket.socket, server: RawServer) -> None:
        server.read_request(conn)
        body = compress(doc)
        conn.sendall(head(content_type="application/json", content_encoding=encoding, content_length=len(body)) + body)

    server = serve(answer)
    with client_for(server, max_response_bytes=len(doc)) as client:
        apis, resp = client.list_apis()
    assert apis == [{"slug": "items", "n": Decimal("12345678901234567890123456789.000000001")}]
    assert resp.nbytes == len(doc)


def test_unknown_content_encoding_is_a_protocol_error(serve: Callable[..., RawServer]) -> None:
    def answer(conn: socket.socket, server: RawServer) -> None:
        server.read_request(conn)
        conn.sendall(head(content_type="application/json", content_encoding="snappy", content_length=2) + b"[]")

    server = serve(answer)
    with client_for(server) as client, pytest.raises(SourceProtocolError, match="content-encoding 'snappy'"):
        client.list_apis()


# -- cancellation -------------------------------------------------------------------------------


def rate_limited(conn: socket.socket, server: RawServer) -> None:
    server.read_request(conn)
    conn.sendall(head("429 Too Many Requests", retry_after=300, content_length=0))


@pytest.mark.parametrize("handler", [rate_limited, drip_body, stall_after_request])
def test_cancel_interrupts_retry_waits_and_reads(serve: Callable[..., RawServer], handler: Handler) -> None:
    server = serve(handler)
    cancel = threading.Event()
    timer = threading.Timer(0.3, cancel.set)
    with client_for(server, timeout=30.0, attempts=3, cancel=cancel) as client:
        timer.start()
        try:
            exc, elapsed = timed(client.list_apis)
        finally:
            timer.cancel()
    assert isinstance(exc, Cancelled), exc
    assert elapsed < 1.2
    assert server.requests == 1


def test_a_cancelled_client_sends_nothing(serve: Callable[..., RawServer]) -> None:
    server = serve(rate_limited)
    cancel = threading.Event()
    cancel.set()
    with client_for(server, cancel=cancel) as client, pytest.raises(Cancelled):
        client.list_apis()
    assert server.requests == 0


# -- the other scheme ---------------------------------------------------------------------------


def json_ok(conn: socket.socket, server: RawServer) -> None:
    server.read_request(conn)
    conn.sendall(head(content_type="application/json", content_length=2) + b"[]")


def bad_request(conn: socket.socket, server: RawServer) -> None:
    """What a plain HTTP server answers to a TLS ClientHello."""
    conn.recv(4096)
    server.requests += 1
    conn.sendall(head("400 Bad Request", content_type="text/plain", content_length=11) + b"Bad Request")


def test_https_url_for_a_plain_http_server_suggests_http(serve: Callable[..., RawServer]) -> None:
    server = serve(bad_request)
    url = f"https://127.0.0.1:{server.port}"
    with APISmithClient(connector="erp", base_url=url, attempts=1) as client:
        exc, _ = timed(client.list_apis)
    assert isinstance(exc, SourceUnreachable), exc
    assert f"the server may speak plain HTTP: try base_url = http://127.0.0.1:{server.port}" in str(exc)


def test_http_url_for_a_tls_server_suggests_https(serve: Callable[..., RawServer], tmp_path: Any) -> None:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server = serve(json_ok, tls=context)
    url = f"http://127.0.0.1:{server.port}"
    with APISmithClient(connector="erp", base_url=url, attempts=1, timeout=3.0) as client:
        exc, elapsed = timed(client.list_apis)
    assert isinstance(exc, SourceTransientError), exc
    assert f"if the server speaks HTTPS, try base_url = https://127.0.0.1:{server.port}" in str(exc)
    assert elapsed < 3.0
    # ... and with the CA, https works against the same server.
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with APISmithClient(connector="erp", base_url=server.url, attempts=1, verify=str(ca_file)) as client:
        assert client.list_apis()[0] == []


def test_refused_connection_gets_no_scheme_hint() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: refused
        with APISmithClient(connector="erp", base_url=f"http://127.0.0.1:{port}", attempts=1) as client:
            exc, _ = timed(client.list_apis)
    assert isinstance(exc, SourceTransientError), exc
    assert "cannot connect to" in str(exc)
    assert "https" not in str(exc)


@pytest.mark.parametrize("tls", [False, True])
def test_slow_but_timely_body_arrives_whole(serve: Callable[..., RawServer], tls: bool, tmp_path: Any) -> None:
    """Reads are sliced to notice a cancel; pauses longer than a slice must not corrupt the body."""
    doc = b'{"apis": [' + b",".join(b'{"slug": "s%d", "v": 1.10}' % i for i in range(50)) + b"]}"

    def slow(conn: socket.socket, server: RawServer) -> None:
        server.read_request(conn)
        conn.sendall(head(content_type="application/json", content_length=len(doc)))
        for part in (doc[:10], doc[10:200], doc[200:]):
            if not server.pause(0.35):
                return
            conn.sendall(part)

    verify: bool | str = True
    context = None
    if tls:
        ca = trustme.CA()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(context)
        ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
        verify = str(tmp_path / "ca.pem")
    server = serve(slow, tls=context)
    with client_for(server, timeout=5.0, verify=verify, cancel=threading.Event()) as client:
        apis, resp = client.list_apis()
    assert [a["slug"] for a in apis] == [f"s{i}" for i in range(50)]
    assert {a["v"] for a in apis} == {Decimal("1.10")}
    assert resp.nbytes == len(doc)


def test_connect_phase_is_bounded() -> None:
    """A listener whose accept queue is full never completes the handshake."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):  # fill the accept queue; later SYNs are dropped
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        time.sleep(0.05)  # let the fillers' handshakes land in the queue
        with APISmithClient(connector="erp", base_url=f"http://127.0.0.1:{port}", timeout=0.5, attempts=1) as c:
            exc, elapsed = timed(c.list_apis)
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
    assert isinstance(exc, SourceTransientError), exc
    assert "timed out after 0.5 s" in str(exc)
    assert elapsed < 1.5


# -- proxies from the environment ---------------------------------------------------------------


def test_environment_proxy_is_used_and_bounded(
    serve: Callable[..., RawServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bytes] = []

    def proxy(conn: socket.socket, server: RawServer) -> None:
        request = server.read_request(conn)
        seen.append(request.split(b"\r\n", 1)[0])
        if b"/api/v1/data/" in request:
            drip_body_after_head(conn, server)
            return
        conn.sendall(head(content_type="application/json", content_length=2) + b"[]")

    server = serve(proxy)
    for var in (
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
        "NO_PROXY",
        "no_proxy",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HTTP_PROXY", server.url)
    real_getaddrinfo = socket.getaddrinfo

    def local_only(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "127.0.0.1":  # the target must be reached through the proxy, never looked up
            raise socket.gaierror(socket.EAI_NONAME, f"test: no lookup of {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", local_only)
    with APISmithClient(connector="erp", base_url="http://apismith.invalid:8007", timeout=1.0, attempts=1) as client:
        assert client.list_apis()[0] == []
        exc, elapsed = timed(lambda: client.get_page("items", page=1, page_size=10))
    assert seen[0] == b"GET http://apismith.invalid:8007/api/v1/apis HTTP/1.1"
    assert isinstance(exc, SourceTransientError), exc
    assert "timed out after 1 s" in str(exc)
    assert elapsed < 2.0


def drip_body_after_head(conn: socket.socket, server: RawServer) -> None:
    conn.sendall(head(content_type="application/json", content_length=100_000) + b"[")
    while server.pause(0.1):
        conn.sendall(b" ")
