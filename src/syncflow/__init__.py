"""SyncFlow: keep PostgreSQL in sync with APISmith REST APIs, one cron pass at a time.

The library face of the same core the ``syncflow`` command runs::

    import syncflow

    sf = syncflow.open("syncflow.toml")
    report = sf.sync("erp.items")
    for run in report.runs:
        print(run.entity, run.status, run.counts.fetched)

Names are imported on first use, so ``import syncflow`` (and ``syncflow --version``) stays cheap.
"""

from __future__ import annotations

import importlib

# Not typing.TYPE_CHECKING: importing typing is most of what ``syncflow --version`` would import (issue 16);
# type checkers treat any constant of this name as true.
TYPE_CHECKING = False

# The one place the version is written (pyproject.toml reads it from here): a literal, because looking it
# up with importlib.metadata costs more than the rest of ``syncflow --version`` (issue 16).
__version__ = "0.2.0"

if TYPE_CHECKING:
    from typing import Any

    from syncflow.api import SyncFlow, SyncObserver, SyncRequest, add_connector, open, remove_connector
    from syncflow.errors import (
        Cancelled,
        ConfigError,
        DatabaseError,
        SourceError,
        SyncFlowError,
        UsageError,
    )
    from syncflow.records import RunResult
    from syncflow.results import (
        ConnectorCheck,
        ConnectorInfo,
        DiscoverResult,
        EntityHealth,
        EntityInfo,
        EntityResult,
        EntitySettings,
        History,
        MigrationStatus,
        Run,
        RunCounts,
        RunRecord,
        SyncReport,
        Version,
    )
    from syncflow.workers import Outcome

_HOMES = {
    "api": ("SyncFlow", "SyncObserver", "SyncRequest", "add_connector", "open", "remove_connector"),
    "errors": ("Cancelled", "ConfigError", "DatabaseError", "SourceError", "SyncFlowError", "UsageError"),
    "results": (
        "ConnectorCheck",
        "ConnectorInfo",
        "DiscoverResult",
        "EntityHealth",
        "EntityResult",
        "EntityInfo",
        "EntitySettings",
        "History",
        "MigrationStatus",
        "Run",
        "RunCounts",
        "RunRecord",
        "SyncReport",
        "Version",
    ),
    "workers": ("Outcome",),
    "records": ("RunResult",),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _HOME_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'syncflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"syncflow.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "Cancelled",
    "ConfigError",
    "ConnectorCheck",
    "ConnectorInfo",
    "DatabaseError",
    "DiscoverResult",
    "EntityHealth",
    "EntityInfo",
    "EntityResult",
    "EntitySettings",
    "History",
    "MigrationStatus",
    "Outcome",
    "Run",
    "RunCounts",
    "RunRecord",
    "RunResult",
    "SourceError",
    "SyncFlow",
    "SyncFlowError",
    "SyncObserver",
    "SyncReport",
    "SyncRequest",
    "UsageError",
    "Version",
    "__version__",
    "add_connector",
    "open",
    "remove_connector",
]
