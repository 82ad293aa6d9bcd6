"""SyncFlow's domain: entities, their stored columns, target tables as the catalog shows them.

Plain data with no I/O, so the pure modules (plan, ddl, merge, history's
builders) can use them without pulling in a database driver.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class StoredColumn:
    """A column's mapping as stored with its entity; ``pg_name`` never changes."""

    api_name: str
    source_name: str
    data_type: str
    pg_name: str
    pg_type: str
    is_nullable: bool = True
    is_business_key: bool = False
    retired: bool = False
    # The column policy discovery applied: "exclude" (never created or written; retired) or "hash".
    policy: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StoredColumn:
        known = {f: data[f] for f in cls.__dataclass_fields__ if f in data}
        return cls(**known)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ColumnPolicy:
    """An entity's column policies from the file, by API column name (alias)."""

    exclude: frozenset[str] = frozenset()
    hash: frozenset[str] = frozenset()

    def of(self, api_name: str) -> str | None:
        """The policy of one column: "exclude", "hash" or None."""
        if api_name in self.exclude:
            return "exclude"
        return "hash" if api_name in self.hash else None


@dataclass
class Entity:
    """One discovered API and its sync state."""

    uid: str
    connector: str
    connector_uid: str
    slug: str
    api_name: str
    description: str
    delta_strategy: str
    business_keys: list[str]
    target_schema: str
    target_table: str
    columns: list[StoredColumn]
    syncable: bool = True
    unsyncable_reason: str | None = None
    needs_attention: str | None = None
    pending_change: dict[str, Any] | None = None
    missing_at_source: bool = False
    sync_enabled: bool = True
    sync_interval_seconds: int | None = None
    page_size: int | None = None
    last_sync_at: datetime | None = None
    last_sync_status: str | None = None
    last_success_at: datetime | None = None
    last_rowversion: str | None = None
    consecutive_failures: int = 0
    history_enabled: bool = False
    # Chosen by discovery and stored, so that it never collides with a data table.
    history_table: str | None = None

    @property
    def ref(self) -> str:
        """``connector.slug``, how every command names an entity."""
        return f"{self.connector}.{self.slug}"

    @property
    def active_columns(self) -> list[StoredColumn]:
        return [c for c in self.columns if not c.retired]

    @property
    def table_columns(self) -> list[StoredColumn]:
        """Columns that discovery creates: all but excluded ones (an excluded column is never created)."""
        return [c for c in self.columns if c.policy != "exclude"]


@dataclass(frozen=True)
class LiveColumn:
    name: str
    pg_type: str
    not_null: bool


@dataclass(frozen=True)
class LiveTable:
    """A target table as the catalog shows it."""

    columns: dict[str, LiveColumn]
    unique_keys: list[tuple[str, ...]]
    rowversion_index: bool
    has_rows: bool = True
