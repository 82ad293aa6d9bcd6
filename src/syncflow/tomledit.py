"""Edits to ``syncflow.toml`` that keep the operator's comments and layout.

tomli-w can only write whole documents, which would drop every comment. So a
new connector is serialized on its own with tomli-w and appended as text, and
removal cuts the connector's own tables out of the text. Both re-parse the
result before writing it (atomically), so a file is never left broken.
"""

from __future__ import annotations

import os
import re
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from syncflow.config import CONNECTOR_NAME_RE
from syncflow.errors import ConfigError, UsageError

_HEADER_RE = re.compile(r"^\s*\[\[?\s*(?P<name>[^\]]+?)\s*\]\]?\s*(#.*)?$")


def _table_path(header: str) -> list[str]:
    """Split a TOML table header into its keys (quoted keys unquoted)."""
    keys = re.findall(r'"((?:[^"\\]|\\.)*)"|\'([^\']*)\'|([A-Za-z0-9_-]+)', header)
    return [a or b or c for a, b, c in keys]


def _atomic_write(path: Path, text: str) -> None:
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or Path("."))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _parse(path: Path, text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: TOML syntax error: {exc}; fix the file first") from None


def add_connector(path: Path, name: str, table: dict[str, Any]) -> None:
    """Append ``[connectors.NAME]`` to the file, creating the file if needed."""
    if not CONNECTOR_NAME_RE.match(name):
        raise UsageError(
            f"invalid connector name {name!r}: use lower-case letters, digits and '_', starting with a letter"
        )
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    current = _parse(path, text)
    if name in (current.get("connectors") or {}):
        raise UsageError(f"{path}: connector {name!r} already exists")
    block = tomli_w.dumps({"connectors": {name: table}})
    if text and not text.endswith("\n"):
        text += "\n"
    if text.strip():
        text += "\n"
    new_text = text + block
    _parse(path, new_text)
    _atomic_write(path, new_text)


def remove_connector(path: Path, name: str) -> None:
    """Cut ``[connectors.NAME]`` and its sub-tables out of the file."""
    text = path.read_text(encoding="utf-8")
    if name not in (_parse(path, text).get("connectors") or {}):
        raise UsageError(f"{path}: no connector named {name!r}")
    lines = text.splitlines(keepends=True)
    keep: list[str] = []
    removing = False
    pending: list[str] = []  # comments/blank lines between tables: they belong to what follows
    for line in lines:
        m = _HEADER_RE.match(line)
        if m:
            keys = _table_path(m.group("name"))
            now_removing = keys[:2] == ["connectors", name]
            if not now_removing:
                keep.extend(pending)  # comments above the next table stay with it
            pending = []
            removing = now_removing
            if not removing:
                keep.append(line)
            continue
        if removing:
            if line.strip() == "" or line.lstrip().startswith("#"):
                pending.append(line)
            else:
                pending = []
            continue
        keep.append(line)
    if not removing:
        keep.extend(pending)
    new_text = "".join(keep).rstrip("\n") + "\n" if keep else ""
    if name in (_parse(path, new_text).get("connectors") or {}):
        raise ConfigError(
            f"{path}: connector {name!r} is not written as a [connectors.{name}] table; remove it by hand"
        )
    _atomic_write(path, new_text)
