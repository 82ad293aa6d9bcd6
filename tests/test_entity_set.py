"""`entity set`: conflicting flags are refused; a change the file overrides is reported and fails."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from syncflow.config import resolve
from tests.helpers import Cli


@pytest.fixture
def found(demo_cli: Cli) -> Cli:
    assert demo_cli("discover").exit_code == 0
    return demo_cli


@pytest.mark.parametrize(
    ("flags", "names"),
    [
        (["--enable", "--disable"], "--enable and --disable"),
        (["--disable", "--enable"], "--enable and --disable"),
        (["--history", "--no-history"], "--history and --no-history"),
    ],
)
def test_conflicting_flags_are_a_usage_error(found: Cli, flags: list[str], names: str) -> None:
    before = json.loads(found("entity", "show", "erp.items", "--json").stdout)
    r = found("entity", "set", "erp.items", *flags)
    assert r.exit_code == 2
    assert "conflicting options" in r.stderr
    assert names in r.stderr
    after = json.loads(found("entity", "show", "erp.items", "--json").stdout)
    assert (after["enabled"], after["history"]) == (before["enabled"], before["history"])


def test_a_change_the_file_overrides_fails_and_says_so(found: Cli) -> None:
    with found.config.open("a", encoding="utf-8") as fh:
        fh.write("\n[connectors.erp.entities.items]\ninterval_seconds = 60\nenabled = true\npage_size = 1000\n")
    r = found("entity", "set", "erp.items", "--interval", "90")
    assert r.exit_code == 1, r.stderr
    assert "interval_seconds" in r.stderr
    assert str(found.config) in r.stderr
    assert "no effect" in r.stderr
    # Only the requested setting is mentioned, not every key the file sets.
    assert "enabled" not in r.stderr.split("\n", 1)[1]
    assert "page_size" not in r.stderr.split("\n", 1)[1]
    data = json.loads(found("entity", "show", "erp.items", "--json").stdout)
    assert data["interval_seconds"] == 60


def test_a_change_the_file_does_not_override_succeeds_quietly(found: Cli) -> None:
    with found.config.open("a", encoding="utf-8") as fh:
        fh.write("\n[connectors.erp.entities.items]\ninterval_seconds = 60\nenabled = true\n")
    r = found("entity", "set", "erp.items", "--page-size", "500")
    assert r.exit_code == 0, r.stderr
    assert "wins" not in r.stderr
    assert "no effect" not in r.stderr
    assert json.loads(found("entity", "show", "erp.items", "--json").stdout)["page_size"] == 500


def test_a_change_to_the_value_the_file_already_sets_is_no_failure(found: Cli) -> None:
    with found.config.open("a", encoding="utf-8") as fh:
        fh.write("\n[connectors.erp.entities.items]\nenabled = true\n")
    r = found("entity", "set", "erp.items", "--enable")
    assert r.exit_code == 0, r.stderr


def test_the_example_file_locks_no_entity_setting() -> None:
    example = Path(__file__).resolve().parents[1] / "syncflow.toml.example"
    assert resolve(cli_path=example, env={}).settings.connectors["erp"].entities == {}


def test_history_of_an_entity_with_history_off_fails_and_says_how(found: Cli) -> None:
    assert found("sync", "erp.customers").exit_code == 0
    r = found("history", "erp.customers", "--key", "customer_id=1")
    assert r.exit_code == 1
    assert "history is off" in r.stderr
    assert "syncflow entity set erp.customers --history" in r.stderr
