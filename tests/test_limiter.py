"""The connector limiter alone: AIMD, the shared Retry-After, the rate, cancellable waits."""

from __future__ import annotations

import threading
import time

import pytest

from syncflow.errors import Cancelled
from syncflow.limiter import ConnectorLimiter


def never() -> bool:
    return False


def test_no_more_requests_in_flight_than_the_limit() -> None:
    lim = ConnectorLimiter("erp", max_concurrent=2)
    a, b = lim.acquire(never), lim.acquire(never)
    got: list[int] = []
    waiter = threading.Thread(target=lambda: got.append(lim.acquire(never).in_flight))
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive()
    assert not got
    lim.release(a, throttled=False, latency=0.01, retry_after=None)
    waiter.join(5)
    assert got == [2]
    assert (a.limit, b.in_flight) == (2, 2)


def test_pushback_halves_the_limit_once_per_round() -> None:
    lim = ConnectorLimiter("erp", max_concurrent=8)
    tickets = [lim.acquire(never) for _ in range(8)]
    for t in tickets:  # eight 429s to requests that were all in flight together: one signal
        lim.release(t, throttled=True, latency=None, retry_after=None)
    assert (lim.current, lim.throttled) == (4, 8)
    later = lim.acquire(never)  # started after the cut: its 429 cuts again
    lim.release(later, throttled=True, latency=None, retry_after=None)
    assert lim.current == 2
    for _ in range(3):
        lim.release(lim.acquire(never), throttled=True, latency=None, retry_after=None)
    assert (lim.current, lim.lowest) == (1, 1)  # never below one


def test_a_pushback_the_cut_corrects_is_forgiven_a_lone_one_is_not() -> None:
    """release() says which push-backs the client need not count as an attempt: one of several requests in
    flight, admitted under a limit higher than the one now in force."""
    lim = ConnectorLimiter("erp", max_concurrent=8)
    tickets = [lim.acquire(never) for _ in range(8)]
    said = [lim.release(t, throttled=True, latency=None, retry_after=None) for t in tickets]
    assert said == [False] + [True] * 7  # the first was alone when admitted
    assert lim.current == 4
    lone = lim.acquire(never)
    assert lim.release(lone, throttled=True, latency=None, retry_after=None) is False  # alone: the source's limit
    pair = [lim.acquire(never), lim.acquire(never)]  # limit 2 after that cut
    assert lim.release(pair[1], throttled=True, latency=None, retry_after=None) is True  # 2 -> 1
    assert lim.release(pair[0], throttled=False, latency=0.01, retry_after=None) is False
    at_one = lim.acquire(never)
    assert lim.release(at_one, throttled=True, latency=None, retry_after=None) is False  # nothing left to learn


def test_answers_raise_the_limit_by_one_per_round_while_latency_holds() -> None:
    lim = ConnectorLimiter("erp", max_concurrent=4)
    lim.release(lim.acquire(never), throttled=True, latency=None, retry_after=None)
    assert lim.current == 2
    for _ in range(2):  # a round at limit 2: two answers
        lim.release(lim.acquire(never), throttled=False, latency=0.05, retry_after=None)
    assert lim.current == 3
    for _ in range(20):
        lim.release(lim.acquire(never), throttled=False, latency=0.05, retry_after=None)
    assert lim.current == 4  # the maximum, not beyond


def test_rising_latency_holds_the_limit() -> None:
    lim = ConnectorLimiter("erp", max_concurrent=8)
    for _ in range(5):
        lim.release(lim.acquire(never), throttled=False, latency=0.01, retry_after=None)
    lim.release(lim.acquire(never), throttled=True, latency=None, retry_after=None)
    assert lim.current == 4
    for _ in range(30):  # ten times slower: the source is struggling, no increase
        lim.release(lim.acquire(never), throttled=False, latency=0.1, retry_after=None)
    assert lim.current == 4


def test_retry_after_holds_every_thread_of_the_connector() -> None:
    lim = ConnectorLimiter("erp", max_concurrent=4)
    lim.release(lim.acquire(never), throttled=True, latency=None, retry_after=0.4)
    started = time.monotonic()
    lim.acquire(never)  # another thread's request: not before the Retry-After
    assert time.monotonic() - started >= 0.35


def test_waits_end_on_cancel() -> None:
    lim = ConnectorLimiter("erp", max_concurrent=1)
    lim.acquire(never)
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    with pytest.raises(Cancelled, match="erp"):
        lim.acquire(cancel.is_set)  # no slot will free: only the cancel ends the wait
    assert lim.in_flight == 1  # the cancelled request took no slot


def test_a_long_retry_after_ends_on_cancel() -> None:
    lim = ConnectorLimiter("erp", max_concurrent=2)
    lim.release(lim.acquire(never), throttled=True, latency=None, retry_after=60)
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(Cancelled):
        lim.acquire(cancel.is_set)
    assert time.monotonic() - started < 5
    assert lim.in_flight == 0


def test_the_rate_spaces_the_starts() -> None:
    lim = ConnectorLimiter("erp", max_concurrent=4, max_per_second=20)
    starts = [lim.acquire(never).started for _ in range(3)]
    assert starts[1] - starts[0] == pytest.approx(0.05)
    assert starts[2] - starts[1] == pytest.approx(0.05)


def test_a_cancelled_rate_wait_frees_its_slot() -> None:
    lim = ConnectorLimiter("erp", max_concurrent=4, max_per_second=0.1)
    lim.acquire(never)  # the next start is 10 s away
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    with pytest.raises(Cancelled):
        lim.acquire(cancel.is_set)
    assert lim.in_flight == 1


def test_the_maximum_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ConnectorLimiter("erp", max_concurrent=0)
