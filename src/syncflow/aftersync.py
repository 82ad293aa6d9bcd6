"""Post-sync SQL: the user's ``after_sync_sql`` after an entity's run, or after a connector's runs.

The statement is the user's own SQL from the configuration file, sent
verbatim (no placeholders, no formatting): identifiers in it are the user's
responsibility, and no value from the source ever reaches it. It runs:

- only after a ``success`` run that changed at least one row (inserted,
  updated or deleted), or after every ``success`` with ``after_sync_when =
  "always"``;
- in its own transaction, after the run's own transaction committed, so a
  failing statement never takes the loaded rows with it;
- on a connection that carries ``statement_timeout_seconds`` and
  ``lock_timeout_seconds``, watched for signals (SIGTERM cancels it).

Its outcome is recorded on the run, under ``error_details.after_sync.entity``
or ``error_details.after_sync.connector``: ``{"status": "ok" | "failed" |
"skipped", ...}``. A failure leaves the run ``success`` (its data is in and
its checkpoint moved) and is reported by ``status`` and by the exit code.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from syncflow.records import RunResult
from syncflow.store import Conn

OK, FAILED, SKIPPED = "ok", "failed", "skipped"


@dataclass
class HookOutcome:
    """What one after-sync statement did."""

    scope: str  # "entity" or "connector"
    target: str  # the entity's ref or the connector's name
    status: str  # ok | failed | skipped
    error: str | None = None
    sqlstate: str | None = None
    seconds: float = 0.0
    reason: str | None = None  # why it was skipped

    @property
    def label(self) -> str:
        return f"after_sync_sql of {'connector ' if self.scope == 'connector' else ''}{self.target}"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"status": self.status}
        if self.status != SKIPPED:
            data["seconds"] = round(self.seconds, 3)
        for key in ("error", "sqlstate", "reason"):
            value = getattr(self, key)
            if value is not None:
                data[key] = value
        return data


def changed(result: RunResult) -> bool:
    """Whether the run inserted, updated or (soft-)deleted a row."""
    c = result.counts
    return c.inserted + c.updated + c.deleted > 0


def qualifies(result: RunResult, when: str) -> bool:
    """Whether the run calls for the after-sync statement: a success that changed a row, or ``always``."""
    return result.status == "success" and (when == "always" or changed(result))


def execute(
    conn: Conn, statement: str, *, scope: str, target: str, cancel: threading.Event | None = None
) -> HookOutcome:
    """Run the statement in a transaction of its own; a database error is the outcome, never raised."""
    started = time.monotonic()
    try:
        with conn.transaction():
            # The user's statement from the file, verbatim: SQL() without format() adds nothing to it,
            # and with no parameters psycopg interprets no placeholders ('%' and '{}' reach PostgreSQL).
            conn.execute(sql.SQL(statement))
    except psycopg.Error as exc:
        seconds = time.monotonic() - started
        if cancel is not None and cancel.is_set() and isinstance(exc, psycopg.errors.QueryCanceled):
            error = "cancelled by a signal"
        else:
            lines = str(exc).strip().splitlines()
            error = lines[0] if lines else type(exc).__name__
        outcome = HookOutcome(scope, target, FAILED, error=error, sqlstate=exc.sqlstate, seconds=seconds)
        return outcome
    return HookOutcome(scope, target, OK, seconds=time.monotonic() - started)


def skipped(scope: str, target: str, reason: str) -> HookOutcome:
    return HookOutcome(scope, target, SKIPPED, reason=reason)


def record(conn: Conn, schema: str, run_uids: list[str], outcome: HookOutcome) -> None:
    """Add the outcome to the runs' ``error_details.after_sync`` and commit."""
    if not run_uids:
        return
    conn.execute(
        sql.SQL(
            "UPDATE {} SET error_details = jsonb_set(coalesce(error_details, '{{}}'::jsonb), '{{after_sync}}',"
            " coalesce(error_details -> 'after_sync', '{{}}'::jsonb) || %s) WHERE uid = ANY(%s::uuid[])"
        ).format(sql.Identifier(schema, "sync_runs")),
        [Jsonb({outcome.scope: outcome.to_json()}), run_uids],
    )
    conn.commit()


def failure(details: Any) -> str | None:
    """The first failed after-sync statement in a run's ``error_details``, as a message; None when none failed."""
    hooks = details.get("after_sync") if isinstance(details, dict) else None
    if not isinstance(hooks, dict):
        return None
    for scope in ("entity", "connector"):
        hook = hooks.get(scope)
        if isinstance(hook, dict) and hook.get("status") == FAILED:
            where = "the connector's " if scope == "connector" else ""
            return f"{where}after_sync_sql failed in the last run: {str(hook.get('error') or '')[:200]}"
    return None
