"""Run pings (issue 17), the healthchecks.io convention: a local server records what each invocation sends.

``GET {url}/start`` when the invocation starts work; then ``POST {url}`` on
exit 0, ``{url}/fail`` on exit 1, ``{url}/{code}`` otherwise, with a short
text body. A ping never changes the exit code, is bounded, and a signal still
ends the process quickly.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from syncflow import ping
from tests.helpers import DEMO_TOKEN, Cli, spawn, wait_for


class Recorder:
    """A local HTTP server that records (method, path, body); ``hang`` makes it answer nothing for a while."""

    def __init__(self) -> None:
        self.pings: list[tuple[str, str, str]] = []
        self.hang = threading.Event()
        self.release = threading.Event()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
                recorder.pings.append((self.command, self.path, body))
                if recorder.hang.is_set():
                    recorder.release.wait(30)  # bounded: the test's own server never hangs a run forever
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            def do_GET(self) -> None:
                self._handle()

            def do_POST(self) -> None:
                self._handle()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/ping/5f1c-uuid"

    def paths(self) -> list[tuple[str, str]]:
        return [(m, p) for m, p, _ in self.pings]

    def final_body(self) -> str:
        return self.pings[-1][2]


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    r = Recorder()
    r.thread.start()
    yield r
    r.release.set()
    r.server.shutdown()
    r.server.server_close()


@pytest.fixture
def synced(demo_cli: Cli) -> Cli:
    r = demo_cli("discover")
    assert r.exit_code == 0, r.stderr
    return demo_cli


def notify(cli: Cli, url: str) -> None:
    cli.config.write_text(cli.config.read_text() + f'\n[notify]\nping_url = "{url}"\n')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_successful_sync_pings_start_then_success_with_a_summary(synced: Cli, recorder: Recorder) -> None:
    notify(synced, recorder.url)
    r = synced("sync", "erp.items", "erp.orders")
    assert r.exit_code == 0, r.stderr
    assert recorder.paths() == [("GET", "/ping/5f1c-uuid/start"), ("POST", "/ping/5f1c-uuid")]
    body = recorder.final_body()
    assert body.splitlines()[0] == "syncflow sync: exit 0"
    assert "success erp.items: 120 fetched, 120 inserted" in body
    assert "success erp.orders: 40 fetched, 40 inserted" in body


def test_a_failed_run_pings_fail_with_the_first_error_line(synced: Cli, demo: Any, recorder: Recorder) -> None:
    notify(synced, recorder.url)
    demo.state.fail_next(401)
    r = synced("sync", "erp.orders")
    assert r.exit_code == 1
    assert recorder.paths() == [("GET", "/ping/5f1c-uuid/start"), ("POST", "/ping/5f1c-uuid/fail")]
    body = recorder.final_body()
    assert body.splitlines()[0] == "syncflow sync: exit 1"
    assert "failed erp.orders" in body
    assert "refused the token (HTTP 401)" in body


def test_other_exit_codes_are_pinged_as_the_code(synced: Cli, recorder: Recorder) -> None:
    r = synced("sync", "erp.no_such_entity", env={"SYNCFLOW_PING_URL": recorder.url})
    assert r.exit_code == 2
    assert recorder.paths()[-1] == ("POST", "/ping/5f1c-uuid/2")
    assert "no entity 'erp.no_such_entity'" in recorder.final_body()


def test_a_configuration_error_is_pinged_when_the_url_comes_from_the_environment(cli: Cli, recorder: Recorder) -> None:
    cli.config.write_text("[sync]\nworkers = 0\n")
    r = cli("sync", "--all", env={"SYNCFLOW_PING_URL": recorder.url})
    assert r.exit_code == 2
    assert recorder.paths() == [("POST", "/ping/5f1c-uuid/2")]
    assert "sync.workers" in recorder.final_body()


def test_ping_url_option_wins_and_every_sync_command_pings(synced: Cli, recorder: Recorder) -> None:
    notify(synced, "http://127.0.0.1:9/never-used")
    for args in (("sync", "--all"), ("full-refresh", "erp.customers"), ("sync", "--all")):
        recorder.pings.clear()
        r = synced(*args, "--ping-url", recorder.url)
        assert r.exit_code == 0, r.stderr
        assert recorder.paths() == [("GET", "/ping/5f1c-uuid/start"), ("POST", "/ping/5f1c-uuid")], args
    assert "nothing was due" in recorder.final_body()  # the last --all found nothing due


def test_an_unreachable_ping_server_does_not_change_the_exit_code(synced: Cli, demo: Any) -> None:
    url = f"http://127.0.0.1:{free_port()}/ping/5f1c-uuid"
    started = time.monotonic()
    r = synced("sync", "erp.items", "--ping-url", url)
    assert r.exit_code == 0
    assert "warning: ping to http://127.0.0.1" in r.stderr
    assert "5f1c-uuid" not in r.stderr  # the URL's secret part is never logged
    demo.state.fail_next(401)
    assert synced("sync", "erp.orders", "--ping-url", url).exit_code == 1
    assert time.monotonic() - started < 30


def test_the_token_never_reaches_a_ping_body(synced: Cli, demo: Any, recorder: Recorder) -> None:
    notify(synced, recorder.url)
    demo.state.fail_next(200, body=f"<html>debug: Authorization: Bearer {DEMO_TOKEN}</html>".encode())
    assert synced("sync", "erp.orders").exit_code == 1
    assert recorder.paths()[-1] == ("POST", "/ping/5f1c-uuid/fail")
    for _, _, body in recorder.pings:
        assert DEMO_TOKEN not in body
    assert "not JSON" in recorder.final_body()


def test_redact_blanks_every_secret() -> None:
    text = f"erp: error Bearer {DEMO_TOKEN} and again {DEMO_TOKEN}"
    assert ping.redact(text, [DEMO_TOKEN, ""]) == "erp: error Bearer [redacted] and again [redacted]"


def test_a_ping_is_bounded_even_when_the_server_never_answers(recorder: Recorder) -> None:
    recorder.hang.set()
    pinger = ping.Pinger(recorder.url, timeout=0.3, attempts=2)
    started = time.monotonic()
    problem = pinger.start()
    took = time.monotonic() - started
    assert problem is not None
    assert "ping to http://127.0.0.1" in problem
    assert "5f1c-uuid" not in problem
    assert took < 2.0
    assert len(recorder.pings) == 2  # two attempts


def test_an_abort_ends_a_ping_at_once(recorder: Recorder) -> None:
    recorder.hang.set()
    abort = threading.Event()
    threading.Timer(0.3, abort.set).start()
    started = time.monotonic()
    assert ping.Pinger(recorder.url).start(abort=abort) is not None
    assert time.monotonic() - started < 1.5


def test_sigterm_while_a_ping_hangs_still_ends_the_process_quickly(synced: Cli, recorder: Recorder) -> None:
    recorder.hang.set()
    proc = spawn(synced, "sync", "--all", "--ping-url", recorder.url)
    try:
        wait_for(lambda: len(recorder.pings) >= 1)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 143
    assert took < 5
    assert recorder.paths()[0] == ("GET", "/ping/5f1c-uuid/start")
    assert ("POST", "/ping/5f1c-uuid/143") in recorder.paths()  # one short try to report the signal


def test_ping_url_with_credentials_is_refused(synced: Cli) -> None:
    r = synced("sync", "--all", "--ping-url", "https://user:secretpw@hc-ping.com/uuid")
    assert r.exit_code == 2
    assert "secretpw" not in r.stderr
    assert "credentials" in r.stderr
