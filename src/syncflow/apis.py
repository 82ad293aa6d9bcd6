"""Parsing APISmith's ``/api/v1/apis`` answer into entity specs (pure).

Tolerant exactly as protocol section 1 says: absent fields get their
defaults, unknown fields are ignored, and an API that cannot be synced is kept
with the reason so that discovery of the others goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from syncflow.typemap import map_type

STRATEGIES = ("full", "rowversion", "hash")
# bridge.entities stores slug and name as varchar(200); PostgreSQL text cannot hold NUL at all.
MAX_SLUG = 200
MAX_NAME = 200


@dataclass(frozen=True)
class ColumnSpec:
    """One column as the API describes it, with its PostgreSQL type."""

    api_name: str
    source_name: str
    data_type: str
    pg_type: str
    is_nullable: bool
    is_business_key: bool


@dataclass(frozen=True)
class ApiSpec:
    """One API from discovery; ``unsyncable_reason`` set when it cannot be upserted."""

    slug: str
    name: str
    description: str
    delta_strategy: str
    business_keys: tuple[str, ...]  # API names (output_alias), in the order given
    columns: tuple[ColumnSpec, ...]
    warnings: tuple[str, ...] = ()
    unsyncable_reason: str | None = None


@dataclass
class ParseResult:
    """Every API that has a slug, plus warnings about the ones skipped outright.

    ``rejected``: APIs that cannot be stored at all (a slug PostgreSQL cannot
    hold); discovery goes on without them and reports them as failures.
    """

    apis: list[ApiSpec] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)


class Rejected(str):
    """A parse outcome: the API cannot be stored; the text says why, naming it."""


def _text(value: Any) -> str:
    text = value if isinstance(value, str) else ("" if value is None else str(value))
    return text.replace("\x00", "")  # PostgreSQL text and jsonb cannot hold NUL


def _bool(value: Any, default: bool) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return bool(value)
    if isinstance(value, str):
        v = value.strip().lower()
        if v in ("true", "t", "yes", "y", "1"):
            return True
        if v in ("false", "f", "no", "n", "0"):
            return False
    return default


def _parse_columns(slug: str, raw_cols: list[Any], warnings: list[str]) -> list[ColumnSpec]:
    """The usable columns; what is skipped (no name, a NUL, listed twice) goes to ``warnings``."""
    columns: list[ColumnSpec] = []
    seen: set[str] = set()
    for i, col in enumerate(raw_cols):
        if not isinstance(col, dict) or not isinstance(col.get("name"), str) or not col["name"]:
            warnings.append(f"{slug}: column #{i + 1} has no name; ignored")
            continue
        source = col["name"]
        alias = col.get("output_alias")
        api_name = alias if isinstance(alias, str) and alias else source
        if "\x00" in source or "\x00" in api_name:
            warnings.append(f"{slug}: column {api_name!r} has a NUL character in its name; ignored")
            continue
        if api_name in seen:
            warnings.append(f"{slug}: column {api_name!r} is listed twice; the first is kept")
            continue
        seen.add(api_name)
        data_type = _text(col.get("data_type")).strip() or "TEXT"
        mapped = map_type(data_type)
        if not mapped.known:
            warnings.append(f"{slug}: column {api_name!r} has unknown type {data_type!r}; stored as text")
        is_key = _bool(col.get("is_business_key"), False)
        columns.append(
            ColumnSpec(
                api_name=api_name,
                source_name=source,
                data_type=data_type,
                pg_type=mapped.pg_type,
                is_nullable=_bool(col.get("is_nullable"), True) and not is_key,
                is_business_key=is_key,
            )
        )
    return columns


def _business_keys(listed: Any, columns: list[ColumnSpec]) -> tuple[list[str], str | None]:
    """The business key's columns (``business_key_columns``, else the flagged ones), or why there is none."""
    keys: list[str] = []
    if isinstance(listed, list) and listed:
        by_name = {c.api_name: c for c in columns}
        by_source = {c.source_name: c for c in columns}
        for key in listed:
            col_spec = by_name.get(key) if isinstance(key, str) else None
            col_spec = col_spec or (by_source.get(key) if isinstance(key, str) else None)
            if col_spec is None:
                return keys, f"business key {key!r} is not among the columns"
            if col_spec.api_name not in keys:
                keys.append(col_spec.api_name)
    else:
        keys = [c.api_name for c in columns if c.is_business_key]
    if not keys:
        return keys, "no business key: neither business_key_columns nor is_business_key is given"
    return keys, None


def parse_api(raw: Any, index: int) -> ApiSpec | str:
    """One API, or a warning string when it has no usable slug (a :class:`Rejected` one when unstorable)."""
    if not isinstance(raw, dict):
        return f"API #{index + 1} is not a JSON object; skipped"
    slug = raw.get("slug")
    if not isinstance(slug, str) or not slug.strip():
        label = raw.get("name") if isinstance(raw.get("name"), str) else f"#{index + 1}"
        return f"API {label} has no slug; skipped"
    slug = slug.strip()
    if "\x00" in slug:
        return Rejected(f"API {slug!r} has a NUL character in its slug, which PostgreSQL cannot store; skipped")
    if len(slug) > MAX_SLUG:
        return Rejected(f"API {slug[:40]!r}... has a slug of {len(slug)} characters (at most {MAX_SLUG}); skipped")
    warnings: list[str] = []
    name = _text(raw.get("name"))
    if len(name) > MAX_NAME:
        warnings.append(f"{slug}: the API name has {len(name)} characters; the first {MAX_NAME} are kept")
        name = name[:MAX_NAME]
    strategy_raw = raw.get("delta_strategy")
    strategy = _text(strategy_raw).strip().lower() or "full"
    if strategy not in STRATEGIES:
        warnings.append(f"{slug}: unknown delta_strategy {strategy_raw!r}; using 'full'")
        strategy = "full"

    raw_cols = raw.get("columns")
    reason: str | None = None
    if not isinstance(raw_cols, list):
        reason = "the column list is missing or not a list"
        raw_cols = []
    columns = _parse_columns(slug, raw_cols, warnings)
    if reason is None and not columns:
        reason = "no usable columns"
    keys: list[str] = []
    if reason is None:
        keys, reason = _business_keys(raw.get("business_key_columns"), columns)
    key_set = set(keys)
    columns = [
        ColumnSpec(
            api_name=c.api_name,
            source_name=c.source_name,
            data_type=c.data_type,
            pg_type=c.pg_type,
            is_nullable=c.is_nullable and c.api_name not in key_set,
            is_business_key=c.api_name in key_set,
        )
        for c in columns
    ]
    return ApiSpec(
        slug=slug,
        name=name,
        description=_text(raw.get("description")),
        delta_strategy=strategy,
        business_keys=tuple(keys),
        columns=tuple(columns),
        warnings=tuple(warnings),
        unsyncable_reason=reason,
    )


def parse_apis(items: list[Any]) -> ParseResult:
    """All APIs of one discovery answer; duplicates of a slug keep the first."""
    result = ParseResult()
    seen: set[str] = set()
    for i, raw in enumerate(items):
        parsed = parse_api(raw, i)
        if isinstance(parsed, Rejected):
            result.rejected.append(str(parsed))
            continue
        if isinstance(parsed, str):
            result.warnings.append(parsed)
            continue
        if parsed.slug in seen:
            result.warnings.append(f"API {parsed.slug!r} is listed twice; the first is kept")
            continue
        seen.add(parsed.slug)
        result.apis.append(parsed)
    return result
