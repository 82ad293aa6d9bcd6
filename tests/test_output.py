"""Issue 15, operator experience: one JSON document per --json, times with offsets, tables at 80
columns, help texts, global options after the command, --quiet and colours. Real CLI, real PostgreSQL."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.conftest import TOKEN_ENV, Cli

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
    assert r.exit_code == 0 and json.loads(r.stdout) == []  # nothing due: an empty array, not nothing
    r = synced("full-refresh", "erp.items", "--json")
    assert [x["kind"] for x in json.loads(r.stdout)] == ["full_refresh"]


def test_sync_json_keeps_skips_and_errors_in_the_array(synced: Cli) -> None:
    r = synced("sync", "erp.items", "--json", env={TOKEN_ENV: "wrong"})
    assert r.exit_code == 1
    (run,) = json.loads(r.stdout)
    assert run["status"] == "failed" and "HTTP 401" in run["error_message"]


def test_discover_json_includes_failed_connectors(synced: Cli) -> None:
    synced("connector", "add", "dead", "--url", "http://127.0.0.1:9")
    r = synced("discover", "--json")
    assert r.exit_code == 1
    data = json.loads(r.stdout)
    by_name = {d["connector"]: d for d in data}
    assert set(by_name) == {"dead", "erp"}
    assert by_name["dead"]["error"].startswith("connector dead: cannot connect to http://127.0.0.1:9")
    assert by_name["erp"]["error"] is None and by_name["erp"]["entities"]
    r = synced("discover", "dead", "--json")  # one connector, failing: still one document
    assert r.exit_code == 1
    assert [d["connector"] for d in json.loads(r.stdout)] == ["dead"]


# -- 6: times with their offset, in one zone whatever the server session's ----------------------

TOKYO = {"PGTZ": "Asia/Tokyo"}
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00")


def _times(text: str) -> list[str]:
    return re.findall(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?[+-]\d\d:\d\d", text)


def test_times_are_utc_with_offset_whatever_the_session_zone(synced: Cli) -> None:
    assert synced("sync", "erp.items").exit_code == 0
    for args in (("runs",), ("status",), ("entities",), ("db", "status")):
        plain = synced(*args)
        tokyo = synced(*args, env=TOKYO)
        assert plain.stdout == tokyo.stdout, args  # the session's zone changes nothing
        shown = _times(tokyo.stdout)
        assert shown and all(t.endswith("+00:00") for t in shown), (args, tokyo.stdout)
        assert not re.search(r"\d\d:\d\d:\d\d(?![.\d]*[+-]\d\d:\d\d)", tokyo.stdout.replace("0:00:0", "")), args
    run = json.loads(synced("runs", "--json", env=TOKYO).stdout)[0]
    assert ISO_UTC.fullmatch(run["started_at"]) and ISO_UTC.fullmatch(run["completed_at"])
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
    assert r.exit_code == 2 and "--tz" in r.messages and "Mars/Olympus" in r.messages


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
