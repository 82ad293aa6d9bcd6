"""What is due, and with which settings: an entity's effective settings (the file over the
database), its after_sync_sql, and the entities ``sync --all`` takes now."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from syncflow import store
from syncflow.errors import ConfigError
from syncflow.models import ColumnPolicy, Entity
from syncflow.runtime import Runtime
from syncflow.store import Conn


@dataclass(frozen=True)
class EffectiveSettings:
    """An entity's settings as a run uses them: the database's, with the file's overrides on top."""

    interval_seconds: int
    enabled: bool
    page_size: int
    history: bool
    overridden_by_file: tuple[str, ...]  # the keys [connectors.C.entities.SLUG] in the file sets

    def get(self, key: str) -> Any:
        """One setting by name (one of SETTING_KEYS)."""
        return getattr(self, key)


SETTING_KEYS = ("interval_seconds", "enabled", "page_size", "history")


def effective_settings(runtime: Runtime, e: Entity) -> EffectiveSettings:
    """The entity's settings after file overrides, and which ones the file set."""
    sync = runtime.config.settings.sync
    conn_cfg = runtime.config.settings.connectors.get(e.connector)
    override = conn_cfg.entities.get(e.slug) if conn_cfg is not None else None
    values: dict[str, Any] = {
        "interval_seconds": e.sync_interval_seconds or sync.interval_seconds,
        "enabled": e.sync_enabled,
        "page_size": e.page_size or sync.page_size,
        "history": e.history_enabled,
    }
    from_file: list[str] = []
    if override is not None:
        for key in SETTING_KEYS:
            value = getattr(override, key)
            if value is not None:
                values[key] = value
                from_file.append(key)
    return EffectiveSettings(**values, overridden_by_file=tuple(from_file))


def after_sync_settings(runtime: Runtime, e: Entity) -> tuple[str | None, str]:
    """The entity's after_sync_sql and when to run it (the entity's setting, else its connector's)."""
    conn_cfg = runtime.config.settings.connectors.get(e.connector)
    if conn_cfg is None:
        return None, "changed"
    override = conn_cfg.entities.get(e.slug)
    if override is None:
        return None, conn_cfg.after_sync_when
    return override.after_sync_sql, override.after_sync_when or conn_cfg.after_sync_when


def check_policies(runtime: Runtime, entities: list[Entity]) -> None:
    """The file's column policies of the entities about to sync: valid names, no business key,
    and the hash key in the environment when one hashes a column; else a ConfigError (exit 2)."""
    if not entities:  # a pass with nothing due does not import the planner (issue 16)
        return
    from syncflow.plan import policy_problems

    problems: list[str] = []
    hashing = False
    for e in entities:
        policy = runtime.config.column_policy(e.connector, e.slug)
        known = {c.api_name for c in e.columns}
        keys = {c.api_name for c in e.columns if c.is_business_key}
        where = f"{runtime.config.path}: connectors.{e.connector}.entities.{e.slug}"
        problems += [f"{where}.{p}" for p in policy_problems(policy, known, keys)]
        hashing = hashing or bool(policy.hash)
    if problems:
        raise ConfigError(problems)
    if hashing:
        runtime.config.hash_key()


def sync_policy(runtime: Runtime, e: Entity) -> tuple[ColumnPolicy, bytes | None]:
    """The entity's column policies and, when it hashes a column, the key (ConfigError when unset)."""
    policy = runtime.config.column_policy(e.connector, e.slug)
    return policy, runtime.config.hash_key() if policy.hash else None


def due_entities(runtime: Runtime, conn: Conn, *, force: bool = False, connector: str | None = None) -> list[Entity]:
    """Enabled, syncable entities whose interval has passed; never-synced first."""
    now = datetime.now(UTC)
    due: list[tuple[bool, datetime, str, Entity]] = []
    for e in store.list_entities(conn, runtime.schema, connector=connector):
        eff = effective_settings(runtime, e)
        if not eff.enabled or not e.syncable or e.connector not in runtime.config.settings.connectors:
            continue
        last = e.last_sync_at
        if force or last is None or last + timedelta(seconds=eff.interval_seconds) <= now:
            due.append((last is not None, last or now, e.ref, e))
    due.sort(key=lambda d: (d[0], d[1], d[2]))
    return [d[3] for d in due]
