"""`syncflow doctor`: is this installation able to run? One verdict per check, no secret shown.

What it looks at, in order: the configuration file (which one, and which rule
found it), every setting's effective value and where it came from (default,
file, environment, command line), the env file if one was read, the database
(reachable, migrations current, its clock against this machine's), and every
connector (reachable, token accepted, the token's expiry when it is a JWT).

Nothing here prints; the CLI renders :class:`Report`. Secrets never enter the
report: the database URL's password is replaced by ``****``, tokens are only
named by their variable, and a JWT is decoded (never verified: no key is
needed) for its ``exp`` claim alone.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from syncflow import db
from syncflow.config import (
    CONFIG_ENV,
    DEFAULT_CONFIG_NAME,
    DatabaseConfig,
    EnvFile,
    LoadedConfig,
    SyncConfig,
    _env_overrides,
    read_toml,
    resolve,
)
from syncflow.errors import SyncFlowError
from syncflow.runtime import Runtime, check_connector

OK, WARN, FAIL = "ok", "warn", "fail"
TOKEN_WARN_DAYS = 7
# SyncFlow decides what is due and what is stale with this machine's clock against times the
# database wrote: a skew shifts both. A few seconds do not matter; a minute is a whole cron period.
SKEW_WARN_SECONDS = 5.0
SKEW_FAIL_SECONDS = 60.0
REDACTED = "****"


@dataclass(frozen=True)
class Check:
    """One verdict: ``ok``, ``warn`` (works, but look) or ``fail``."""

    name: str
    status: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"check": self.name, "status": self.status, "message": self.message, **self.details}


@dataclass(frozen=True)
class Setting:
    key: str
    value: Any
    source: str  # "default", "file", "env VAR" or "flag --option"

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "value": self.value, "source": self.source}


@dataclass
class Report:
    config: dict[str, Any]
    settings: list[Setting] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.status != FAIL for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "config": self.config,
            "settings": [s.to_json() for s in self.settings],
            "checks": [c.to_json() for c in self.checks],
        }


# -- redaction ---------------------------------------------------------------------------------

_PASSWORD_KV = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)", re.IGNORECASE)


def redact_dsn(url: str | None) -> str | None:
    """The database URL or key=value string with any password replaced by ``****``."""
    if not url:
        return url
    text = url
    if "://" in text:
        parts = urlsplit(text)
        if parts.password is not None:
            host = parts.netloc.rsplit("@", 1)[1]
            user = parts.netloc.rsplit("@", 1)[0].split(":", 1)[0]
            text = urlunsplit(parts._replace(netloc=f"{user}:{REDACTED}@{host}"))
    return _PASSWORD_KV.sub(lambda m: m.group(1) + REDACTED, text)


# -- JWT ---------------------------------------------------------------------------------------


def jwt_expiry(token: str) -> datetime | str | None:
    """The ``exp`` of a JWT, decoded without verifying it; None without ``exp``; "not a JWT" otherwise."""
    parts = token.split(".")
    if len(parts) != 3:
        return "not a JWT"
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return "not a JWT"
    if not isinstance(payload, dict):
        return "not a JWT"
    exp = payload.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    try:
        return datetime.fromtimestamp(exp, UTC)
    except (OverflowError, OSError, ValueError):
        return "not a JWT"


def token_check(name: str, token_env: str | None, env: Mapping[str, str], now: datetime) -> Check:
    check = f"token {name}"
    if token_env is None:
        return Check(check, OK, "no token_env: requests carry no token")
    token = env.get(token_env)
    if not token:
        return Check(check, FAIL, f"environment variable {token_env} is not set", {"token_env": token_env})
    expiry = jwt_expiry(token)
    if isinstance(expiry, str):
        return Check(check, OK, f"${token_env} is set; not a JWT, so its expiry is unknown", {"token_env": token_env})
    if expiry is None:
        return Check(check, OK, f"${token_env} is a JWT without an expiry (exp)", {"token_env": token_env})
    details = {"token_env": token_env, "expires_at": expiry.isoformat()}
    left = expiry - now
    when = expiry.strftime("%Y-%m-%d %H:%M UTC")
    if left <= timedelta(0):
        return Check(check, FAIL, f"${token_env} expired at {when}; renew it", details)
    days = left.total_seconds() / 86400
    if left <= timedelta(days=TOKEN_WARN_DAYS):
        return Check(check, WARN, f"${token_env} expires at {when}, in {days:.1f} days; renew it soon", details)
    return Check(check, OK, f"${token_env} expires at {when}, in {days:.0f} days", details)


# -- configuration -----------------------------------------------------------------------------


def config_origin(cli_path: Path | None, env: Mapping[str, str]) -> tuple[Path, str]:
    """The configuration file and the rule that picked it (same order as :func:`config.config_path`)."""
    if cli_path is not None:
        return cli_path, "--config"
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV]), f"${CONFIG_ENV}"
    return Path(DEFAULT_CONFIG_NAME), f"./{DEFAULT_CONFIG_NAME}"


def settings_with_sources(
    loaded: LoadedConfig, file_data: Mapping[str, Any], env: Mapping[str, str], database_url_flag: str | None
) -> list[Setting]:
    """Every key's effective value and where it came from; the database password redacted."""
    _, env_sources = _env_overrides(env)
    settings = loaded.settings
    out: list[Setting] = []
    for section, model, values in (
        ("database", DatabaseConfig, settings.database),
        ("sync", SyncConfig, settings.sync),
    ):
        in_file = file_data.get(section) if isinstance(file_data.get(section), dict) else {}
        for field_name, info in model.model_fields.items():
            key = info.alias or field_name
            dotted = f"{section}.{key}"
            value = getattr(values, field_name)
            if dotted == "database.url" and database_url_flag:
                source = "flag --database-url"
            elif dotted in env_sources:
                source = f"env {env_sources[dotted]}"
            elif isinstance(in_file, dict) and key in in_file:
                source = "file"
            else:
                source = "default"
            if dotted == "database.url":
                value = redact_dsn(value) if value else f"(libpq PG* variables: {db.describe_target(None)})"
            out.append(Setting(dotted, value, source))
    for name, conn in sorted(settings.connectors.items()):
        raw = (file_data.get("connectors") or {}).get(name) or {}
        for key, value in (
            ("base_url", conn.base_url),
            ("token_env", conn.token_env),
            ("target_schema", conn.target_schema or name),
            ("verify_tls", conn.verify_tls),
            ("max_concurrent_requests", conn.max_concurrent_requests),
            ("max_requests_per_second", conn.max_requests_per_second),
            ("parallel_reads", conn.parallel_reads),
        ):
            out.append(Setting(f"connectors.{name}.{key}", value, "file" if key in raw else "default"))
        for slug, override in sorted(conn.entities.items()):
            for key, value in override.model_dump(exclude_none=True).items():
                out.append(Setting(f"connectors.{name}.entities.{slug}.{key}", value, "file"))
    return out


# -- database ----------------------------------------------------------------------------------


def clock_check(conn: psycopg.Connection[Any], clock: Callable[[], datetime] | None = None) -> Check:
    """This machine's clock against the database's (``clock_timestamp()``), halfway through the query."""
    now = clock or (lambda: datetime.now(UTC))
    before = now()
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    after = now()
    db_now = row[0] if row else None
    if not isinstance(db_now, datetime):
        return Check("clock", WARN, "the database did not tell its time")
    local = before + (after - before) / 2
    skew = (db_now - local).total_seconds()
    details = {"skew_seconds": round(skew, 3)}
    direction = "ahead of" if skew > 0 else "behind"
    text = f"the database clock is {abs(skew):.1f} s {direction} this machine's"
    if abs(skew) > SKEW_FAIL_SECONDS:
        return Check("clock", FAIL, f"{text}: due and stale times are off by that much; fix NTP", details)
    if abs(skew) > SKEW_WARN_SECONDS:
        return Check("clock", WARN, f"{text}; check NTP", details)
    return Check("clock", OK, text, details)


def database_checks(runtime: Runtime) -> list[Check]:
    target = db.describe_target(runtime.config.settings.database.url)
    try:
        conn = runtime.connect(autocommit=True, read_only=True)
    except SyncFlowError as exc:
        return [Check("database", FAIL, str(exc))]
    checks: list[Check] = []
    try:
        version = conn.info.server_version
        checks.append(
            Check(
                "database",
                OK,
                f"reachable at {target} as {conn.info.user}, PostgreSQL {version // 10000}.{version % 10000}",
                {"server_version": version},
            )
        )
        status = db.migration_status(conn, runtime.schema)
        pending = [f"{m.version:04d}_{m.name}" for m, at in status if at is None]
        if pending:
            checks.append(
                Check(
                    "migrations",
                    FAIL,
                    f"schema {runtime.schema!r}: {len(pending)} of {len(status)} migrations pending "
                    f"({', '.join(pending)}); run 'syncflow db upgrade' (sync and discover also apply them)",
                    {"pending": pending},
                )
            )
        else:
            checks.append(
                Check("migrations", OK, f"schema {runtime.schema!r}: all {len(status)} migrations applied", {})
            )
        checks.append(clock_check(conn))
    except psycopg.Error as exc:
        checks.append(Check("database", FAIL, str(db.translate(exc, "database check"))))
    finally:
        conn.close()
    return checks


# -- connectors --------------------------------------------------------------------------------


def connector_check(runtime: Runtime, name: str) -> Check:
    check = f"connector {name}"
    try:
        result = check_connector(runtime, name)
    except SyncFlowError as exc:
        return Check(check, FAIL, str(exc).removeprefix(f"{check}: "))
    if not result["ok"]:
        return Check(check, FAIL, str(result["error"]).removeprefix(f"{check}: "), {"base_url": result["base_url"]})
    token = "token accepted" if runtime.config.connector(name).token_env else "no token"
    details = {"base_url": result["base_url"], "apis": result["apis"], "latency_ms": result["latency_ms"]}
    message = f"reachable at {result['base_url']}, {token}, {result['apis']} APIs, {result['latency_ms']} ms"
    if "warning" in result:
        return Check(check, WARN, f"{message}; {result['warning']}", details)
    return Check(check, OK, message, details)


# -- all of it ---------------------------------------------------------------------------------


def run(
    *,
    config_path: Path | None,
    database_url: str | None,
    env_file: EnvFile | None = None,
    env: Mapping[str, str] | None = None,
) -> Report:
    """Every check, in order; a failing one never stops the others that can still run."""
    env = os.environ if env is None else env
    path, rule = config_origin(config_path, env)
    report = Report(config={"path": str(path), "found_by": rule, "exists": path.exists()})
    if env_file is not None:
        parts = [f"read {env_file.path} (given by {env_file.origin})"]
        parts.append("set " + (", ".join(env_file.applied) or "nothing"))
        if env_file.kept:
            parts.append("already in the environment, so not taken from it: " + ", ".join(env_file.kept))
        report.checks.append(
            Check("env file", OK, "; ".join(parts), {"path": str(env_file.path), "applied": env_file.applied})
        )
    try:
        overrides = {"database": {"url": database_url}} if database_url else None
        loaded = resolve(cli_path=config_path, env=env, overrides=overrides)
        file_data = read_toml(path) if loaded.exists else {}
    except SyncFlowError as exc:
        report.checks.insert(0, Check("config", FAIL, f"{path} (found by {rule}): {exc}"))
        return report
    if loaded.exists:
        report.checks.insert(0, Check("config", OK, f"{path.absolute()} (found by {rule})"))
    else:
        report.checks.insert(
            0,
            Check(
                "config",
                FAIL,
                f"no configuration file: looked for {path.absolute()} (found by {rule}); give --config FILE or "
                f"${CONFIG_ENV}; commands that act on connectors need it",
            ),
        )
    report.settings = settings_with_sources(loaded, file_data, env, database_url)
    runtime = Runtime(loaded)
    report.checks += database_checks(runtime)
    now = datetime.now(UTC)
    for name in sorted(loaded.settings.connectors):
        report.checks.append(connector_check(runtime, name))
        report.checks.append(token_check(name, loaded.settings.connectors[name].token_env, env, now))
    return report
