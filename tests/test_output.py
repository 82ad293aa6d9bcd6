"""Issue 15, operator experience: one JSON document per --json, times with offsets, tables at 80
columns, help texts, global options after the command, --quiet and colours. Real CLI, real PostgreSQL."""

from __future__ import annotations

import json
import re

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
