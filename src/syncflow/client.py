"""The APISmith HTTP client: httpx underneath, tenacity for retries.

This is the boundary where httpx's exceptions and HTTP statuses become the
:class:`SourceError` tree (protocol section 3). Only errors marked transient
are retried. The token goes in the ``Authorization`` header and nowhere else:
no message, URL or detail built here contains it.

Every wait is bounded, because cron gives a run a fixed slot: one request
(name resolution, connect, TLS, headers, body) has a single deadline of
``timeout`` seconds, enforced at every socket read by a network backend that
also watches the ``cancel`` event; retry waits are capped and wake on
``cancel``. A body may not inflate past ``max_response_bytes``, and JSON
numbers are decoded exactly (never through a float).
"""

from __future__ import annotations

import contextvars
import decimal
import email.utils
import ipaddress
import json
import math
import random
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpcore
import httpx
import msgspec
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
)

from syncflow.errors import (
    Cancelled,
    ConfigError,
    SourceAuthError,
    SourceError,
    SourceNotFound,
    SourceProtocolError,
    SourceTransientError,
    SourceUnreachable,
)
from syncflow.limiter import ConnectorLimiter, Ticket

APIS_PATH = "/api/v1/apis"
DATA_PATH = "/api/v1/data/{slug}"
BODY_PREVIEW_BYTES = 200
_TRANSIENT_STATUSES = frozenset({500, 502, 503, 504})
# Answers that mean "too much": the connector's limiter cuts its concurrency (with timeouts).
_PUSHBACK_STATUSES = frozenset({429, 503, 504})
_MAX_RETRY_AFTER = 300.0
# No single wait between attempts is longer, whatever the backoff or Retry-After says.
MAX_RETRY_WAIT = 300.0
DEFAULT_MAX_RESPONSE_BYTES = 256 * 1024 * 1024
# How often a blocked socket read or name lookup looks at the cancel event.
_CANCEL_POLL = 0.1
# Only what the client can inflate itself, under the size cap.
_ACCEPT_ENCODING = "gzip, deflate"
# OpenSSL's words (lower case, spaces for underscores) for "the other side does not speak TLS".
_PLAIN_HTTP_SIGNS = ("wrong version number", "record layer failure", "packet length too long", "unknown protocol")

# The absolute (monotonic) deadline of the request this thread is making, if any.
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("syncflow_http_deadline", default=None)
_EXACT_JSON = msgspec.json.Decoder(float_hook=decimal.Decimal)


def decode_json(body: bytes) -> Any:
    """Decode JSON with every number exact: integers as int, the others as Decimal.

    Floats would round NUMBER(38,10) values and merge distinct 32-digit keys.
    Raises ValueError for anything that is not one well-formed JSON document.
    """
    try:
        return _EXACT_JSON.decode(body)
    except msgspec.MsgspecError as exc:
        # msgspec refuses a lone surrogate escape ("\ud800") that JSON's grammar allows; the standard
        # decoder takes it (exactly too), so one such value rejects its row later, not the whole page.
        try:
            return json.loads(body, parse_float=Decimal, parse_constant=_no_constant)
        except (ValueError, RecursionError):
            raise ValueError(str(exc) or "not JSON") from None
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def safe_url(url: str | httpx.URL) -> str:
    """The URL without user:password, fit for messages and run records."""
    parts = urlsplit(str(url))
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def body_preview(body: bytes) -> str:
    """The first bytes of a body, decoded leniently, for error details."""
    return body[:BODY_PREVIEW_BYTES].decode("utf-8", errors="replace")


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        # "nan" parses as a float and survives min/max: it would crash the wait.
        return None if math.isnan(seconds) else min(max(seconds, 0.0), _MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return min(max(when.timestamp() - current, 0.0), _MAX_RETRY_AFTER)


@dataclass
class ClientStats:
    """What the client did, for run records and metrics (updated under the client's lock: pages are
    fetched by several threads)."""

    requests: int = 0
    retries: int = 0
    seconds: float = 0.0
    # The source pushing back: 429, 503, 504 or a timed-out request.
    throttled: int = 0
    # The connector's effective concurrency limit when each request was admitted (see syncflow.limiter).
    admitted: int = 0
    limit_max: int = 0
    limit_sum: int = 0
    in_flight_max: int = 0

    @property
    def limit_avg(self) -> float | None:
        return self.limit_sum / self.admitted if self.admitted else None


@dataclass(frozen=True)
class Response:
    """A decoded JSON response and its size."""

    data: Any
    nbytes: int
    url: str
    elapsed: float
    preview: str = ""  # the first bytes of the body, for error messages about its shape


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class _BoundedBackend(httpcore.NetworkBackend):
    """httpcore's socket backend with the request deadline and cancel event applied.

    httpx's timeouts apply per socket operation, so a server dripping one byte
    a second never times out, and name resolution has no timeout at all.
    """

    def __init__(self, connector: str, cancelled: Callable[[], bool]) -> None:
        self._inner = httpcore.SyncBackend()
        self.connector = connector
        self.cancelled = cancelled

    def end(self, timeout: float | None) -> float | None:
        """When the current operation must be over: its own timeout or the request's deadline."""
        ends = [t for t in (_DEADLINE.get(), None if timeout is None else time.monotonic() + timeout) if t is not None]
        return min(ends) if ends else None

    def check_cancel(self) -> None:
        if self.cancelled():
            raise Cancelled(f"connector {self.connector}: request cancelled by a signal")

    def left(self, end: float | None, expired: type[Exception]) -> float | None:
        """Seconds until ``end``; raises ``expired`` when none are left, Cancelled when cancelled."""
        self.check_cancel()
        if end is None:
            return None
        left = end - time.monotonic()
        if left <= 0:
            raise expired("request deadline passed")
        return left

    def budget(self, timeout: float | None, expired: type[Exception]) -> float | None:
        """Seconds left for one socket call that starts now."""
        return self.left(self.end(timeout), expired)

    def _resolve(self, host: str, port: int, timeout: float | None) -> list[str]:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            return [host]
        found: list[Any] = []
        failed: list[OSError] = []
        done = threading.Event()

        def lookup() -> None:
            try:
                found.extend(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
            except OSError as exc:
                failed.append(exc)
            finally:
                done.set()

        # getaddrinfo cannot be interrupted; a daemon thread lets the request give up on it.
        threading.Thread(target=lookup, name=f"syncflow-dns-{host}", daemon=True).start()
        end = self.end(timeout)
        while not done.is_set():
            left = self.left(end, httpcore.ConnectTimeout)
            done.wait(_CANCEL_POLL if left is None else min(left, _CANCEL_POLL))
        if failed:
            raise httpcore.ConnectError(str(failed[0]))
        addresses: list[str] = []
        for info in found:
            address = str(info[4][0])
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise httpcore.ConnectError(f"no address found for {host}")
        return addresses

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        end = self.end(timeout)
        last: Exception | None = None
        for address in self._resolve(host, port, timeout):
            left = self.left(end, httpcore.ConnectTimeout)
            try:
                stream = self._inner.connect_tcp(address, port, left, local_address, socket_options)
            except httpcore.ConnectError as exc:
                last = exc
                continue
            return _BoundedStream(stream, self)
        raise last if last is not None else httpcore.ConnectError(f"cannot connect to {host}")

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        return _BoundedStream(self._inner.connect_unix_socket(path, timeout, socket_options), self)

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _BoundedStream(httpcore.NetworkStream):
    """A socket whose reads end at the request deadline and wake up for the cancel event."""

    def __init__(self, inner: httpcore.NetworkStream, backend: _BoundedBackend) -> None:
        self._inner = inner
        self._backend = backend

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        end = self._backend.end(timeout)
        while True:
            self._backend.check_cancel()
            left = None if end is None else end - time.monotonic()
            if left is not None and left <= 0:
                raise httpcore.ReadTimeout("request deadline passed")
            # Short slices so a cancel is noticed; a timed-out recv leaves the socket usable.
            try:
                return self._inner.read(max_bytes, _CANCEL_POLL if left is None else min(left, _CANCEL_POLL))
            except httpcore.ReadTimeout:
                continue

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._backend.budget(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        left = self._backend.budget(timeout, httpcore.ConnectTimeout)
        return _BoundedStream(self._inner.start_tls(ssl_context, server_hostname, left), self._backend)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _BoundedTransport(httpx.HTTPTransport):
    """httpx's transport (direct or through a proxy) on the bounded backend.

    httpx has no public knob for the backend; its pools (direct, HTTP and SOCKS
    proxy) all keep it in ``_network_backend``. The deadline tests fail if that changes.
    """

    def __init__(self, ssl_context: ssl.SSLContext, backend: _BoundedBackend, proxy: str | None = None) -> None:
        super().__init__(verify=ssl_context, proxy=proxy)
        self._pool._network_backend = backend


def _transports(
    ssl_context: ssl.SSLContext, backend: _BoundedBackend
) -> tuple[httpx.BaseTransport, dict[str, httpx.BaseTransport | None]]:
    """The direct transport and, as httpx would mount them, the proxies named by the environment.

    httpx ignores HTTP(S)_PROXY / ALL_PROXY / NO_PROXY once a transport is given, so
    they are mounted here, on the same bounded backend.
    """
    from httpx._utils import get_environment_proxies  # httpx's own reading of the variables

    mounts: dict[str, httpx.BaseTransport | None] = {
        pattern: None if url is None else _BoundedTransport(ssl_context, backend, url)
        for pattern, url in get_environment_proxies().items()
    }
    return _BoundedTransport(ssl_context, backend), mounts


class _Inflater:
    """gzip/deflate decoding that never produces more than it is asked for."""

    def __init__(self, encoding: str) -> None:
        self._deflate = encoding == "deflate"
        self._first = True
        wbits = zlib.MAX_WBITS | 16 if encoding in ("gzip", "x-gzip") else zlib.MAX_WBITS
        self._obj = zlib.decompressobj(wbits)

    def feed(self, data: bytes, max_length: int) -> bytes:
        if self._first and self._deflate:
            # "deflate" is zlib-wrapped by the standard, raw by some servers: try both.
            self._first = False
            try:
                return self._obj.decompress(data, max_length)
            except zlib.error:
                self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
        return self._obj.decompress(data, max_length)

    def flush(self) -> bytes:
        return self._obj.flush()


def _speaks_plain_http(tls_error: str) -> bool:
    words = tls_error.lower().replace("_", " ")
    return any(sign in words for sign in _PLAIN_HTTP_SIGNS)


def _other_scheme(base_url: str) -> str:
    parts = urlsplit(safe_url(base_url))
    other = "http" if parts.scheme == "https" else "https"
    return urlunsplit((other, parts.netloc, parts.path.rstrip("/"), "", ""))


@dataclass
class APISmithClient:
    """Talks to one APISmith instance on behalf of one connector."""

    connector: str
    base_url: str
    token: str | None = None
    timeout: float = 30.0
    attempts: int = 3
    backoff: float = 1.0
    verify: bool | str = True
    http: httpx.Client | None = None
    # None: really wait (on ``cancel`` when there is one); tests pass a recorder.
    sleep: Callable[[float], None] | None = None
    stats: ClientStats = field(default_factory=ClientStats)
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    # The name of the variable the token came from, for messages (never the token).
    token_env: str | None = None
    # Set by a signal handler: waits and reads stop and raise Cancelled.
    cancel: threading.Event | None = None
    # Shared by every client of the connector in this invocation; None: no limit (one request at a time).
    limiter: ConnectorLimiter | None = None
    # "auto": reads overlap requests only when they wait longer than a page costs here (pages.Pace);
    # "always": up to the limiter's limit whenever it allows more than one.
    parallel_reads: str = "auto"

    def __post_init__(self) -> None:
        self._own_http = self.http is None
        self._stats_lock = threading.Lock()
        if self.http is None:
            transport, mounts = _transports(self._ssl_context(), _BoundedBackend(self.connector, self._cancelled))
            self.http = httpx.Client(
                base_url=self.base_url,
                timeout=self.timeout,
                transport=transport,
                mounts=mounts,
                headers={"Accept": "application/json", "Accept-Encoding": _ACCEPT_ENCODING, "User-Agent": "syncflow"},
            )

    def _ssl_context(self) -> ssl.SSLContext:
        if not isinstance(self.verify, str):
            return httpx.create_ssl_context(verify=self.verify)
        try:
            return ssl.create_default_context(cafile=self.verify)
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
            raise ConfigError(
                f"connectors.{self.connector}.verify_tls: cannot load the CA bundle {self.verify}: {reason}"
            ) from None

    def _cancelled(self) -> bool:
        return self.cancel is not None and self.cancel.is_set()

    def _check_cancel(self) -> None:
        if self._cancelled():
            raise Cancelled(f"connector {self.connector}: request cancelled by a signal")

    def _pause(self, seconds: float) -> None:
        """The wait between attempts: interruptible by ``cancel``."""
        self._check_cancel()
        if self.sleep is not None:
            self.sleep(seconds)
        elif self.cancel is not None:
            self.cancel.wait(seconds)
        else:
            time.sleep(seconds)
        self._check_cancel()

    @property
    def max_concurrency(self) -> int:
        """The most requests this connector may ever have in flight (``max_concurrent_requests``)."""
        return self.limiter.max_concurrent if self.limiter is not None else 1

    @property
    def concurrency(self) -> int:
        """How many requests this connector may have in flight now (1 without a limiter)."""
        return self.limiter.current if self.limiter is not None else 1

    def close(self) -> None:
        """Close the underlying client if this object created it."""
        if self._own_http and self.http is not None:
            self.http.close()

    def __enter__(self) -> APISmithClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests -------------------------------------------------------------------

    def get_json(self, path: str, params: Mapping[str, str | int] | None = None) -> Response:
        """GET a JSON document, retrying transient failures with backoff and jitter."""

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, SourceTransientError) and exc.retry_after is not None:
                return min(exc.retry_after, MAX_RETRY_WAIT)
            base = self.backoff * (2 ** (state.attempt_number - 1))
            return min(float(base + random.uniform(0, self.backoff)), MAX_RETRY_WAIT)  # noqa: S311 - jitter

        def before_sleep(state: RetryCallState) -> None:  # noqa: ARG001 - tenacity's callback signature
            with self._stats_lock:
                self.stats.retries += 1

        # Push-backs the limiter learned from (see ConnectorLimiter.release) do not count as attempts, up to
        # one per halving of the limit, so that even a source pushing back forever ends the call.
        forgiven = [0]
        most_forgiven = self.max_concurrency.bit_length()

        def stop(state: RetryCallState) -> bool:
            return state.attempt_number >= self.attempts + min(forgiven[0], most_forgiven)

        retrying = Retrying(
            stop=stop,
            wait=wait,
            retry=retry_if_exception(lambda e: isinstance(e, SourceError) and e.transient),
            before_sleep=before_sleep,
            sleep=self._pause,
            reraise=True,
        )
        result: Response = retrying(self._get_once, path, params, forgiven)
        return result

    def _get_once(self, path: str, params: Mapping[str, str | int] | None, forgiven: list[int]) -> Response:
        """One attempt, admitted by the connector's limiter, which learns from how it ended."""
        if self.limiter is None:
            return self._request(path, params)
        self._check_cancel()
        ticket = self.limiter.acquire(self._cancelled)
        self._admitted(ticket)
        latency: float | None = None
        pushback, retry_after = False, None
        try:
            resp = self._request(path, params)
            latency = resp.elapsed
            return resp
        except SourceTransientError as exc:
            pushback, retry_after = _is_pushback(exc), exc.retry_after
            if pushback:
                with self._stats_lock:
                    self.stats.throttled += 1
            raise
        finally:
            if self.limiter.release(ticket, throttled=pushback, latency=latency, retry_after=retry_after):
                forgiven[0] += 1

    def _admitted(self, ticket: Ticket) -> None:
        with self._stats_lock:
            st = self.stats
            st.admitted += 1
            st.limit_sum += ticket.limit
            st.limit_max = max(st.limit_max, ticket.limit)
            st.in_flight_max = max(st.in_flight_max, ticket.in_flight)

    def _request(self, path: str, params: Mapping[str, str | int] | None) -> Response:
        if self.http is None:
            raise RuntimeError("the APISmith client was used after it was closed")
        self._check_cancel()
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        url = self.http.build_request("GET", path, params=params).url
        shown = safe_url(url)
        with self._stats_lock:
            self.stats.requests += 1
        started = time.monotonic()
        deadline = started + self.timeout
        deadline_token = _DEADLINE.set(deadline)
        status: int | None = None
        try:
            with self.http.stream("GET", path, params=params, headers=headers) as resp:
                status = resp.status_code
                body = self._read_body(resp, shown, deadline)
        except httpx.TimeoutException as exc:
            raise self._timed_out(shown, type(exc).__name__) from None
        except httpx.ConnectError as exc:
            cause = _ssl_cause(exc)
            if cause is not None:
                reason = str(getattr(cause, "reason", None) or cause)
                hint = ""
                if url.scheme == "https" and _speaks_plain_http(f"{reason} {cause}"):
                    hint = f"; the server may speak plain HTTP: try base_url = {_other_scheme(self.base_url)}"
                raise SourceUnreachable(
                    f"connector {self.connector}: TLS error talking to {shown}: {reason}{hint}",
                    details={"url": shown, "error": "tls"},
                ) from None
            raise SourceTransientError(
                f"connector {self.connector}: cannot connect to {shown}: {exc}",
                details={"url": shown, "error": type(exc).__name__},
            ) from None
        except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            raise SourceTransientError(
                f"connector {self.connector}: connection failed during {shown}: {exc}{self._https_hint(url, status)}",
                details={"url": shown, "error": type(exc).__name__},
            ) from None
        except httpx.HTTPError as exc:
            raise SourceError(
                f"connector {self.connector}: HTTP error during {shown}: {exc}",
                details={"url": shown, "error": type(exc).__name__},
            ) from None
        finally:
            _DEADLINE.reset(deadline_token)
        elapsed = time.monotonic() - started
        with self._stats_lock:
            self.stats.seconds += elapsed
        self._check_status(resp, body, shown)
        try:
            data = decode_json(body)
        except ValueError:
            raise SourceProtocolError(
                f"connector {self.connector}: {shown} returned a body that is not JSON "
                f"(content-type {resp.headers.get('content-type', '?')}): {self._preview(body)!r}",
                details={"url": shown, "status": resp.status_code, "body": self._preview(body)},
            ) from None
        return Response(data=data, nbytes=len(body), url=shown, elapsed=elapsed, preview=self._preview(body))

    def _preview(self, body: bytes) -> str:
        """The body's first bytes for messages, with the token blanked: a proxy's or a debug page's
        echo of the request must not carry it into logs, run records or --json."""
        text = body_preview(body)
        if self.token and len(self.token) >= 4:
            text = text.replace(self.token, "***")
            # A token cut off at the end of the preview leaves its first part: blank that too.
            for cut in range(len(self.token) - 1, 3, -1):
                if text.endswith(self.token[:cut]):
                    text = text[: len(text) - cut] + "***"
                    break
        return text

    def _timed_out(self, shown: str, error: str) -> SourceTransientError:
        return SourceTransientError(
            f"connector {self.connector}: timed out after {self.timeout:g} s ({shown})",
            details={"url": shown, "error": error},
        )

    def _https_hint(self, url: httpx.URL, status: int | None) -> str:
        """A plain-HTTP request to a TLS port fails before any response head: say so."""
        if url.scheme != "http" or status is not None:
            return ""
        return f" (if the server speaks HTTPS, try base_url = {_other_scheme(self.base_url)})"

    def _too_large(self, shown: str) -> SourceProtocolError:
        return SourceProtocolError(
            f"connector {self.connector}: response from {shown} exceeds max_response_bytes ({self.max_response_bytes})",
            details={"url": shown, "max_response_bytes": self.max_response_bytes},
        )

    def _read_body(self, resp: httpx.Response, shown: str, deadline: float) -> bytes:
        """The decoded body, read against the deadline, the cancel event and the size cap."""
        limit = self.max_response_bytes
        codings = [c.strip().lower() for c in resp.headers.get("content-encoding", "").split(",")]
        codings = [c for c in codings if c and c != "identity"]
        if len(codings) > 1 or (codings and codings[0] not in ("gzip", "x-gzip", "deflate")):
            raise SourceProtocolError(
                f"connector {self.connector}: {shown} answered with unsupported content-encoding "
                f"{', '.join(codings)!r} (asked for {_ACCEPT_ENCODING})",
                details={"url": shown, "content_encoding": ", ".join(codings)},
            )
        inflater = _Inflater(codings[0]) if codings else None
        declared = resp.headers.get("content-length", "")
        if inflater is None and declared.isdigit() and int(declared) > limit:
            raise self._too_large(shown)
        body = bytearray()
        try:
            for raw in resp.iter_raw():
                self._check_cancel()
                if time.monotonic() > deadline:
                    raise self._timed_out(shown, "deadline")
                body += raw if inflater is None else inflater.feed(raw, limit - len(body) + 1)
                if len(body) > limit:
                    raise self._too_large(shown)
            if inflater is not None:
                body += inflater.flush()
        except zlib.error as exc:
            raise SourceProtocolError(
                f"connector {self.connector}: {shown} sent a body that is not valid {codings[0]}: {exc}",
                details={"url": shown, "content_encoding": codings[0]},
            ) from None
        if len(body) > limit:
            raise self._too_large(shown)
        return bytes(body)

    def _check_status(self, resp: httpx.Response, body: bytes, shown: str) -> None:
        status = resp.status_code
        if 200 <= status < 300:
            return
        details = {"url": shown, "status": status, "body": self._preview(body)}
        if status in (401, 403):
            if self.token_env:
                fix = f"check the token in environment variable {self.token_env} (token_env)"
            elif not self.token:
                fix = f"no token is configured: set token_env for connector {self.connector}"
            else:
                fix = "check the variable named by token_env"
            raise SourceAuthError(
                f"connector {self.connector}: APISmith refused the token (HTTP {status}) for {shown}; {fix}",
                details=details,
            )
        if status == 404:
            raise SourceNotFound(f"connector {self.connector}: not found (HTTP 404): {shown}", details=details)
        if status == 429:
            raise SourceTransientError(
                f"connector {self.connector}: rate limited (HTTP 429) at {shown}",
                details=details,
                retry_after=parse_retry_after(resp.headers.get("retry-after")),
            )
        if status in _TRANSIENT_STATUSES:
            raise SourceTransientError(f"connector {self.connector}: HTTP {status} from {shown}", details=details)
        raise SourceError(f"connector {self.connector}: HTTP {status} from {shown}", details=details)

    # -- protocol ---------------------------------------------------------------------

    def list_apis(self) -> tuple[list[Any], Response]:
        """``GET /api/v1/apis``: the bare array or the array under apis/items/data."""
        resp = self.get_json(APIS_PATH)
        data = resp.data
        if isinstance(data, dict):
            for key in ("apis", "items", "data"):
                if isinstance(data.get(key), list):
                    return data[key], resp
        if isinstance(data, list):
            return data, resp
        raise SourceProtocolError(
            f"connector {self.connector}: {resp.url} returned JSON that is not a list of APIs "
            f"(expected an array, or an object with 'apis', 'items' or 'data'): {resp.preview!r}",
            details={"url": resp.url, "body": resp.preview},
        )

    def get_page(self, slug: str, *, page: int, page_size: int, rowversion_gt: str | None = None) -> Response:
        """One page of ``GET /api/v1/data/{slug}``."""
        params: dict[str, str | int] = {"page": page, "page_size": page_size}
        if rowversion_gt is not None:
            params["rowversion_gt"] = rowversion_gt
        return self.get_json(DATA_PATH.format(slug=_quote_slug(slug)), params)


def _is_pushback(exc: SourceTransientError) -> bool:
    """429, 503, 504 or a timeout: the source is overloaded (a refused connection or a 500 says nothing of load)."""
    status, error = exc.details.get("status"), str(exc.details.get("error", ""))
    return status in _PUSHBACK_STATUSES or error.endswith("Timeout") or error == "deadline"


def _quote_slug(slug: str) -> str:
    from urllib.parse import quote

    return quote(slug, safe="")
