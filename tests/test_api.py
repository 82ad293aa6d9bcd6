"""The Python API: the README's example runs as written, and the API behaves like the CLI it serves."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import pytest

import syncflow
from demo_apismith import DemoServer
from syncflow.api import SyncRequest
from tests.helpers import DEMO_TOKEN, TOKEN_ENV, Cli

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Python API") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README's Python API section has no python example"
    return match.group(1)


@pytest.fixture
def in_project(demo_cli: Cli, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The demo connector's syncflow.toml in the current directory, the database and token in the environment."""
    monkeypatch.chdir(demo_cli.config.parent)
    for key, value in demo_cli.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("SYNCFLOW_CONFIG", raising=False)
    return demo_cli.config


def test_the_readme_example_runs(in_project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exec(compile(readme_example(), "README.md", "exec"), {})  # noqa: S102 - the documented example, verbatim
    printed = capsys.readouterr().out
    assert "erp.items create" in printed
    assert re.search(r"^erp\.items success 120 120$", printed, re.M), printed
    assert "'erp.items': True" in printed


def test_results_are_frozen_and_match_the_cli_json(in_project: Path, demo_cli: Cli) -> None:
    sf = syncflow.open("syncflow.toml")
    sf.discover()
    report = sf.sync("erp.items")
    assert isinstance(report, syncflow.SyncReport)
    with pytest.raises(AttributeError):
        report.signal = 15  # type: ignore[misc]
    with pytest.raises(AttributeError):
        report.runs[0].status = "failed"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        report.runs[0].counts.fetched = 0  # type: ignore[misc]
    with pytest.raises(TypeError):
        report.runs[0].error_details["x"] = 1  # type: ignore[index]
    run = report.runs[0]
    assert (run.entity, run.status, run.counts.fetched) == ("erp.items", "success", 120)
    records = sf.runs(entity="erp.items")
    assert [r.uid for r in records] == [run.uid]
    assert records[0].records_inserted == 120
    assert sf.run_record(run.uid[:8]).uid == run.uid
    import json

    cli_runs = json.loads(demo_cli("runs", "--json").stdout)
    assert cli_runs[0]["uid"] == records[0].to_json()["uid"]
    assert set(cli_runs[0]) == set(records[0].to_json())


def test_errors_are_the_syncflow_error_tree(in_project: Path, tmp_path: Path) -> None:
    with pytest.raises(syncflow.ConfigError) as info:
        syncflow.open(tmp_path / "missing.toml")
    assert info.value.exit_code == 2
    sf = syncflow.open("syncflow.toml")
    sf.discover()
    with pytest.raises(syncflow.UsageError, match=re.escape("no entity 'erp.nope': run 'syncflow discover erp'")):
        sf.sync("erp.nope")
    with pytest.raises(syncflow.UsageError, match="--all"):
        sf.run(SyncRequest(refs=("erp.items",), all_=True))


def test_an_unreachable_database_is_a_syncflow_error(in_project: Path) -> None:
    sf = syncflow.open("syncflow.toml", database_url="postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
    with pytest.raises(syncflow.DatabaseError) as info:
        sf.status()
    assert info.value.exit_code == 2


class Recorder:
    """An observer (syncflow.SyncObserver) that records what the core reports."""

    def __init__(self) -> None:
        self.pages: list[tuple[str, int]] = []
        self.ended: list[str] = []
        self.nothing = 0

    def progress(self, entity: str) -> Any:
        return lambda p: self.pages.append((entity, p.rows))

    def finished(self, outcome: syncflow.Outcome) -> None:
        self.ended.append(outcome.entity)

    def after_sync(self, hook: Any) -> None:
        pass

    def nothing_due(self) -> None:
        self.nothing += 1


def test_progress_goes_to_the_observer_and_nothing_is_printed(
    in_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sf = syncflow.open("syncflow.toml")
    sf.discover()
    capsys.readouterr()
    seen = Recorder()
    report = sf.sync_all(force=True, observer=seen)
    entities = {"erp.items", "erp.customers", "erp.orders"}
    assert {o.entity for o in report.outcomes} == entities
    assert sorted(seen.ended) == sorted(entities)
    assert {e for e, _ in seen.pages} == entities
    assert max(rows for e, rows in seen.pages if e == "erp.items") == 120
    later = sf.sync_all(observer=seen)  # nothing is due right after
    assert later.nothing_due
    assert later.exit_code == 0
    assert seen.nothing == 1
    assert capsys.readouterr().out == ""


def test_a_cancel_event_stops_the_call(in_project: Path, demo: DemoServer) -> None:
    sf = syncflow.open("syncflow.toml")
    sf.discover()
    cancel = threading.Event()

    def stop_soon(slug: str, page: int, params: dict[str, str]) -> None:
        cancel.set()

    demo.state.before_page = stop_soon
    report = sf.sync("erp.items", cancel=cancel)
    demo.state.before_page = None
    assert [r.status for r in report.runs] == ["cancelled"]
    assert report.exit_code != 0


def test_keyword_overrides_win_over_the_environment_which_wins_over_the_file(in_project: Path) -> None:
    in_project.write_text(in_project.read_text() + '\n[database]\nurl = "postgresql://file@127.0.0.1/f"\n')
    env = {"SYNCFLOW_DATABASE_URL": "postgresql://env@127.0.0.1/e", TOKEN_ENV: DEMO_TOKEN}
    assert syncflow.open("syncflow.toml", env={TOKEN_ENV: DEMO_TOKEN}).runtime.config.settings.database.url == (
        "postgresql://file@127.0.0.1/f"
    )
    assert syncflow.open("syncflow.toml", env=env).runtime.config.settings.database.url == (
        "postgresql://env@127.0.0.1/e"
    )
    sf = syncflow.open("syncflow.toml", env=env, database_url="postgresql://kw@127.0.0.1/k")
    assert sf.runtime.config.settings.database.url == "postgresql://kw@127.0.0.1/k"


def test_the_run_record_keeps_what_the_run_asked_of_the_source(in_project: Path, demo_cli: Cli) -> None:
    """HTTP requests, retries and time reached only --json before; now they are in sync_runs too."""
    import json

    sf = syncflow.open("syncflow.toml")
    sf.discover()
    run = sf.sync("erp.items").runs[0]
    assert run.http_requests >= 1
    stored = sf.run_record(run.uid)
    assert (stored.http_requests, stored.http_retries) == (run.http_requests, run.http_retries)
    assert stored.http_seconds is not None
    assert stored.http_seconds >= 0
    shown = json.loads(demo_cli("runs", "show", run.uid, "--json").stdout)
    assert shown["http_requests"] == run.http_requests


def test_one_syncflow_object_syncs_what_is_due_on_every_call(in_project: Path, demo_cli: Cli) -> None:
    """Found by review: a kept-open SyncFlow skipped every entity after its first sync_all, as
    "another process synced it meanwhile", because "meanwhile" was measured from the object's first call."""
    sf = syncflow.open("syncflow.toml")
    sf.discover()
    first = sf.sync_all(force=True)
    assert sorted(r.entity for r in first.runs) == ["erp.customers", "erp.items", "erp.orders"]
    again = sf.sync_all(force=True)
    assert sorted(r.entity for r in again.runs) == ["erp.customers", "erp.items", "erp.orders"], [
        (o.entity, o.skipped) for o in again.outcomes
    ]
    sf.sync("erp.orders")
    third = sf.sync_all(force=True)
    assert [o.skipped for o in third.outcomes] == [None, None, None]


def test_the_env_given_to_open_is_where_tokens_come_from(in_project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by review: open(env=...) read the database URL from env but the token from os.environ."""
    import os

    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    monkeypatch.setenv(TOKEN_ENV, "the-wrong-token")
    sf = syncflow.open("syncflow.toml", env={**env, TOKEN_ENV: DEMO_TOKEN})
    assert sf.test_connector("erp").ok
    wrong = syncflow.open("syncflow.toml", env={**env, TOKEN_ENV: "another-wrong-token"})
    check = wrong.test_connector("erp")
    assert not check.ok
    assert check.error is not None
    assert "401" in check.error


def test_a_cancel_set_before_the_call_is_reported_as_cancelled(in_project: Path) -> None:
    """Found by review: a pre-set cancel returned an empty report with exit code 0, as if all went well."""
    sf = syncflow.open("syncflow.toml")
    sf.discover()
    cancel = threading.Event()
    cancel.set()
    report = sf.sync("erp.items", cancel=cancel)
    assert report.cancelled
    assert not report.nothing_due
    assert report.exit_code == 130


def test_run_ids_match_by_prefix_only(in_project: Path, demo_cli: Cli) -> None:
    """Found by review: runs show '%' or '5_ee' matched as SQL LIKE patterns."""
    sf = syncflow.open("syncflow.toml")
    sf.discover()
    run = sf.sync("erp.items").runs[0]
    assert sf.run_record(run.uid[:6]).uid == run.uid
    for pattern in ("%", "_", run.uid[:2] + "%", "%" + run.uid[4:9]):
        with pytest.raises(syncflow.UsageError, match="no run"):
            sf.run_record(pattern)
    assert demo_cli("runs", "show", "%").exit_code == 2
