"""One translation boundary: every upstream error SyncFlow handles maps to one SyncFlowError and exit code.

In the manner of httpx's tests/test_exceptions.py: the table below is the
contract; a new handled error type gets a row.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from syncflow import db, errors
from syncflow.api import exit_status
from syncflow.stage import Stage
from tests.helpers import Cli


def _all_subclasses(cls: type[errors.SyncFlowError]) -> list[type[errors.SyncFlowError]]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_all_subclasses(sub)]
    return found


@pytest.mark.parametrize(
    ("exc", "expected", "code"),
    [
        (psycopg.errors.LockNotAvailable("lock timeout"), db.DatabaseBusy, 75),
        (psycopg.errors.QueryCanceled("canceling statement due to statement timeout"), db.DatabaseBusy, 75),
        (psycopg.errors.QueryCanceled("canceling statement due to user request"), errors.DatabaseError, 2),
        (psycopg.OperationalError("connection refused"), errors.DatabaseUnreachable, 2),
        (psycopg.errors.ConnectionFailure("server closed the connection"), errors.DatabaseUnreachable, 2),
        (psycopg.errors.AdminShutdown("terminating connection"), errors.DatabaseError, 2),
        (psycopg.errors.InsufficientPrivilege("permission denied for schema bridge"), errors.DatabaseError, 2),
        (psycopg.errors.UndefinedTable('relation "bridge.entities" does not exist'), errors.DatabaseError, 2),
        (
            psycopg.errors.ReadOnlySqlTransaction("cannot execute INSERT in a read-only transaction"),
            errors.DatabaseError,
            2,
        ),
    ],
)
def test_database_errors_translate_once(exc: psycopg.Error, expected: type[errors.DatabaseError], code: int) -> None:
    got = db.translate(exc, "status")
    assert type(got) is expected
    assert got.exit_code == code
    assert str(got).startswith("status: ")
    assert exit_status(exc) == (code, [str(db.translate(exc, "database error"))])


@pytest.mark.parametrize("cls", _all_subclasses(errors.SyncFlowError), ids=lambda c: c.__name__)
def test_every_syncflow_error_exits_with_its_own_code(cls: type[errors.SyncFlowError]) -> None:
    exc = cls("what went wrong\nand a second line")
    assert exit_status(exc) == (cls.exit_code, ["what went wrong", "and a second line"])
    assert cls.exit_code in (errors.EXIT_FAILED, errors.EXIT_USAGE, errors.EXIT_CLAIMED, errors.EXIT_SIGINT)


def test_interrupts_and_bugs() -> None:
    assert exit_status(KeyboardInterrupt()) == (130, ["interrupted"])
    assert exit_status(KeyError("x")) is None  # a bug: it keeps its traceback


def test_a_bug_in_a_command_keeps_its_traceback(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("a programming error")

    monkeypatch.setattr("syncflow.api.SyncFlow.migrations", broken)
    with pytest.raises(KeyError, match="a programming error"):
        cli("db", "status")


def test_an_unexpected_error_in_a_run_is_recorded_with_its_traceback(
    demo_cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert demo_cli("discover").exit_code == 0

    def broken(self: Stage, *args: Any) -> Any:
        raise KeyError("boom")

    monkeypatch.setattr(Stage, "build", broken)
    r = demo_cli("sync", "erp.items", "--json")
    assert r.exit_code == 1
    run = json.loads(r.stdout)[0]
    assert run["status"] == "failed"
    assert run["error_message"] == "erp.items: unexpected error: KeyError: 'boom'"
    shown = json.loads(demo_cli("runs", "show", run["uid"], "--json").stdout)
    trace = shown["error_details"]["traceback"]
    assert "in broken" in trace
    assert "KeyError: 'boom'" in trace
