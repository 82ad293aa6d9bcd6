"""The APISmith HTTP client: httpx underneath, tenacity for retries.

This is the boundary where httpx's exceptions and HTTP statuses become the
:class:`SourceError` tree (protocol section 3). Only errors marked transient
are retried. The token goes in the ``Authorization`` header and nowhere else:
no message, URL or detail built here contains it.
"""

from __future__ import annotations

import email.utils
import random
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
)

from syncflow.errors import (
    SourceAuthError,
    SourceError,
    SourceNotFound,
    SourceProtocolError,
    SourceTransientError,
    SourceUnreachable,
)

APIS_PATH = "/api/v1/apis"
DATA_PATH = "/api/v1/data/{slug}"
BODY_PREVIEW_BYTES = 200
_TRANSIENT_STATUSES = frozenset({500, 502, 503, 504})
_MAX_RETRY_AFTER = 300.0


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
        return min(max(float(value), 0.0), _MAX_RETRY_AFTER)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return min(max(when.timestamp() - current, 0.0), _MAX_RETRY_AFTER)


@dataclass
class ClientStats:
    """What the client did, for run records and metrics."""

    requests: int = 0
    retries: int = 0
    bytes: int = 0
    seconds: float = 0.0


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
    sleep: Callable[[float], None] = time.sleep
    stats: ClientStats = field(default_factory=ClientStats)

    def __post_init__(self) -> None:
        self._own_http = self.http is None
        if self.http is None:
            verify: bool | ssl.SSLContext = True
            if isinstance(self.verify, str):
                try:
                    verify = ssl.create_default_context(cafile=self.verify)
                except (OSError, ssl.SSLError) as exc:
                    raise SourceUnreachable(
                        f"connector {self.connector}: cannot load CA bundle {self.verify}: {exc}"
                    ) from None
            else:
                verify = self.verify
            self.http = httpx.Client(
                base_url=self.base_url,
                timeout=self.timeout,
                verify=verify,
                headers={"Accept": "application/json", "User-Agent": "syncflow"},
            )

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
                return exc.retry_after
            base = self.backoff * (2 ** (state.attempt_number - 1))
            return float(base + random.uniform(0, self.backoff))  # noqa: S311 - jitter, not crypto

        def before_sleep(state: RetryCallState) -> None:
            self.stats.retries += 1

        retrying = Retrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait,
            retry=retry_if_exception(lambda e: isinstance(e, SourceError) and e.transient),
            before_sleep=before_sleep,
            sleep=self.sleep,
            reraise=True,
        )
        result: Response = retrying(self._get_once, path, params)
        return result

    def _get_once(self, path: str, params: Mapping[str, str | int] | None) -> Response:
        assert self.http is not None
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        url = self.http.build_request("GET", path, params=params).url
        shown = safe_url(url)
        self.stats.requests += 1
        started = time.monotonic()
        try:
            resp = self.http.get(path, params=params, headers=headers)
            body = resp.content
        except httpx.TimeoutException as exc:
            raise SourceTransientError(
                f"connector {self.connector}: timed out after {self.timeout:g} s ({shown})",
                details={"url": shown, "error": type(exc).__name__},
            ) from None
        except httpx.ConnectError as exc:
            cause = _ssl_cause(exc)
            if cause is not None:
                raise SourceUnreachable(
                    f"connector {self.connector}: TLS error talking to {shown}: "
                    f"{getattr(cause, 'reason', None) or cause}",
                    details={"url": shown, "error": "tls"},
                ) from None
            raise SourceTransientError(
                f"connector {self.connector}: cannot connect to {shown}: {exc}",
                details={"url": shown, "error": type(exc).__name__},
            ) from None
        except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            raise SourceTransientError(
                f"connector {self.connector}: connection failed during {shown}: {exc}",
                details={"url": shown, "error": type(exc).__name__},
            ) from None
        except httpx.HTTPError as exc:
            raise SourceError(
                f"connector {self.connector}: HTTP error during {shown}: {exc}",
                details={"url": shown, "error": type(exc).__name__},
            ) from None
        elapsed = time.monotonic() - started
        self.stats.seconds += elapsed
        self.stats.bytes += len(body)
        self._check_status(resp, body, shown)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise SourceProtocolError(
                f"connector {self.connector}: {shown} returned a body that is not JSON "
                f"(content-type {resp.headers.get('content-type', '?')}): {body_preview(body)!r}",
                details={"url": shown, "status": resp.status_code, "body": body_preview(body)},
            ) from None
        return Response(data=data, nbytes=len(body), url=shown, elapsed=elapsed, preview=body_preview(body))

    def _check_status(self, resp: httpx.Response, body: bytes, shown: str) -> None:
        status = resp.status_code
        if 200 <= status < 300:
            return
        details = {"url": shown, "status": status, "body": body_preview(body)}
        if status in (401, 403):
            raise SourceAuthError(
                f"connector {self.connector}: APISmith refused the token (HTTP {status}) for "
                f"{shown}; check the variable named by token_env",
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


def _quote_slug(slug: str) -> str:
    from urllib.parse import quote

    return quote(slug, safe="")
