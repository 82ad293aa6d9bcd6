"""Issue 15, operator experience: one JSON document per --json, times with offsets, tables at 80
columns, help texts, global options after the command, --quiet and colours. Real CLI, real PostgreSQL."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from typer.core import TyperGroup
from typer.main import get_command
from typer.testing import CliRunner

from syncflow.cli import app
from tests.helpers import TOKEN_ENV, Cli

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d ")


@pytest.fixture
def synced(demo_cli: Cli) -> Cli:
    r = demo_cli("discover")
    assert r.exit_code == 0, r.stderr
    return demo_cli


# -- 11: exactly one JSON document -----------------------------------------------------------


def test_sync_json_is_one_array(synced: Cli) -> None:
    r = synced("sync", "--all", "--json")
    assert r.exit_code == 0, r.stderr
    runs = json.loads(r.stdout)  # one document, not one object per line
    assert sorted(x["entity"] for x in runs) == ["erp.customers", "erp.items", "erp.orders"]
    assert all(x["status"] == "success" for x in runs)
    r = synced("sync", "--all", "--json")
    assert r.exit_code == 0
    assert json.loads(r.stdout) == []
    r = synced("full-refresh", "erp.items", "--json")
    assert [x["kind"] for x in json.loads(r.stdout)] == ["full_refresh"]


def test_sync_json_keeps_skips_and_errors_in_the_array(synced: Cli) -> None:
    r = synced("sync", "erp.items", "--json", env={TOKEN_ENV: "wrong"})
    assert r.exit_code == 1
    (run,) = json.loads(r.stdout)
    assert run["status"] == "failed"
    assert "HTTP 401" in run["error_message"]


def test_discover_json_includes_failed_connectors(synced: Cli) -> None:
    synced("connector", "add", "dead", "--url", "http://127.0.0.1:9")
    r = synced("discover", "--json")
    assert r.exit_code == 1
    data = json.loads(r.stdout)
    by_name = {d["connector"]: d for d in data}
    assert set(by_name) == {"dead", "erp"}
    assert by_name["dead"]["error"].startswith("connector dead: cannot connect to http://127.0.0.1:9")
    assert by_name["erp"]["error"] is None
    assert by_name["erp"]["entities"]
    r = synced("discover", "dead", "--json")  # one connector, failing: still one document
    assert r.exit_code == 1
    assert [d["connector"] for d in json.loads(r.stdout)] == ["dead"]


# -- 6: times with their offset, in one zone whatever the server session's ----------------------

TOKYO = {"PGTZ": "Asia/Tokyo"}
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00")


def _times(text: str) -> list[str]:
    return re.findall(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?[+-]\d\d:\d\d", text)


def test_times_are_utc_with_offset_whatever_the_session_zone(synced: Cli) -> None:
    assert synced("sync", "--all").exit_code == 0  # every next-due time fixed (a never-synced one is "now")
    for args in (("runs",), ("status",), ("entities",), ("db", "status")):
        plain = synced(*args)
        tokyo = synced(*args, env=TOKYO)
        assert plain.stdout == tokyo.stdout, args  # the session's zone changes nothing
        shown = _times(tokyo.stdout)
        assert shown, (args, tokyo.stdout)
        assert all(t.endswith("+00:00") for t in shown), (args, tokyo.stdout)
        assert not re.search(r"\d\d:\d\d:\d\d(?![.\d]*[+-]\d\d:\d\d)", tokyo.stdout.replace("0:00:0", "")), args
    run = json.loads(synced("runs", "--json", env=TOKYO).stdout)[0]
    assert ISO_UTC.fullmatch(run["started_at"])
    assert ISO_UTC.fullmatch(run["completed_at"])
    assert ISO_UTC.fullmatch(json.loads(synced("runs", "show", run["uid"], "--json", env=TOKYO).stdout)["started_at"])
    health = json.loads(synced("status", "--json", env=TOKYO).stdout)
    assert all(ISO_UTC.fullmatch(h["next_due_at"]) for h in health)
    listed = json.loads(synced("entities", "--json", env=TOKYO).stdout)
    assert ISO_UTC.fullmatch(next(e for e in listed if e["entity"] == "erp.items")["last_sync_at"])
    migrations = json.loads(synced("db", "status", "--json", env=TOKYO).stdout)["migrations"]
    assert all(ISO_UTC.fullmatch(m["applied_at"]) for m in migrations)


def test_tz_option_and_variable_choose_the_zone(synced: Cli) -> None:
    assert synced("sync", "erp.items").exit_code == 0
    utc = _times(synced("runs").stdout)[0]
    for shown in (
        synced("--tz", "Asia/Tokyo", "runs").stdout,
        synced("runs", env={"SYNCFLOW_TZ": "Asia/Tokyo"}).stdout,
    ):
        tokyo = _times(shown)[0]
        assert tokyo.endswith("+09:00")
        assert datetime.fromisoformat(tokyo) == datetime.fromisoformat(utc)
    local = synced("--tz", "local", "runs", "--json", env={"TZ": "America/New_York"}).stdout
    assert json.loads(local)[0]["started_at"][-6:] in ("-05:00", "-04:00")
    r = synced("--tz", "Mars/Olympus", "runs")
    assert r.exit_code == 2
    assert "--tz" in r.messages
    assert "Mars/Olympus" in r.messages


def test_as_of_without_offset_is_in_the_chosen_zone(synced: Cli) -> None:
    assert synced("entity", "set", "erp.orders", "--history").exit_code == 0
    assert synced("sync", "erp.orders").exit_code == 0
    key = ("--key", "order_no=SO0000000", "--key", "line_no=1")
    (version,) = json.loads(synced("history", "erp.orders", *key, "--json").stdout)
    after = datetime.fromisoformat(version["valid_from"]) + timedelta(seconds=1)
    in_tokyo = after.astimezone(ZoneInfo("Asia/Tokyo")).replace(tzinfo=None).isoformat()
    # Nine hours later read as UTC would be after the version began; before it began read as Tokyo time.
    found = json.loads(
        synced("--tz", "Asia/Tokyo", "history", "erp.orders", *key, "--as-of", in_tokyo, "--json").stdout
    )
    assert [v["operation"] for v in found] == ["insert"]
    before = (datetime.fromisoformat(version["valid_from"]) - timedelta(hours=1)).astimezone(ZoneInfo("Asia/Tokyo"))
    naive = before.replace(tzinfo=None).isoformat()
    found = json.loads(synced("--tz", "Asia/Tokyo", "history", "erp.orders", *key, "--as-of", naive, "--json").stdout)
    assert found == []
    assert version["valid_from"].endswith("+00:00")


# -- 12: help texts, global options anywhere, plain words instead of Python values ----------------


def _help(*path: str) -> str:
    r = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, (path, r.output)
    return r.stdout


def _all_commands() -> list[list[str]]:
    found: list[list[str]] = []

    def walk(cmd: object, path: list[str]) -> None:
        for name, sub in (getattr(cmd, "commands", None) or {}).items():
            found.append([*path, name])
            walk(sub, [*path, name])

    walk(get_command(app), [])
    return found


def test_every_command_has_an_example_and_no_python_metavars() -> None:
    for path in [[], *_all_commands()]:
        text = _help(*path)
        assert "<bool>" not in text, (path, text)
        assert "<list[" not in text, (path, text)
        assert "<str>" not in text, (path, text)
        if path and not isinstance(_command(path), TyperGroup):
            assert "Example" in text, path
            assert f"syncflow {' '.join(path)}" in text.split("Example", 1)[1], path


def _command(path: list[str]) -> object:
    cmd: Any = get_command(app)
    for part in path:
        cmd = cmd.commands[part]
    return cmd


def test_runs_help_lists_statuses_and_full_refresh_has_no_all() -> None:
    text = " ".join(_help("runs", "list").split())
    assert "running|success|partial|failed|abandoned|cancelled" in text
    assert "--all" not in _help("full-refresh")


def test_runs_show_is_a_real_subcommand(synced: Cli) -> None:
    assert "RUN_ID" in _help("runs", "show")
    assert "--limit" not in _help("runs", "show")
    assert synced("sync", "erp.items").exit_code == 0
    uid = json.loads(synced("runs", "--json").stdout)[0]["uid"]
    r = synced("runs", "show", uid[:8], "--limit", "5")
    assert r.exit_code == 2
    assert "--limit" in r.stderr
    assert synced("runs", "show", uid[:8]).exit_code == 0
    assert synced("runs", "list", "erp.items", "--limit", "1", "--json").exit_code == 0
    r = synced("runs", "--status", "weird")
    assert r.exit_code == 2
    assert "weird" in r.stderr


def test_ambiguous_run_prefix_says_how_many_match(synced: Cli) -> None:
    for _ in range(40):  # 40 runs: some two share a first hex digit
        assert synced("sync", "erp.customers", "--json").exit_code == 0
    uids = [r["uid"] for r in json.loads(synced("runs", "--limit", "100", "--json").stdout)]
    first = max({u[0] for u in uids}, key=lambda c: sum(u.startswith(c) for u in uids))
    n = sum(u.startswith(first) for u in uids)
    assert n > 1
    r = synced("runs", "show", first)
    assert r.exit_code == 2
    assert r.messages == f"error: run id {first!r} is ambiguous: {n} runs match; give more characters\n"


def test_text_output_shows_no_python_values(synced: Cli) -> None:
    assert synced("sync", "erp.items").exit_code == 0
    uid = json.loads(synced("runs", "--json").stdout)[0]["uid"]
    for args in (("connector", "show", "erp"), ("runs", "show", uid), ("entity", "show", "erp.items")):
        text = synced(*args).stdout
        assert not re.search(r": (None|True|False)$", text, re.MULTILINE), (args, text)
    assert "token_set: yes" in synced("connector", "show", "erp").stdout


def test_global_options_after_the_command(synced: Cli, tmp_path: Any) -> None:
    config = str(synced.config)
    env = synced.env
    r = CliRunner().invoke(app, ["entities", "--json", "--config", config], env=env)
    assert r.exit_code == 0, r.output
    assert {e["entity"] for e in json.loads(r.stdout)} == {"erp.customers", "erp.items", "erp.orders"}
    r = CliRunner().invoke(app, ["connector", "list", "--log-format", "json", "-c", config, "--json"], env=env)
    assert r.exit_code == 0
    assert json.loads(r.stdout)[0]["name"] == "erp"
    r = CliRunner().invoke(app, ["runs", "--tz=Asia/Tokyo", "--config", config], env=env)
    assert r.exit_code == 0, r.output


# -- 15: --quiet, colours, completion --------------------------------------------------------


def test_quiet_keeps_errors_and_the_summaries(synced: Cli) -> None:
    r = synced("--quiet", "sync", "erp.items", "erp.orders")
    assert r.exit_code == 0
    lines = r.messages.splitlines()
    assert len(lines) == 2, lines
    assert all(line.startswith("success erp.") for line in lines), lines
    assert synced("sync", "--all").exit_code == 0
    r = synced("sync", "--all", "-q")
    assert r.exit_code == 0
    assert r.stderr == ""
    r = synced("-q", "sync", "erp.nope")
    assert r.exit_code == 2
    assert r.messages.startswith("error: no entity 'erp.nope'")


def test_completion_is_installable() -> None:
    assert "--install-completion" in _help()


# -- 8: tables at 80 columns -----------------------------------------------------------------


def test_tables_fit_80_columns_without_truncating_names_statuses_or_times(synced: Cli) -> None:
    assert synced("sync", "--all").exit_code == 0
    assert synced("entity", "set", "erp.customers", "--interval", "86400").exit_code == 0
    narrow = {"COLUMNS": "80"}
    for args in (("runs",), ("status",), ("entities",), ("connector", "list"), ("discover", "--dry-run")):
        r = synced(*args, env=narrow)
        assert r.exit_code == 0, (args, r.stderr)
        lines = r.stdout.splitlines()
        assert lines, (args, r.stdout)
        assert max(len(line) for line in lines) <= 80, (args, r.stdout)
        assert "…" not in r.stdout, (args, r.stdout)
        if args[0] != "connector":
            assert all(ref in r.stdout for ref in ("erp.customers", "erp.items", "erp.orders")), r.stdout
        for time in _times(r.stdout):
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", time)
    runs = synced("runs", env=narrow).stdout
    assert runs.count("success") == 3
    assert len(_times(runs)) == 3
    assert "erp.customers" in synced("status", env=narrow).stdout
    wide = synced("runs", env={"COLUMNS": "200"}).stdout
    assert "unch" in wide
    assert "unch" not in runs


def test_an_error_under_json_is_one_json_document_on_stdout(demo_cli: Cli) -> None:
    """Found by review: with --json, a usage or configuration error left stdout empty (json.load crashed)."""
    assert demo_cli("discover").exit_code == 0
    for args, code in [
        (("sync", "erp.itemz", "--json"), 2),
        (("runs", "show", "zzzz", "--json"), 2),
        (("entity", "show", "erp.itemz", "--json"), 2),
        (("status", "--json", "--connector", "nope"), 2),
    ]:
        r = demo_cli(*args)
        assert r.exit_code == code, (args, r.stderr)
        doc = json.loads(r.stdout)
        assert doc["exit_code"] == code
        assert doc["error_type"] == "UsageError"
        assert doc["error"], args
    r = demo_cli("runs", "show", "zzzz")
    assert r.stdout == ""  # without --json, errors stay on stderr only


def test_a_bad_syncflow_tz_names_the_variable(demo_cli: Cli) -> None:
    r = demo_cli("runs", env={"SYNCFLOW_TZ": "Mars/Olympus"})
    assert r.exit_code == 2
    assert "$SYNCFLOW_TZ 'Mars/Olympus': not a time zone" in r.stderr
    r = demo_cli("runs", "--tz", "Mars/Olympus")
    assert "--tz 'Mars/Olympus': not a time zone" in r.stderr
