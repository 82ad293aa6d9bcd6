"""SyncFlow's exceptions: one tree, each class knowing its exit code.

Cron and CI must tell failures apart, so every error SyncFlow raises on
purpose derives from :class:`SyncFlowError`, and the CLI catches that base in
one place and exits with ``exit_code``::

    SyncFlowError (1)
    ├── UsageError (2)                  bad arguments, unknown entity or connector
    ├── ConfigError (2)                 syncflow.toml or environment is wrong
    ├── DatabaseError (2)               PostgreSQL trouble outside a sync run
    │   ├── DatabaseUnreachable (2)     cannot connect at all
    │   └── MigrationError (2)          metadata schema cannot be upgraded
    ├── SourceError (1)                 an APISmith instance misbehaved
    │   ├── SourceTransientError (1)    timeouts, DNS, refused, resets, 5xx, 429: retried first
    │   ├── SourceUnreachable (1)       TLS failure: not worth retrying
    │   ├── SourceAuthError (1)         401/403: wrong or expired token
    │   ├── SourceNotFound (1)          404: the API is gone
    │   └── SourceProtocolError (1)     200 with a body that is not the protocol
    └── Cancelled (130)                 SIGINT/SIGTERM stopped a run (143 for SIGTERM)

Third-party errors (httpx, psycopg, pydantic, tomllib) are translated into this
tree at the boundary where they occur (``raise X(...) from exc``); no other
exception should reach the user as a traceback.
"""

from __future__ import annotations

from typing import Any

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CLAIMED = 75  # EX_TEMPFAIL: a named entity is being synced by another process
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class SyncFlowError(Exception):
    """Base of every error SyncFlow raises on purpose."""

    exit_code: int = EXIT_FAILED

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}

    def __str__(self) -> str:
        return self.message


class UsageError(SyncFlowError):
    """The command line names something that does not exist or makes no sense."""

    exit_code = EXIT_USAGE


class ConfigError(SyncFlowError):
    """The configuration file or environment is invalid; one line per problem."""

    exit_code = EXIT_USAGE

    def __init__(self, problems: list[str] | str) -> None:
        lines = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(lines))
        self.problems = lines


class DatabaseError(SyncFlowError):
    """PostgreSQL failed outside the protected path of a sync run."""

    exit_code = EXIT_USAGE


class DatabaseUnreachable(DatabaseError):
    """The metadata database cannot be reached; the message never holds a password."""


class MigrationError(DatabaseError):
    """The metadata schema could not be created or upgraded."""


class SourceError(SyncFlowError):
    """An APISmith instance failed or answered outside the protocol."""

    transient = False


class SourceTransientError(SourceError):
    """Worth retrying: timeouts, failed name lookups, refused or reset connections, 500/502/503/504, 429."""

    transient = True

    def __init__(
        self,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, details=details)
        self.retry_after = retry_after


class SourceUnreachable(SourceError):
    """A TLS failure (untrusted certificate, plain HTTP on an https:// URL): retrying cannot help.

    A failed name lookup or a refused connection may be a restart in progress, so the
    client raises :class:`SourceTransientError` for those and retries them.
    """


class SourceAuthError(SourceError):
    """401/403: the token is wrong or expired. Never retried."""


class SourceNotFound(SourceError):
    """404: the API (or the whole APISmith path) does not exist."""


class SourceProtocolError(SourceError):
    """The body is not JSON, or JSON of the wrong shape."""


class Cancelled(SyncFlowError):
    """A signal asked SyncFlow to stop; the run is recorded as ``cancelled``."""

    exit_code = EXIT_SIGINT
