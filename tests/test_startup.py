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

from syncflow import __version__
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


def test_a_nothing_due_sync_all_never_loads_the_http_client(tmp_path: Path, demo_cli: Cli) -> None:
    """The cron job's most frequent invocation: every entity synced recently, nothing to fetch."""
    assert demo_cli("discover").exit_code == 0
    assert demo_cli("sync", "--all").exit_code == 0
    env = {**demo_cli.env, "SYNCFLOW_CONFIG": str(demo_cli.config)}
    modules, _ = _loaded(tmp_path, "sync", "--all", "--json", env=env)
    assert "psycopg" in modules  # it did read the schedule
    for name in ("httpx", "syncflow.client", "syncflow.sync", "syncflow.workers", "prometheus_client"):
        assert name not in modules, name
