"""Start-up cost (issue 16): a command imports only what it needs.

Every cron invocation pays its imports before doing anything; typer, rich,
pydantic, psycopg and httpx together took about 0.45 s of a 0.55 s
``syncflow --version``. These tests check the structure (which modules a
command loads, in a fresh interpreter), never a time: the times are measured
by ``benchmarks/bench.py`` and written to ``docs/benchmarks.md``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from syncflow import __version__
from syncflow.cli import COMMANDS, app, command_module
from tests.helpers import Cli

# Runs the console script's entry point with argv, then writes the names of the loaded modules to a file
# (atexit: also after typer's SystemExit).
_PROBE = """
import atexit, json, sys
out, sys.argv = sys.argv[1], ["syncflow", *sys.argv[2:]]
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
from syncflow.cli import main
main()
"""

HEAVY = ("typer", "rich", "pydantic", "psycopg", "httpx", "prometheus_client")


def _loaded(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[set[str], str]:
    dump = tmp_path / "modules.json"
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, str(dump), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
        timeout=120,
    )
    assert dump.exists(), proc.stderr
    return set(json.loads(dump.read_text(encoding="utf-8"))), proc.stdout


def _top(modules: set[str]) -> set[str]:
    return {m.split(".", 1)[0] for m in modules}


def test_version_answers_before_any_framework_is_imported(tmp_path: Path) -> None:
    modules, stdout = _loaded(tmp_path, "--version")
    assert stdout == f"syncflow {__version__}\n"  # what typer's eager --version prints, byte for byte
    assert not _top(modules) & set(HEAVY), sorted(_top(modules) & set(HEAVY))
    assert "importlib.metadata" not in modules  # the version is a literal, not looked up among the installed


def test_version_with_other_options_still_goes_through_typer(tmp_path: Path) -> None:
    """Only a lone ``--version`` takes the short cut; anything else is parsed as before."""
    modules, stdout = _loaded(tmp_path, "--no-color", "--version")
    assert stdout == f"syncflow {__version__}\n"
    assert "typer" in modules


def test_the_command_line_loads_without_the_http_client_or_the_engine(tmp_path: Path) -> None:
    """``--help`` builds every command; none of them may pull in what only a sync or discover run needs."""
    modules, stdout = _loaded(tmp_path, "--help")
    assert "Exit codes" in stdout
    for name in ("httpx", "prometheus_client", "rich.progress", "syncflow.client", "syncflow.sync"):
        assert name not in modules, name
    for name in ("syncflow.workers", "syncflow.discovery", "syncflow.pages", "syncflow.stage"):
        assert name not in modules, name


# What a nothing-due ``sync --all`` must not import: the engine and its HTTP client, the live display and
# the tables (rich), the other commands and what only they use.
NOT_WHEN_NOTHING_IS_DUE = (
    "httpx",
    "tenacity",
    "prometheus_client",
    "rich",
    "dotenv",
    "tomli_w",
    "syncflow.client",
    "syncflow.sync",
    "syncflow.workers",
    "syncflow.pages",
    "syncflow.stage",
    "syncflow.merge",
    "syncflow.discovery",
    "syncflow.health",
    "syncflow.records",
    "syncflow.history",
    "syncflow.plan",
    "syncflow.doctor",
    "syncflow.results",  # a sync's own results are in syncflow.sync_report
    *(f"syncflow.cli.{m}" for m in COMMANDS if m != "sync"),
)


@pytest.mark.parametrize("output", [(), ("--json",)], ids=["text", "json"])
def test_a_nothing_due_sync_all_never_loads_the_http_client(
    tmp_path: Path, demo_cli: Cli, output: tuple[str, ...]
) -> None:
    """The cron job's most frequent invocation: every entity synced recently, nothing to fetch."""
    assert demo_cli("discover").exit_code == 0
    assert demo_cli("sync", "--all").exit_code == 0
    env = {**demo_cli.env, "SYNCFLOW_CONFIG": str(demo_cli.config)}
    modules, stdout = _loaded(tmp_path, "sync", "--all", *output, env=env)
    assert stdout == ("[]\n" if output else "")  # it did run: nothing was due
    assert "psycopg" in modules  # it did read the schedule
    loaded = {m for m in modules for name in NOT_WHEN_NOTHING_IS_DUE if m == name or m.startswith(f"{name}.")}
    assert not loaded, sorted(loaded)


@pytest.mark.parametrize(
    ("args", "module"),
    [
        (["sync", "--all"], "sync"),
        (["full-refresh", "erp.items"], "sync"),
        (["--config", "sync", "discover"], "discover"),  # the value of a global option is not the command
        (["--config=f.toml", "-q", "status"], "runs"),
        (["--env-file", "runs", "entity", "show", "x"], "entities"),
        (["--tz", "utc", "--no-color", "db", "upgrade"], "database"),
        (["connector", "--help"], "connectors"),
        ([], None),
        (["--help"], None),
        (["--version", "sync"], None),  # an option it does not know before the command
        (["synk", "--all"], None),  # a typo: typer suggests among all the commands
        (["--config"], None),
    ],
)
def test_the_command_line_knows_which_module_a_command_is_in(args: list[str], module: str | None) -> None:
    assert command_module(args) == module


def test_the_command_modules_are_where_they_are_said_to_be() -> None:
    """``COMMANDS`` (what the console script loads for a command) matches what each module registers."""
    found: dict[str, set[str]] = {}
    for info in app.registered_commands:
        assert info.name is not None
        assert info.callback is not None
        found.setdefault(info.callback.__module__.rsplit(".", 1)[1], set()).add(info.name)
    for group in app.registered_groups:
        assert group.name is not None
        assert group.typer_instance is not None
        for info in group.typer_instance.registered_commands:
            assert info.callback is not None
            found.setdefault(info.callback.__module__.rsplit(".", 1)[1], set()).add(group.name)
    assert found == {module: set(commands) for module, commands in COMMANDS.items()}


# Loads the command modules given as arguments (all without), then prints the help of each of their commands.
_HELPS = """
import sys
from syncflow.cli import COMMANDS, _load
modules = tuple(sys.argv[1:]) or tuple(COMMANDS)
app = _load(modules)
for command in [c for m in modules for c in COMMANDS[m]]:
    try:
        app([command, "--help"], prog_name="syncflow")
    except SystemExit:
        pass
"""


def test_a_command_loaded_alone_has_the_same_help_as_among_all(tmp_path: Path) -> None:
    """What the console script does for one command (load its module only) changes nothing it shows."""

    def helps(*modules: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-c", _HELPS, *modules],
            capture_output=True,
            text=True,
            env={**os.environ, "COLUMNS": "120", "NO_COLOR": "1"},
            check=True,
            timeout=120,
        )
        return proc.stdout

    alone = "".join(helps(module) for module in COMMANDS)
    assert "Usage: syncflow sync" in alone
    assert alone == helps()
