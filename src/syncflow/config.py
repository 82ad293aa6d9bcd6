"""Configuration: ``syncflow.toml`` read into pydantic models, resolved once.

Precedence, lowest first: built-in defaults < the TOML file < environment
variables (``SYNCFLOW_DATABASE_URL``, ``SYNCFLOW_SYNC_WORKERS``, ... — any
``SYNCFLOW_<SECTION>_<KEY>`` of the ``database`` and ``sync`` sections, and
``SYNCFLOW_PING_URL`` for ``notify.ping_url``) <
command-line options. :func:`resolve` is the only place that merges them, so
every command sees the same answer.

Every problem is reported at once, one line each, naming the file and the key
(and line and column for TOML syntax errors), as a :class:`ConfigError`.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from syncflow.errors import ConfigError
from syncflow.models import ColumnPolicy
from syncflow.ping import check_url

DEFAULT_CONFIG_NAME = "syncflow.toml"
CONFIG_ENV = "SYNCFLOW_CONFIG"
ENV_FILE_ENV = "SYNCFLOW_ENV_FILE"
ENV_PREFIX = "SYNCFLOW_"
PING_URL_ENV = "SYNCFLOW_PING_URL"
CONNECTOR_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Keys that would put a secret in the file in plain text.
LITERAL_SECRET_KEYS = ("token", "auth_token", "api_token", "bearer_token", "password")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class DatabaseConfig(_Strict):
    """Where SyncFlow keeps its metadata and the synced tables."""

    url: str | None = None
    schema_: str = Field(default="bridge", alias="schema", min_length=1, max_length=63)

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if "://" in value and urlsplit(value).scheme not in ("postgresql", "postgres"):
            raise ValueError("must be a postgresql:// URL or a libpq key=value string")
        return value


class SyncConfig(_Strict):
    """Defaults for every sync run; per-entity settings may override some."""

    page_size: int = Field(default=1000, ge=1, le=100_000)
    workers: int = Field(default=4, ge=1, le=64)
    # Rows merged and committed together: a killed run keeps (and the next one resumes after) every batch it committed.
    batch_rows: int = Field(default=25_000, ge=1, le=10_000_000)
    interval_seconds: int = Field(default=300, ge=1)
    http_timeout_seconds: float = Field(default=30.0, gt=0)
    retry_attempts: int = Field(default=3, ge=1, le=20)
    retry_backoff_seconds: float = Field(default=1.0, ge=0)
    max_delete_fraction: float = Field(default=0.5, ge=0, le=1)
    stale_factor: float = Field(default=3.0, gt=0)
    lock_timeout_seconds: float = Field(default=60.0, ge=0)
    statement_timeout_seconds: float = Field(default=0.0, ge=0)
    # The most one HTTP response may inflate to: a gzip bomb must not exhaust memory.
    max_response_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    # Without a terminal (cron, Kubernetes): seconds between two progress lines of a running sync.
    progress_interval_seconds: float = Field(default=30.0, gt=0)
    # The environment variable holding the HMAC key of hash_columns (its name only; never the key).
    hash_key_env: str | None = None

    @field_validator("hash_key_env")
    @classmethod
    def _check_hash_key_env(cls, value: str | None) -> str | None:
        if value is not None and not ENV_NAME_RE.match(value):
            raise ValueError(f"{value!r} is not a valid environment variable name")
        return value


AfterSyncWhen = Literal["changed", "always"]
ParallelReads = Literal["auto", "always"]


def _check_statement(value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise ValueError("give an SQL statement, or leave the key out")
    return value


class EntityOverride(_Strict):
    """Per-entity settings in the file; they win over the database."""

    interval_seconds: int | None = Field(default=None, ge=1)
    enabled: bool | None = None
    page_size: int | None = Field(default=None, ge=1, le=100_000)
    history: bool | None = None
    # SQL run after this entity's successful run (the user's own statement, sent verbatim).
    after_sync_sql: str | None = None
    # When: "changed" (a row was inserted, updated or deleted) or "always"; default: the connector's.
    after_sync_when: AfterSyncWhen | None = None
    # Column policies, by the API's column names (aliases): never stored, or stored as a keyed hash.
    exclude_columns: list[str] | None = None
    hash_columns: list[str] | None = None

    @field_validator("after_sync_sql")
    @classmethod
    def _check_after_sync_sql(cls, value: str | None) -> str | None:
        return _check_statement(value)

    @field_validator("exclude_columns", "hash_columns")
    @classmethod
    def _check_names(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and any(not name for name in value):
            raise ValueError("column names must not be empty")
        return value

    @model_validator(mode="after")
    def _check_overlap(self) -> EntityOverride:
        both = sorted(set(self.exclude_columns or ()) & set(self.hash_columns or ()))
        if both:
            raise ValueError(f"column(s) {', '.join(both)} are both excluded and hashed; choose one")
        return self


class ConnectorConfig(_Strict):
    """One APISmith instance."""

    base_url: str
    token_env: str | None = None
    target_schema: str | None = Field(default=None, min_length=1, max_length=63)
    verify_tls: bool | str = True
    # SQL run once per invocation after this connector's entities, when one of their runs qualifies.
    after_sync_sql: str | None = None
    after_sync_when: AfterSyncWhen = "changed"
    # Requests in flight to this APISmith at once, across all workers of an invocation (the most the
    # adaptive limit reaches; see syncflow.limiter), and optionally at most this many started per second.
    max_concurrent_requests: int = Field(default=4, ge=1, le=64)
    max_requests_per_second: float | None = Field(default=None, gt=0)
    # "auto": overlap requests (pages ahead, split rowversion reads) only when a request waits longer than a
    # page costs this process (syncflow.pages.Pace); "always": whenever the limit allows more than one.
    parallel_reads: ParallelReads = "auto"
    entities: dict[str, EntityOverride] = Field(default_factory=dict)

    @field_validator("after_sync_sql")
    @classmethod
    def _check_after_sync_sql(cls, value: str | None) -> str | None:
        return _check_statement(value)

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        parts = urlsplit(value)
        # Checked first, and the value never echoed: it would show the password. httpx
        # would also send these as Basic auth in place of the bearer token.
        if parts.username is not None or parts.password is not None:
            raise ValueError(
                "credentials in base_url are not allowed; put the token in the environment variable named by token_env"
            )
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"invalid URL {value!r}: expected http://host[:port][/path] or https://...")
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError as exc:
            raise ValueError(f"invalid URL {value!r}: {exc}") from None
        return value

    @field_validator("token_env")
    @classmethod
    def _check_token_env(cls, value: str | None) -> str | None:
        if value is not None and not ENV_NAME_RE.match(value):
            raise ValueError(f"{value!r} is not a valid environment variable name")
        return value

    @field_validator("verify_tls")
    @classmethod
    def _check_verify(cls, value: bool | str) -> bool | str:
        if isinstance(value, str) and not value:
            raise ValueError("give true, false or the path of a CA bundle")
        return value


class NotifyConfig(_Strict):
    """Where each sync invocation reports to a dead-man's-switch monitor (see syncflow.ping)."""

    ping_url: str | None = None

    @field_validator("ping_url")
    @classmethod
    def _check_ping_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        return check_url(value)


class Settings(_Strict):
    """The whole resolved configuration."""

    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    sync: SyncConfig = Field(default_factory=SyncConfig)
    notify: NotifyConfig = Field(default_factory=NotifyConfig)
    connectors: dict[str, ConnectorConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_hash_key_env(self) -> Settings:
        if self.sync.hash_key_env is None:
            for name, conn in self.connectors.items():
                for slug, override in conn.entities.items():
                    if override.hash_columns:
                        raise ValueError(
                            f"connectors.{name}.entities.{slug}.hash_columns needs sync.hash_key_env,"
                            " the environment variable that holds the HMAC key"
                        )
        return self


@dataclass(frozen=True)
class LoadedConfig:
    """Settings plus where they came from, for messages and file edits."""

    settings: Settings
    path: Path
    exists: bool
    # The environment the configuration was read from (None: the process's), where tokens are read too.
    env: Mapping[str, str] | None = None

    def connector(self, name: str) -> ConnectorConfig:
        """The named connector, or a usage error listing the known ones."""
        try:
            return self.settings.connectors[name]
        except KeyError:
            from syncflow.errors import UsageError

            known = ", ".join(sorted(self.settings.connectors)) or "none"
            raise UsageError(f"{self.path}: no connector named {name!r} (configured: {known})") from None

    def target_schema(self, name: str) -> str:
        """The connector's target schema: configured, else the connector's name."""
        return self.connector(name).target_schema or name

    def token(self, name: str, env: Mapping[str, str] | None = None) -> str | None:
        """The connector's bearer token from its environment variable.

        A variable that is named but unset is a configuration error, because a
        request without the token would only fail later with a vaguer 401.
        """
        conn = self.connector(name)
        if conn.token_env is None:
            return None
        source = env if env is not None else self.env if self.env is not None else os.environ
        value = source.get(conn.token_env)
        if not value:
            raise ConfigError(
                f"{self.path}: connectors.{name}.token_env: environment variable {conn.token_env} is not set"
            )
        return value

    def column_policy(self, connector: str, slug: str) -> ColumnPolicy:
        """The entity's exclude_columns and hash_columns from the file (empty when it sets none)."""
        conn = self.settings.connectors.get(connector)
        override = conn.entities.get(slug) if conn is not None else None
        if override is None:
            return ColumnPolicy()
        return ColumnPolicy(
            exclude=frozenset(override.exclude_columns or ()), hash=frozenset(override.hash_columns or ())
        )

    def hash_key(self, env: Mapping[str, str] | None = None) -> bytes:
        """The HMAC key of hash_columns, from the variable named by ``sync.hash_key_env``.

        Unset or empty is a configuration error naming the variable (never a value):
        storing the column unhashed, or hashed with an empty key, would defeat the policy.
        """
        var = self.settings.sync.hash_key_env
        if var is None:
            raise ConfigError(f"{self.path}: hash_columns need sync.hash_key_env (the variable holding the key)")
        value = (os.environ if env is None else env).get(var)
        if not value:
            raise ConfigError(f"{self.path}: sync.hash_key_env: environment variable {var} is not set")
        return value.encode("utf-8")


@dataclass(frozen=True)
class EnvFile:
    """An env file that was read: where from, and which of its variables took effect."""

    path: Path
    origin: str  # "--env-file" or "$SYNCFLOW_ENV_FILE"
    applied: list[str] = field(default_factory=list)  # set from the file
    kept: list[str] = field(default_factory=list)  # already in the environment, which wins


def load_env_file(cli_path: Path | None, environ: MutableMapping[str, str]) -> EnvFile | None:
    """Read ``--env-file`` (else ``$SYNCFLOW_ENV_FILE``) into ``environ``, as python-dotenv parses it.

    ``KEY=VALUE`` lines, ``export`` optional, quotes and ``#`` comments as dotenv
    reads them. A variable already set in the environment (even to "") wins over
    the file, so a one-off ``VAR=x syncflow ...`` still works. A named file that
    does not exist or cannot be read is a configuration error.
    """
    if cli_path is not None:
        path, origin = cli_path, "--env-file"
    elif environ.get(ENV_FILE_ENV):
        path, origin = Path(environ[ENV_FILE_ENV]), f"${ENV_FILE_ENV}"
    else:
        return None
    from dotenv import dotenv_values

    try:
        with path.open(encoding="utf-8") as fh:
            values = dotenv_values(stream=fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: env file not found (given by {origin})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: env file is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read env file (given by {origin}): {exc.strerror}") from None
    applied: list[str] = []
    kept: list[str] = []
    for key, value in values.items():
        if value is None:
            continue  # a bare "KEY" line sets nothing
        if key in environ:
            kept.append(key)
        else:
            environ[key] = value
            applied.append(key)
    return EnvFile(path=path, origin=origin, applied=applied, kept=kept)


def config_path(cli_path: Path | None, env: Mapping[str, str] | None = None) -> Path:
    """``--config``, else ``$SYNCFLOW_CONFIG``, else ``./syncflow.toml``."""
    env = os.environ if env is None else env
    if cli_path is not None:
        return cli_path
    if env.get(CONFIG_ENV):
        return Path(env[CONFIG_ENV])
    return Path(DEFAULT_CONFIG_NAME)


def _toml_syntax_problem(path: Path, exc: tomllib.TOMLDecodeError) -> str:
    # Python 3.11 puts the position only in the message: "... (at line 2, column 5)".
    text = str(exc)
    m = re.search(r"\(at line (\d+), column (\d+)\)", text)
    reason = re.sub(r"\s*\(at line \d+, column \d+\)", "", text)
    if m:
        return f"{path}:{m.group(1)}:{m.group(2)}: TOML syntax error: {reason}"
    return f"{path}: TOML syntax error: {reason}"


def read_toml(path: Path) -> dict[str, Any]:
    """Parse the file, turning every failure into a one-line ConfigError."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration file: {exc.strerror}") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(_toml_syntax_problem(path, exc)) from None


def _secret_problems(path: Path, data: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    connectors = data.get("connectors")
    if isinstance(connectors, dict):
        for name, conn in connectors.items():
            if not isinstance(conn, dict):
                continue
            for key in LITERAL_SECRET_KEYS:
                if key in conn:
                    problems.append(
                        f"{path}: connectors.{name}.{key}: a literal token is not allowed in the "
                        f"file; put it in an environment variable and name that variable with "
                        f'token_env = "{name.upper()}_APISMITH_TOKEN"'
                    )
            if not CONNECTOR_NAME_RE.match(str(name)):
                problems.append(
                    f"{path}: connectors.{name}: connector names are lower-case letters, digits "
                    f"and '_', starting with a letter"
                )
    database = data.get("database")
    if isinstance(database, dict) and "password" in database:
        problems.append(
            f"{path}: database.password: a literal password is not allowed in the file; use PGPASSWORD or ~/.pgpass"
        )
    return problems


def _env_overrides(env: Mapping[str, str]) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """Environment values for the database and sync sections, and their sources."""
    overrides: dict[str, dict[str, str]] = {}
    sources: dict[str, str] = {}
    for section, model in (("database", DatabaseConfig), ("sync", SyncConfig)):
        for field_name, info in model.model_fields.items():
            key = info.alias or field_name
            var = f"{ENV_PREFIX}{section.upper()}_{key.upper()}"
            if var in env and env[var] != "":
                overrides.setdefault(section, {})[key] = env[var]
                sources[f"{section}.{key}"] = var
    if env.get(PING_URL_ENV):
        overrides.setdefault("notify", {})["ping_url"] = env[PING_URL_ENV]
        sources["notify.ping_url"] = PING_URL_ENV
    return overrides, sources


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _validation_problems(path: Path, exc: ValidationError, sources: Mapping[str, str]) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        origin = sources.get(loc)
        where = f"environment {origin} ({loc})" if origin else loc
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        problems.append(f"{path}: {where}: {msg}")
    return problems


def resolve(
    *,
    cli_path: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> LoadedConfig:
    """Merge defaults, file, environment and command line into one Settings.

    A missing file is fine unless it was named explicitly (``--config`` or
    ``$SYNCFLOW_CONFIG``): the database can come from the environment alone.
    ``exists`` on the result says whether it was found (``Runtime.load`` refuses
    to act on connectors without it).
    """
    env = os.environ if env is None else env
    path = config_path(cli_path, env)
    explicit = cli_path is not None or bool(env.get(CONFIG_ENV))
    exists = path.exists()
    data: dict[str, Any] = {}
    if exists or explicit:
        data = read_toml(path)
    problems = _secret_problems(path, data)
    for name in (data.get("connectors") or {}) if isinstance(data.get("connectors"), dict) else {}:
        conn = data["connectors"][name]
        if isinstance(conn, dict):
            data["connectors"][name] = {k: v for k, v in conn.items() if k not in LITERAL_SECRET_KEYS}
    if isinstance(data.get("database"), dict):
        data["database"].pop("password", None)
    env_data, sources = _env_overrides(env)
    merged = _merge(data, env_data)
    cli_data = {k: {kk: vv for kk, vv in v.items() if vv is not None} for k, v in (overrides or {}).items()}
    merged = _merge(merged, {k: v for k, v in cli_data.items() if v})
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        problems.extend(_validation_problems(path, exc, sources))
        raise ConfigError(problems) from None
    if problems:
        raise ConfigError(problems)
    return LoadedConfig(settings=settings, path=path, exists=exists, env=None if env is os.environ else env)
