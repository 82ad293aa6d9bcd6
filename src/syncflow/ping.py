"""Run pings for dead-man's-switch monitors, in the healthchecks.io convention.

``GET {url}/start`` when an invocation starts its work, then one final ping:
``{url}`` on exit 0, ``{url}/fail`` on exit 1, ``{url}/{exit_code}`` on any
other code. The final ping is a ``POST`` with a short ``text/plain`` body
(healthchecks.io keeps it with the ping and shows it in its log): the exit
code, each entity's outcome and counts, and the first error line. Every
secret the invocation knows (the connectors' tokens) is blanked in it.

A ping never changes the exit code: its failure is a problem returned to the
caller (who logs it as a warning). Each ping is bounded: ``PING_ATTEMPTS``
attempts of at most ``PING_TIMEOUT`` seconds each, sent from a daemon thread
that the caller stops waiting for as soon as ``abort`` is set (a signal), so
SIGTERM still ends the process at once. The URL's path (healthchecks.io's
UUID, which lets anyone ping the check) never appears in a message.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from urllib.parse import urlsplit

PING_TIMEOUT = 5.0
PING_ATTEMPTS = 2
PAUSE_BETWEEN_ATTEMPTS = 0.5
MAX_BODY_CHARS = 10_000  # healthchecks.io keeps the first 100 kB; a summary needs far less
REDACTED = "[redacted]"


def describe(url: str) -> str:
    """``scheme://host[:port]`` of the URL: enough to find the server, without the check's UUID."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


def check_url(url: str) -> str:
    """Validate a ping URL (http/https, a host, no credentials); raises ValueError naming the problem."""
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise ValueError("credentials in ping_url are not allowed")  # never echo them
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host, e.g. https://hc-ping.com/<uuid>")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ValueError("invalid port in ping_url") from None
    return url


def path_for(exit_code: int) -> str:
    """The suffix of the final ping for an exit code."""
    if exit_code == 0:
        return ""
    if exit_code == 1:
        return "/fail"
    return f"/{exit_code}"


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every (non-empty) secret replaced by ``[redacted]``."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


class Pinger:
    """Sends the pings of one invocation to one URL."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = PING_TIMEOUT,
        attempts: int = PING_ATTEMPTS,
        secrets: Iterable[str] = (),
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.attempts = attempts
        self.secrets = list(secrets)

    def start(self, *, abort: threading.Event | None = None) -> str | None:
        """``GET {url}/start``; returns a problem to warn about, or None."""
        return self._send("GET", "/start", None, abort=abort, timeout=self.timeout, attempts=self.attempts)

    def finish(
        self,
        exit_code: int,
        body: str,
        *,
        abort: threading.Event | None = None,
        timeout: float | None = None,
        attempts: int | None = None,
    ) -> str | None:
        """``POST`` the final ping for ``exit_code`` with ``body`` (redacted, shortened)."""
        text = redact(body, self.secrets)
        if len(text) > MAX_BODY_CHARS:
            text = text[: MAX_BODY_CHARS - 1] + "…"
        return self._send(
            "POST",
            path_for(exit_code),
            text,
            abort=abort,
            timeout=self.timeout if timeout is None else timeout,
            attempts=self.attempts if attempts is None else attempts,
        )

    def _send(
        self,
        method: str,
        suffix: str,
        body: str | None,
        *,
        abort: threading.Event | None,
        timeout: float,
        attempts: int,
    ) -> str | None:
        import httpx  # here, not at the top: the configuration imports this module and most runs never ping

        where = f"ping to {describe(self.url)} ({suffix.lstrip('/') or 'success'})"
        problems: list[str] = []
        done = threading.Event()
        stop = threading.Event()

        def run() -> None:
            try:
                with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=True) as client:
                    for attempt in range(attempts):
                        if stop.is_set():
                            return
                        try:
                            resp = client.request(
                                method,
                                self.url + suffix,
                                content=body.encode("utf-8") if body is not None else None,
                                headers={"Content-Type": "text/plain; charset=utf-8"} if body is not None else None,
                            )
                        except httpx.HTTPError as exc:
                            problems.append(f"{where} failed: {type(exc).__name__}")
                        else:
                            if resp.status_code < 400:
                                problems.clear()
                                return
                            problems.append(f"{where} failed: HTTP {resp.status_code}")
                        if attempt + 1 < attempts and stop.wait(PAUSE_BETWEEN_ATTEMPTS):
                            return
            except Exception as exc:  # never let a ping take the invocation down
                problems.append(f"{where} failed: {type(exc).__name__}")
            finally:
                done.set()

        # A daemon thread: a ping still in flight when the process exits is simply dropped.
        threading.Thread(target=run, name="ping", daemon=True).start()
        # Each attempt's whole request is bounded here too (httpx bounds each socket operation only).
        deadline = time.monotonic() + attempts * (timeout + PAUSE_BETWEEN_ATTEMPTS) + 0.5
        while not done.wait(0.05):
            if abort is not None and abort.is_set():
                stop.set()
                return f"{where} abandoned: a signal arrived"
            if time.monotonic() > deadline:
                stop.set()
                return f"{where} failed: no answer within {timeout:g}s"
        return problems[-1] if problems else None
