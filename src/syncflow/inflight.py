"""Sync workers' connections while a run uses them, so that a signal can cancel their queries.

A worker blocked in PostgreSQL (a table lock held by someone else, a long
COPY or merge) does not look at the cancel event until the statement ends,
which can take as long as ``lock_timeout_seconds``. The main thread, which
receives SIGINT/SIGTERM, therefore asks PostgreSQL to cancel whatever the
registered connections are running (``cancel_safe``, from its own thread).

Once a run records its outcome it stands down: from then on its connection
is not interrupted, so the ``cancelled`` record and the claim's release get
through.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import psycopg

from syncflow.store import Conn

_lock = threading.Lock()
_watched: dict[int, tuple[Conn, threading.Event]] = {}
# A cancel request is a short local round trip; bounded so a dead server cannot hold the main thread.
CANCEL_TIMEOUT = 3.0


@contextmanager
def watching(conn: Conn, cancel: threading.Event) -> Iterator[None]:
    """While the block runs, a set ``cancel`` event interrupts ``conn``'s queries."""
    me = threading.get_ident()
    with _lock:
        _watched[me] = (conn, cancel)
    try:
        yield
    finally:
        with _lock:
            _watched.pop(me, None)


def stand_down() -> bool:
    """Stop interrupting this thread's connection; True when a cancel was asked for.

    Holding the lock means no cancel request is being sent meanwhile.
    """
    with _lock:
        entry = _watched.pop(threading.get_ident(), None)
    return entry is not None and entry[1].is_set()


def interrupt(cancel: threading.Event) -> None:
    """Cancel the statements running on every connection watched for ``cancel``."""
    if not cancel.is_set():
        return
    with _lock:
        for conn, event in list(_watched.values()):
            if event is cancel and not conn.closed:
                with suppress(psycopg.Error, OSError):
                    conn.cancel_safe(timeout=CANCEL_TIMEOUT)
