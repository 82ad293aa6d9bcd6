"""The demo APISmith's latency and throttling modes (issue 16), which the benchmarks and the concurrency tests use.

A real APISmith answers a page in tens to hundreds of milliseconds and may
refuse requests above some concurrency with ``429`` and ``Retry-After``; the
demo server can do both: ``latency_ms`` (+/- ``jitter_ms``) per data page, and
``max_concurrent`` data requests in flight before it answers ``429``.
"""

from __future__ import annotations

import threading
import time

import httpx

from demo_apismith import DemoServer, DemoState, build_parser, state_from_args
from tests.helpers import wait_for


def test_latency_delays_data_pages_only() -> None:
    with DemoServer(DemoState({"items": 5}), latency_ms=150) as server, httpx.Client(base_url=server.url) as http:
        started = time.perf_counter()
        assert http.get("/api/v1/data/items").status_code == 200
        assert time.perf_counter() - started >= 0.15
        started = time.perf_counter()
        assert http.get("/api/v1/apis").status_code == 200
        # The metadata is not a data page: no delay (generous bound for a busy machine).
        assert time.perf_counter() - started < 0.15 + 1.0
        assert server.state.latency_ms == 150


def test_jitter_spreads_the_delay_around_the_latency_reproducibly() -> None:
    state = DemoState({}, latency_ms=50, jitter_ms=20, seed=7)
    delays = [state.page_delay() for _ in range(200)]
    assert all(0.030 <= d <= 0.070 for d in delays)
    assert len(set(delays)) > 100  # spread, not one value
    again = DemoState({}, latency_ms=50, jitter_ms=20, seed=7)
    assert [again.page_delay() for _ in range(200)] == delays  # the same seed, the same delays
    assert DemoState({}, latency_ms=5, jitter_ms=20).page_delay() >= 0  # never negative
    assert DemoState({}).page_delay() == 0


def test_jitter_does_not_change_the_data() -> None:
    plain, jittered = DemoState({"items": 30}), DemoState({"items": 30}, latency_ms=1, jitter_ms=1)
    jittered.page_delay()
    assert plain.snapshot("items") == jittered.snapshot("items")
    plain.update("items", 3)
    jittered.update("items", 3)
    assert plain.snapshot("items") == jittered.snapshot("items")


def test_above_max_concurrent_data_requests_the_server_answers_429_with_retry_after() -> None:
    state = DemoState({"items": 5}, max_concurrent=2, retry_after=0.5)
    gate = threading.Event()

    def hold(slug: str, page: int, params: dict[str, str]) -> None:
        gate.wait(30)  # the first two stay in flight until the third has been refused

    state.before_page = hold
    answers: list[int] = []
    with DemoServer(state) as server:

        def fetch() -> None:
            with httpx.Client(base_url=server.url, timeout=60) as http:
                answers.append(http.get("/api/v1/data/items").status_code)

        holders = [threading.Thread(target=fetch) for _ in range(2)]
        for t in holders:
            t.start()
        wait_for(lambda: state.in_flight == 2)
        with httpx.Client(base_url=server.url, timeout=60) as http:
            refused = http.get("/api/v1/data/items")
            assert http.get("/api/v1/apis").status_code == 200  # the metadata is not a data request
        assert refused.status_code == 429
        assert refused.headers["Retry-After"] == "0.5"
        assert state.throttled == 1
        gate.set()
        for t in holders:
            t.join(30)
        assert answers == [200, 200]
        assert state.in_flight == 0
        assert state.peak_in_flight == 2  # the refused request never counted as in flight
        with httpx.Client(base_url=server.url, timeout=60) as http:
            assert http.get("/api/v1/data/items").status_code == 200


def test_the_command_line_sets_the_modes() -> None:
    args = build_parser().parse_args(
        ["--rows", "items=3", "--latency-ms", "50", "--jitter-ms", "10", "--max-concurrent", "4", "--retry-after", "2"]
    )
    state = state_from_args(args)
    assert (state.latency_ms, state.jitter_ms, state.max_concurrent, state.retry_after) == (50, 10, 4, 2)
    assert len(state.snapshot("items")) == 3
    defaults = state_from_args(build_parser().parse_args([]))
    assert (defaults.latency_ms, defaults.jitter_ms, defaults.max_concurrent) == (0, 0, None)


def test_the_modes_change_between_runs_over_http() -> None:
    with DemoServer(DemoState({"items": 5})) as server, httpx.Client(base_url=server.url) as http:
        answer = http.post("/_demo/settings", params={"latency_ms": 20, "jitter_ms": 5, "max_concurrent": 3})
        assert answer.status_code == 200
        assert answer.json()["latency_ms"] == 20
        assert (server.state.latency_ms, server.state.jitter_ms, server.state.max_concurrent) == (20, 5, 3)
        assert http.post("/_demo/settings", params={"max_concurrent": 0}).json()["max_concurrent"] is None
        assert http.post("/_demo/settings", params={"latency_ms": "soon"}).status_code == 400
