"""What the Python API returns: frozen, typed results (no dicts indexed by string).

Each has ``to_json()`` giving the document the CLI prints with ``--json``,
so the API and the command line describe a result the same way. Times are
timezone-aware ``datetime`` objects; ``to_json()`` writes them in ISO 8601.
A sync call's results live in :mod:`syncflow.sync_report` and are imported
from there (a nothing-due ``sync --all`` imports only that module).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any

from syncflow.errors import EXIT_CLAIMED, EXIT_FAILED
from syncflow.sync_report import EntityResult as EntityResult
from syncflow.sync_report import Run as Run
from syncflow.sync_report import RunCounts as RunCounts
from syncflow.sync_report import SyncReport as SyncReport

if TYPE_CHECKING:  # the engine's types: importing the engine is for the commands that run it (issue 16)
    from syncflow.discovery import DiscoveryReport


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _when(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


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
