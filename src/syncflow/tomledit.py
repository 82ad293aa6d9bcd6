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


def _target(path: Path) -> Path:
    """The file to write: a symlinked ``syncflow.toml`` is edited where it points, the link is kept."""
    return Path(os.path.realpath(path))


def _read(path: Path) -> str:
    """The file's text ('' when it does not exist yet); unreadable is a configuration error."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None


def _atomic_write(path: Path, text: str) -> None:
    """Replace the file's content atomically, keeping its mode and owner; errors name the path.

    The new text goes to a temporary file beside the real file (through a symlink),
    which then replaces it. If the owner cannot be kept (not root, someone else's
    file), the file is rewritten in place instead, which keeps owner and mode.
    """
    target = _target(path)
    try:
        st = target.stat()
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise _write_error(path, exc) from None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    except OSError as exc:
        raise _write_error(path, exc) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, st.st_mode & 0o7777 if st is not None else 0o644)
        if st is not None and (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
            try:
                os.chown(tmp, st.st_uid, st.st_gid)
            except PermissionError:
                Path(tmp).unlink(missing_ok=True)
                _write_in_place(path, target, text)
                return
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise _write_error(path, exc) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_in_place(path: Path, target: Path, text: str) -> None:
    try:
        with target.open("w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise _write_error(path, exc) from None


def _write_error(path: Path, exc: OSError) -> ConfigError:
    target = _target(path)
    where = f"{path}" if target == path.absolute() else f"{path} (-> {target})"
    return ConfigError(
        f"cannot write {where}: {exc.strerror or exc}; nothing was changed (is {target.parent} writable by this user?)"
    )


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
    text = _read(path)
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
    if not path.exists():
        raise ConfigError(f"{path}: configuration file not found")
    text = _read(path)
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
