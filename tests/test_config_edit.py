"""`connector add/remove` edit syncflow.toml safely: through symlinks, keeping mode and owner,
and with a clear error (exit 2, nothing changed) where the file cannot be written.

Tests run as root, which chmod does not stop. The read-only directory is made
immutable with ``chattr +i`` (root can then create no file in it, which is what
an atomic replace needs); as another user a plain ``chmod 0555`` does it. A
path under a regular file fails for everyone and needs neither.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Cli

ADD = ("connector", "add", "crm", "--url", "https://crm.example")
START = '# production\n[connectors.erp]\nbase_url = "https://erp.example"\n'


def _run(cli: Cli, config: Path, *args: str) -> tuple[int, str]:
    moved = Cli(config=config, env=cli.env)
    r = moved(*args)
    return r.exit_code, r.stderr


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "syncflow.toml").write_text(START, encoding="utf-8")
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)], check=False).returncode:
        pytest.skip("running as root without chattr +i support: no way to make a directory read-only for root")
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_add_and_remove_in_a_read_only_directory_are_a_clear_error(cli: Cli, read_only_dir: Path) -> None:
    config = read_only_dir / "syncflow.toml"
    code, stderr = _run(cli, config, *ADD)
    assert code == 2, stderr
    assert f"cannot write {config}" in stderr
    assert "nothing was changed" in stderr
    assert "Traceback" not in stderr
    assert "PermissionError" not in stderr
    code, stderr = _run(cli, config, "connector", "remove", "erp")
    assert code == 2
    assert f"cannot write {config}" in stderr
    assert config.read_text(encoding="utf-8") == START
    assert sorted(p.name for p in read_only_dir.iterdir()) == ["syncflow.toml"]


def test_add_under_a_path_that_is_a_file_is_a_clear_error(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("", encoding="utf-8")
    config = tmp_path / "plain" / "syncflow.toml"
    code, stderr = _run(cli, config, *ADD)
    assert code == 2, stderr
    assert str(config) in stderr
    assert "Not a directory" in stderr
    assert "Traceback" not in stderr
    code, stderr = _run(cli, config, "connector", "remove", "erp")
    assert code == 2
    assert str(config) in stderr
    assert "Traceback" not in stderr


def test_a_symlinked_config_is_edited_through_the_link(cli: Cli, tmp_path: Path) -> None:
    real_dir = tmp_path / "real"
    real_dir.mkdir()
    real = real_dir / "syncflow.toml"
    real.write_text(START, encoding="utf-8")
    link = tmp_path / "syncflow.toml"
    link.unlink(missing_ok=True)
    link.symlink_to(real)
    code, stderr = _run(cli, link, *ADD)
    assert code == 0, stderr
    assert link.is_symlink()
    assert link.resolve() == real
    assert "[connectors.crm]" in real.read_text(encoding="utf-8")
    code, stderr = _run(cli, link, "connector", "remove", "crm")
    assert code == 0, stderr
    assert link.is_symlink()
    assert real.read_text(encoding="utf-8") == START
    assert sorted(p.name for p in real_dir.iterdir()) == ["syncflow.toml"]


def test_mode_and_owner_are_kept(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "syncflow.toml"
    config.write_text(START, encoding="utf-8")
    config.chmod(0o640)
    owner = (1, 1) if os.geteuid() == 0 else (os.getuid(), os.getgid())  # root: give it to "daemon"
    os.chown(config, *owner)
    code, stderr = _run(cli, config, *ADD)
    assert code == 0, stderr
    st = config.stat()
    assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o640, *owner)
    code, stderr = _run(cli, config, "connector", "remove", "crm")
    assert code == 0, stderr
    st = config.stat()
    assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o640, *owner)
