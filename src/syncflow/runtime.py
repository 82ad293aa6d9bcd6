"""Wiring shared by every command: config → database → clients.

The CLI builds one :class:`Runtime` per invocation; tests build it directly
to drive the core without the CLI.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from syncflow import db, store
from syncflow.config import CONFIG_ENV, LoadedConfig, resolve
from syncflow.errors import ConfigError, SourceError
from syncflow.limiter import ConnectorLimiter
from syncflow.store import Conn

if TYPE_CHECKING:
    from syncflow.client import APISmithClient


@dataclass
class Runtime:
    """Resolved configuration plus factories for connections and clients."""

    config: LoadedConfig
    # The database clock when this invocation first reached PostgreSQL: "since we began".
    started_at: datetime | None = None
    # One per connector, shared by all of this invocation's clients of it (every worker thread).
    _limiters: dict[str, ConnectorLimiter] = field(default_factory=dict, init=False, repr=False)
    _limiters_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @classmethod
    def load(
        cls,
        *,
        config_path: Path | None = None,
        database_url: str | None = None,
        env: dict[str, str] | None = None,
        require_file: bool = True,
    ) -> Runtime:
        """The configuration; ``require_file``: commands that act on connectors need the file itself.

        Without it every connector would look deleted: ``sync --all`` would find
        nothing due and succeed, and the connectors would be marked inactive.
        """
        overrides = {"database": {"url": database_url}} if database_url else None
        config = resolve(cli_path=config_path, env=env, overrides=overrides)
        if require_file and not config.exists:
            raise ConfigError(
                f"no configuration file: looked for {config.path.absolute()} (neither --config nor "
                f"${CONFIG_ENV} is given); create it with 'syncflow connector add NAME --url URL' or name one "
                f"with --config FILE or ${CONFIG_ENV}"
            )
        return cls(config)

    @property
    def schema(self) -> str:
        return self.config.settings.database.schema_

    @contextmanager
    def metadata(self, *, read_only: bool = False) -> Iterator[Conn]:
        """A metadata connection with the configured timeouts.

        Writing commands get the schema migrated and the connectors mirrored
        from the file; ``read_only`` ones (status, entities, runs, ...) get a
        connection on which PostgreSQL refuses every write. A lock or statement
        timeout inside the block becomes :class:`db.DatabaseBusy` naming the lock.
        """
        sync = self.config.settings.sync
        conn = db.open_metadata(
            self.config.settings.database.url,
            self.schema,
            lock_timeout=sync.lock_timeout_seconds,
            statement_timeout=sync.statement_timeout_seconds,
            read_only=read_only,
        )
        try:
            with db.translate_locks(conn, self.schema):
                if self.started_at is None:
                    row = conn.execute("SELECT clock_timestamp()").fetchone()
                    self.started_at = row[0] if row and isinstance(row[0], datetime) else None
                if not read_only:
                    store.mirror_connectors(conn, self.schema, self.config)
                yield conn
        finally:
            conn.close()

    def connect(self, *, autocommit: bool = False, read_only: bool = False) -> Conn:
        """A plain connection (no migration check) with the configured timeouts, e.g. for a sync worker."""
        sync = self.config.settings.sync
        return db.connect(
            self.config.settings.database.url,
            autocommit=autocommit,
            read_only=read_only,
            lock_timeout=sync.lock_timeout_seconds,
            statement_timeout=sync.statement_timeout_seconds,
        )

    def limiter(self, name: str) -> ConnectorLimiter:
        """The connector's request limiter for this invocation (created on first use)."""
        conn_cfg = self.config.connector(name)
        with self._limiters_lock:
            found = self._limiters.get(name)
            if found is None:
                found = self._limiters[name] = ConnectorLimiter(
                    name,
                    max_concurrent=conn_cfg.max_concurrent_requests,
                    max_per_second=conn_cfg.max_requests_per_second,
                )
            return found

    def client(self, name: str, *, cancel: threading.Event | None = None) -> APISmithClient:
        """An APISmith client for the connector, with its token from the environment.

        ``cancel`` (a signal handler's event) interrupts its retry waits and reads. Every
        client of one connector shares its :meth:`limiter`.
        """
        # Imported here: httpx is a tenth of a second that a nothing-due ``sync --all`` never needs.
        from syncflow.client import APISmithClient

        conn_cfg = self.config.connector(name)
        sync = self.config.settings.sync
        token = self.config.token(name)
        return APISmithClient(
            connector=name,
            base_url=conn_cfg.base_url,
            token=token,
            timeout=sync.http_timeout_seconds,
            attempts=sync.retry_attempts,
            backoff=sync.retry_backoff_seconds,
            verify=conn_cfg.verify_tls,
            max_response_bytes=sync.max_response_bytes,
            token_env=conn_cfg.token_env,
            cancel=cancel,
            limiter=self.limiter(name),
            parallel_reads=conn_cfg.parallel_reads,
        )


def check_connector(runtime: Runtime, name: str) -> dict[str, Any]:
    """Reach the connector's APISmith once: reachability, TLS, auth, API count, latency."""
    cfg = runtime.config.connector(name)
    result: dict[str, Any] = {"connector": name, "base_url": cfg.base_url, "ok": False}
    started = time.monotonic()
    try:
        with runtime.client(name) as client:
            client.attempts = 1
            apis, resp = client.list_apis()
    except SourceError as exc:
        result["error"] = exc.message
        result["error_kind"] = type(exc).__name__
        result["latency_ms"] = round((time.monotonic() - started) * 1000, 1)
        return result
    result.update(ok=True, apis=len(apis), latency_ms=round(resp.elapsed * 1000, 1))
    if cfg.verify_tls is False and cfg.base_url.startswith("https"):
        result["warning"] = "TLS certificate verification is turned off for this connector"
    return result
