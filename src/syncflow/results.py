"""What the Python API returns: frozen, typed results (no dicts indexed by string).

Each has ``to_json()`` giving the document the CLI prints with ``--json``,
so the API and the command line describe a result the same way. Times are
timezone-aware ``datetime`` objects; ``to_json()`` writes them in ISO 8601.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from syncflow.errors import EXIT_CLAIMED, EXIT_FAILED, EXIT_SIGINT, EXIT_SIGTERM

if TYPE_CHECKING:  # the engine's types: importing the engine is for the commands that run it (issue 16)
    from syncflow.aftersync import HookOutcome
    from syncflow.discovery import DiscoveryReport
    from syncflow.records import RunResult
    from syncflow.workers import Outcome


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _when(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


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


@dataclass(frozen=True)
class ConnectorFailure:
    """A connector discovery could not read (unreachable, wrong token, bad metadata)."""

    connector: str
    error: str
    exit_code: int


@dataclass(frozen=True)
class DiscoverResult:
    """What one ``discover`` call found and did, per connector."""

    reports: tuple[DiscoveryReport, ...]
    failures: tuple[ConnectorFailure, ...] = ()
    connectors: tuple[str, ...] = ()

    @property
    def exit_code(self) -> int:
        entity_failed = any(r.rejected or any(o.error for o in r.outcomes) for r in self.reports)
        if self.failures and len(self.connectors) == 1 and not entity_failed:
            return self.failures[0].exit_code
        if self.failures or entity_failed:
            return EXIT_FAILED
        if any(r.refused for r in self.reports):
            return EXIT_CLAIMED
        return 0

    def to_json(self) -> list[dict[str, Any]]:
        """One object per connector, in the order asked; a failed connector with its error."""
        by_name: dict[str, dict[str, Any]] = {r.connector: {**r.to_json(), "error": None} for r in self.reports}
        by_name.update({f.connector: {"connector": f.connector, "error": f.error} for f in self.failures})
        return [by_name[c] for c in self.connectors if c in by_name]


@dataclass(frozen=True)
class EntitySettings:
    """An entity's effective settings after ``set_entity``, and the requested changes the file overrode."""

    entity: str
    interval_seconds: int
    enabled: bool
    page_size: int
    history: bool
    overridden_by_file: tuple[str, ...]
    # Requested changes with no effect because the file sets the key: (key, the file's value).
    ignored: tuple[tuple[str, Any], ...] = ()
    config_path: str = ""


@dataclass(frozen=True)
class RejectedRow:
    business_key: Mapping[str, Any] | None
    column: str | None
    reason: str
    value: str | None

    def to_json(self) -> dict[str, Any]:
        return {"business_key": self.business_key, "column": self.column, "reason": self.reason, "value": self.value}


@dataclass(frozen=True)
class RunRecord:
    """One row of the run history (``runs``), with its rejects for ``run()``."""

    uid: str
    entity: str
    kind: str
    status: str
    started_at: datetime | None
    completed_at: datetime | None
    records_fetched: int
    records_inserted: int
    records_updated: int
    records_unchanged: int
    records_deleted: int
    records_rejected: int
    rowversion_start: str | None
    rowversion_end: str | None
    pages: int
    bytes: int
    duration_seconds: float | None
    error_message: str | None
    error_details: Mapping[str, Any] | None
    hostname: str | None
    pid: int | None
    http_requests: int | None = None
    http_retries: int | None = None
    http_seconds: float | None = None
    # A resumed first load: the dead run it continued, and the rows loaded before it began.
    resumed_from: str | None = None
    resumed_at_rows: int | None = None
    http_throttled: int | None = None
    concurrency_max: int | None = None
    concurrency_avg: float | None = None
    in_flight_max: int | None = None
    rejects: tuple[RejectedRow, ...] | None = None

    @property
    def resumed(self) -> str | None:
        """``resumed from run X at N rows``, or None for a run that started from the beginning."""
        if self.resumed_from is None:
            return None
        return f"resumed from run {self.resumed_from[:8]} at {self.resumed_at_rows or 0} rows"

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> RunRecord:
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in row.items() if k in known}
        data["started_at"], data["completed_at"] = _when(row.get("started_at")), _when(row.get("completed_at"))
        if row.get("rejects") is not None:
            data["rejects"] = tuple(RejectedRow(**r) for r in row["rejects"])
        return cls(**data)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "rejects":
                if value is not None:
                    out["rejects"] = [r.to_json() for r in value]
            elif isinstance(value, datetime):
                out[f.name] = value.isoformat()
            else:
                out[f.name] = value
        return out


@dataclass(frozen=True)
class EntityHealth:
    """One entity's line of ``status``."""

    entity: str
    strategy: str
    enabled: bool
    last_run_status: str | None
    last_run_started_at: datetime | None
    last_run_fetched: int | None
    last_success_at: datetime | None
    next_due_at: datetime | None
    consecutive_failures: int
    rows: int | None
    stale: bool
    delete_guard_held: int
    healthy: bool
    problems: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> EntityHealth:
        data = dict(row)
        for key in ("last_run_started_at", "last_success_at", "next_due_at"):
            data[key] = _when(data.get(key))
        data["problems"] = tuple(data.get("problems") or ())
        return cls(**data)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = (
                value.isoformat() if isinstance(value, datetime) else list(value) if f.name == "problems" else value
            )
        return out


@dataclass(frozen=True)
class Version:
    """One version of a record in its history table."""

    operation: str
    run_uid: str | None
    valid_from: datetime
    valid_to: datetime | None
    row_version: str | None
    data: Mapping[str, Any]

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Version:
        valid_from = _when(row["valid_from"])
        if valid_from is None:
            raise ValueError("a history version without valid_from")
        return cls(
            operation=row["operation"],
            run_uid=row["run_uid"],
            valid_from=valid_from,
            valid_to=_when(row["valid_to"]),
            row_version=row["row_version"],
            data=row["data"],
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "run_uid": self.run_uid,
            "valid_from": self.valid_from.isoformat(),
            "valid_to": _iso(self.valid_to),
            "row_version": self.row_version,
            "data": dict(self.data),
        }


@dataclass(frozen=True)
class History:
    """``history()``: a record's versions, and whether the entity records any."""

    entity: str
    key: Mapping[str, str]
    versions: tuple[Version, ...]
    history_on: bool
    as_of: datetime | None = None


@dataclass(frozen=True)
class ConnectorInfo:
    """A connector as the configuration file defines it (the token only as its variable's name)."""

    name: str
    base_url: str
    token_env: str | None
    token_set: bool
    target_schema: str
    verify_tls: bool | str
    after_sync_sql: str | None
    after_sync_when: str
    entities: Mapping[str, Mapping[str, Any]]
    max_concurrent_requests: int = 4
    max_requests_per_second: float | None = None
    parallel_reads: str = "auto"

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["entities"] = {k: dict(v) for k, v in self.entities.items()}
        return out


@dataclass(frozen=True)
class ConnectorCheck:
    """``connector test``: one request to the APISmith instance."""

    connector: str
    base_url: str
    ok: bool
    latency_ms: float
    apis: int | None = None
    error: str | None = None
    error_kind: str | None = None
    warning: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"connector": self.connector, "base_url": self.base_url, "ok": self.ok}
        for name in ("apis", "error", "error_kind", "warning"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        out["latency_ms"] = self.latency_ms
        return out


@dataclass(frozen=True)
class MigrationInfo:
    version: int
    name: str
    applied_at: datetime | None


@dataclass(frozen=True)
class MigrationStatus:
    """``db status``: the metadata schema's migrations, applied or pending."""

    schema: str
    database: str
    migrations: tuple[MigrationInfo, ...]


@dataclass(frozen=True)
class EntityInfo:
    """A discovered entity with its effective settings (``entities``, ``entity show``)."""

    entity: str
    name: str
    description: str
    table: str
    delta_strategy: str
    business_keys: tuple[str, ...]
    interval_seconds: int
    enabled: bool
    page_size: int
    history: bool
    overridden_by_file: tuple[str, ...]
    syncable: bool
    unsyncable_reason: str | None
    needs_attention: str | None
    missing_at_source: bool
    last_sync_at: datetime | None
    last_sync_status: str | None
    last_rowversion: str | None
    # Only from ``entity()``: each column's mapping (api name, source name and type, PostgreSQL name and type).
    columns: tuple[Mapping[str, Any], ...] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "columns":
                if value is not None:
                    out["columns"] = [dict(c) for c in value]
            elif isinstance(value, datetime):
                out[f.name] = value.isoformat()
            elif isinstance(value, tuple):
                out[f.name] = list(value)
            else:
                out[f.name] = value
        return out
