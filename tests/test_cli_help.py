"""Every command has help, and the version is printed."""

from __future__ import annotations

from typer.main import get_command
from typer.testing import CliRunner

from syncflow import __version__
from syncflow.cli import app


def _commands() -> list[list[str]]:
    root = get_command(app)
    found: list[list[str]] = []

    def walk(cmd: object, path: list[str]) -> None:
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                found.append([*path, name])
                walk(sub, [*path, name])

    walk(root, [])
    return found


def test_every_command_has_help() -> None:
    runner = CliRunner()
    commands = _commands()
    assert ["connector", "add"] in commands
    assert ["discover"] in commands
    for path in commands:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, path
        cmd = get_command(app)
        for part in path:
            cmd = cmd.commands[part]  # type: ignore[attr-defined]
        assert (cmd.help or "").strip(), f"{' '.join(path)} has no help text"


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"syncflow {__version__}\n"


def test_root_help_lists_exit_codes() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert "Exit codes" in result.stdout


def test_help_documents_exit_codes_of_locks_and_read_only_commands() -> None:
    root = " ".join(CliRunner().invoke(app, ["--help"]).stdout.split())
    assert "another session holds a lock" in root
    assert "no configuration file" in root
    sync_help = " ".join(CliRunner().invoke(app, ["sync", "--help"]).stdout.split())
    assert "never a failure" in sync_help
    assert "recorded as cancelled" in sync_help
    status_help = " ".join(CliRunner().invoke(app, ["status", "--help"]).stdout.split())
    assert "read-only" in status_help
    assert "delete guard" in status_help
