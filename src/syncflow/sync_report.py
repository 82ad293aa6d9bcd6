"""What a sync call returns (``sync``, ``sync_all``, ``full_refresh``): a :class:`SyncReport` of one
:class:`EntityResult` per entity, each with its :class:`Run`.

Apart from :mod:`syncflow.results`, which re-exports them with the other results, so that a ``sync --all``
with nothing due does not build the dataclasses of every other command's results (issue 16: a frozen
dataclass costs about a millisecond to create at start-up).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from syncflow.errors import EXIT_CLAIMED, EXIT_FAILED, EXIT_SIGINT, EXIT_SIGTERM

if TYPE_CHECKING:  # the engine's types: importing the engine is for the commands that run it (issue 16)
    from syncflow.aftersync import HookOutcome
    from syncflow.records import RunResult
    from syncflow.workers import Outcome


@dataclass(frozen=True)
class RunCounts:
    """What a run counted; each fetched row counts once (see docs/correctness.md, "Counts")."""

    fetched: int
    inserted: int
    updated: int
    deleted: int
    rejected: int
    tombstones: int
    duplicates: int
    pages: int
    bytes: int
    unchanged: int


@dataclass(frozen=True)
class Run:
    """One run as the API returns it: a frozen copy of the engine's record of it."""

    uid: str
    entity: str
    kind: str
    status: str
    counts: RunCounts
    rowversion_start: str | None
    rowversion_end: str | None
    error_message: str | None
    error_details: Mapping[str, Any]
    warnings: tuple[str, ...]
    duration: float
    http_requests: int
    http_retries: int
    http_seconds: float
    http_throttled: int
    concurrency_max: int | None
    concurrency_avg: float | None
    in_flight_max: int | None
    after_sync: Mapping[str, Mapping[str, Any]]
    _json: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)
    # A resumed first load: the dead run it continued, and the rows loaded before it began.
    resumed_from: str | None = None
    resumed_at_rows: int | None = None

    @classmethod
    def of(cls, r: RunResult) -> Run:
        c = r.counts
        counts = RunCounts(
            c.fetched,
            c.inserted,
            c.updated,
            c.deleted,
            c.rejected,
            c.tombstones,
            c.duplicates,
            c.pages,
            c.bytes,
            c.unchanged,
        )
        return cls(
            uid=r.uid,
            entity=r.entity,
            kind=r.kind,
            status=r.status,
            counts=counts,
            rowversion_start=r.rowversion_start,
            rowversion_end=r.rowversion_end,
            error_message=r.error_message,
            error_details=MappingProxyType(copy.deepcopy(r.error_details)),
            warnings=tuple(r.warnings),
            duration=r.duration,
            http_requests=r.http_requests,
            http_retries=r.http_retries,
            http_seconds=r.http_seconds,
            http_throttled=r.http_throttled,
            concurrency_max=r.concurrency_max,
            concurrency_avg=r.concurrency_avg,
            in_flight_max=r.in_flight_max,
            after_sync=MappingProxyType(copy.deepcopy(r.after_sync)),
            _json=MappingProxyType(r.to_json()),
            resumed_from=r.resumed_from,
            resumed_at_rows=r.resumed_at_rows,
        )

    @property
    def after_sync_failed(self) -> bool:
        return any(h.get("status") == "failed" for h in self.after_sync.values())

    def to_json(self) -> dict[str, Any]:
        """The object ``sync --json`` prints for this run."""
        return copy.deepcopy(dict(self._json))


@dataclass(frozen=True)
class EntityResult:
    """One entity's result in a sync call: its run, or why there was none."""

    entity: str
    result: Run | None = None
    skipped: str | None = None
    held_elsewhere: bool = False
    error: str | None = None
    busy: bool = False

    @classmethod
    def of(cls, o: Outcome) -> EntityResult:
        return cls(
            entity=o.entity,
            result=Run.of(o.result) if o.result is not None else None,
            skipped=o.skipped,
            held_elsewhere=o.held_elsewhere,
            error=o.error,
            busy=o.busy,
        )

    def to_json(self) -> dict[str, Any]:
        from syncflow.workers import outcome_document

        return outcome_document(self.entity, self.result.to_json() if self.result else None, self.error, self.skipped)


@dataclass(frozen=True)
class SyncReport:
    """What one ``sync`` / ``sync_all`` / ``full_refresh`` call did."""

    outcomes: tuple[EntityResult, ...] = ()
    # Each connector's after_sync_sql, run once after its entities (entities' own ones are on their runs).
    after_sync: tuple[HookOutcome, ...] = ()
    # The signal (SIGTERM, SIGINT) that stopped the call, if one did.
    signal: int | None = None
    # Metrics that could not be written or pushed: warnings, never a failure.
    warnings: tuple[str, ...] = ()
    # The configuration's entity tables that name no discovered entity (a typo), never a failure.
    notes: tuple[str, ...] = ()
    # Entities named one by one (not ``sync_all``): one held by another process is worth exit 75.
    explicit: bool = False
    # Stopped by the caller's cancel event (or a signal) before or while entities ran.
    cancelled: bool = False

    @property
    def runs(self) -> tuple[Run, ...]:
        return tuple(o.result for o in self.outcomes if o.result is not None)

    @property
    def nothing_due(self) -> bool:
        return not self.outcomes and self.signal is None and not self.cancelled

    @property
    def exit_code(self) -> int:
        """The command line's exit code for this result (README, "Exit codes")."""
        if self.signal is not None:
            return EXIT_SIGINT if self.signal == 2 else EXIT_SIGTERM
        if self.cancelled:
            return EXIT_SIGINT  # cancelled by the caller: like an interrupt
        if (
            any(r.status != "success" or r.after_sync_failed for r in self.runs)
            or any(o.error and not o.busy for o in self.outcomes)
            or any(h.status == "failed" for h in self.after_sync)
        ):
            return EXIT_FAILED
        if any(o.busy for o in self.outcomes):
            return EXIT_CLAIMED  # a lock held on SyncFlow's tables: nothing failed, try again later
        if self.explicit and any(o.held_elsewhere for o in self.outcomes):
            return EXIT_CLAIMED
        return 0

    def to_json(self) -> list[dict[str, Any]]:
        """One element per entity (a run, an entity that could not start, a skip), then the connectors' hooks."""
        return [o.to_json() for o in self.outcomes] + [
            {"connector": h.target, "after_sync": h.to_json()} for h in self.after_sync
        ]
