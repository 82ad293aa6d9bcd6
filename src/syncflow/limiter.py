"""How many requests one connector has in flight: adaptive (AIMD), shared by every thread of an invocation.

An ERP answers slower, or with 429/503, when it is pushed too hard, and it is
pushed by the sum of everything one invocation asks of it: every worker
thread, and every page one entity fetches ahead. So one limiter per
connector gates all of them (``Runtime.limiter``):

- at most ``limit`` requests in flight; ``limit`` starts at
  ``max_concurrent_requests``, is halved (multiplicative decrease) when the
  source pushes back (429, 503, 504, a timed-out request), at most once per
  round of requests that started after the previous cut, and grows by one
  per round of answered requests (additive increase) while latency holds
  (the recent mean at most twice the best recent mean), up to the maximum;
- a ``Retry-After`` sets a "not before" time that every thread of the
  connector waits for, not only the one that got it;
- ``max_requests_per_second`` (optional) spaces the starts of requests.

Every wait is bounded (a slot frees when a request ends, and each request has
its deadline; "not before" is at most the client's longest retry wait) and
wakes at least every 0.1 s to notice ``cancelled``.

Hand-written: the well-kept Python limiters fix a rate (pyrate-limiter,
limits) or limit asyncio tasks (aiolimiter, aimd-limiter); none adapts a
concurrency limit for threads, and their blocking waits cannot be ended by
our cancel event.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from syncflow.errors import Cancelled

POLL = 0.1  # how often a waiting thread looks at the cancel event
DECREASE = 0.5  # the factor of a cut
LATENCY_TOLERANCE = 2.0  # no increase while the recent mean latency is above this times the best one
SMOOTHING = 0.2  # weight of the newest latency in the recent mean
FORGET = 1.02  # the best mean drifts up this much per answer, so that it follows a slower source
MAX_NOT_BEFORE = 300.0  # seconds: the longest shared pause, as the client's longest retry wait


@dataclass
class Ticket:
    """One admitted request: when it started and what the limiter looked like then."""

    started: float
    limit: int
    in_flight: int


class ConnectorLimiter:
    """The requests in flight to one connector, for every thread of one invocation."""

    def __init__(
        self,
        connector: str,
        *,
        max_concurrent: int,
        max_per_second: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self.connector = connector
        self.max_concurrent = max_concurrent
        self.interval = 1.0 / max_per_second if max_per_second else 0.0
        self.clock = clock
        self.cond = threading.Condition()
        self.limit = float(max_concurrent)
        self.in_flight = 0
        self.not_before = 0.0  # no request starts before this (Retry-After), for everyone
        self.next_start = 0.0  # the earliest start the rate allows
        self.cut_at = float("-inf")  # when the limit was last cut: answers to older requests do not cut again
        self.recent: float | None = None  # mean latency of recent answers
        self.best: float | None = None  # the lowest recent mean, forgetting slowly
        self.answers = 0  # answers in a row, since the last change, with latency holding
        self.throttled = 0
        self.lowest = max_concurrent  # the lowest limit reached

    @property
    def current(self) -> int:
        """The effective limit: requests that may be in flight now."""
        return max(1, int(self.limit))

    def acquire(self, cancelled: Callable[[], bool]) -> Ticket:
        """Wait for a slot (and the shared "not before", and the rate); raises Cancelled when cancelled."""
        with self.cond:
            while True:
                if cancelled():
                    raise Cancelled(f"connector {self.connector}: cancelled by a signal")
                now = self.clock()
                if self.in_flight < self.current and now >= self.not_before:
                    break
                pause = self.not_before - now if now < self.not_before else POLL
                self.cond.wait(min(max(pause, 0.0), POLL))
            self.in_flight += 1
            start = max(now, self.next_start)
            self.next_start = start + self.interval
            ticket = Ticket(started=start, limit=self.current, in_flight=self.in_flight)
        try:
            self._sleep_until(start, cancelled)
        except BaseException:
            self._leave()
            raise
        return ticket

    def _sleep_until(self, when: float, cancelled: Callable[[], bool]) -> None:
        event = threading.Event()
        while True:
            if cancelled():
                raise Cancelled(f"connector {self.connector}: cancelled by a signal")
            left = when - self.clock()
            if left <= 0:
                return
            event.wait(min(left, POLL))

    def _leave(self) -> None:
        with self.cond:
            self.in_flight -= 1
            self.cond.notify_all()

    def release(self, ticket: Ticket, *, throttled: bool, latency: float | None, retry_after: float | None) -> bool:
        """The request ended: free its slot and adapt.

        ``throttled``: the source pushed back (429, 503, 504, a timeout): cut
        the limit. ``latency``: seconds of an answered request (None for a
        failure that says nothing about load). ``retry_after``: the source's
        wait, kept for every thread of the connector.

        Returns True for a push-back that the limit now corrects: the request
        was one of several in flight, admitted under a higher limit than the
        one now in force. Its failure is the limiter learning what the source
        bears (a burst at ``max_concurrent_requests`` against a source that
        bears two is cut in several rounds, each answering most requests 429),
        so the client does not hold it against the request's attempts.
        """
        with self.cond:
            self.in_flight -= 1
            now = self.clock()
            if retry_after is not None and retry_after > 0:
                self.not_before = max(self.not_before, now + min(retry_after, MAX_NOT_BEFORE))
            if throttled:
                self.throttled += 1
                if ticket.started >= self.cut_at:  # one cut per round: concurrent 429s are one signal
                    self.limit = max(1.0, self.limit * DECREASE)
                    self.answers = 0
                    self.cut_at = now
                    self.lowest = min(self.lowest, self.current)
            elif latency is not None:
                self._answered(latency)
            self.cond.notify_all()
            return throttled and ticket.in_flight > 1 and self.current < ticket.limit

    def _answered(self, latency: float) -> None:
        recent = latency if self.recent is None else (1 - SMOOTHING) * self.recent + SMOOTHING * latency
        self.recent = recent
        self.best = recent if self.best is None else min(recent, self.best * FORGET)
        if self.limit >= self.max_concurrent or recent > LATENCY_TOLERANCE * self.best:
            self.answers = 0
            return
        self.answers += 1
        if self.answers >= self.current:  # a round of answers at this limit: one more
            self.limit = min(float(self.max_concurrent), float(self.current + 1))
            self.answers = 0
