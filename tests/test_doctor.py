"""`syncflow doctor`: one line per check, --json, exit 0 when all pass and 1 when any fails; no secret shown."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from demo_apismith import DemoServer, DemoState
from syncflow import doctor
from syncflow.cli import app
from syncflow.runtime import Runtime
from tests.helpers import TOKEN_ENV, Cli


def jwt(exp: datetime | None, signature: str = "c2lnbmF0dXJlLXRoYXQtbXVzdC1zdGF5LXNlY3JldA") -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    claims: dict[str, Any] = {"sub": "syncflow", "name": "Secret Name Inside"}
    if exp is not None:
        claims["exp"] = int(exp.timestamp())
    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.{signature}"


def doctor_json(cli: Cli, *global_args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any], str]:
    r = CliRunner().invoke(
        app, [*global_args, "--config", str(cli.config), "doctor", "--json"], env={**cli.env, **(env or {})}
    )
    if r.exception and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, json.loads(r.stdout), r.stderr


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["check"]: c for c in report["checks"]}


@pytest.fixture
def jwt_server() -> Iterator[tuple[DemoServer, str]]:
    token = jwt(datetime.now(UTC) + timedelta(days=30))
    state = DemoState({"items": 5}, token=token)
    with DemoServer(state) as server:
        yield server, token


def configure(cli: Cli, url: str, extra: str = "") -> None:
    cli.config.write_text(
        f'[sync]\npage_size = 500\nretry_backoff_seconds = 0\n\n[connectors.erp]\nbase_url = "{url}"\n'
        f'token_env = "{TOKEN_ENV}"\n{extra}',
        encoding="utf-8",
    )


def test_all_checks_pass_and_each_key_names_its_source(cli: Cli, jwt_server: tuple[DemoServer, str]) -> None:
    server, token = jwt_server
    configure(cli, server.url)
    assert cli("db", "upgrade").exit_code == 0
    code, report, _ = doctor_json(cli, env={TOKEN_ENV: token, "SYNCFLOW_SYNC_WORKERS": "3"})
    assert code == 0, report
    assert report["ok"] is True
    assert report["config"] == {"path": str(cli.config), "found_by": "--config", "exists": True}
    settings = {s["key"]: s for s in report["settings"]}
    assert (settings["sync.workers"]["value"], settings["sync.workers"]["source"]) == (3, "env SYNCFLOW_SYNC_WORKERS")
    assert (settings["sync.page_size"]["value"], settings["sync.page_size"]["source"]) == (500, "file")
    assert (settings["sync.http_timeout_seconds"]["value"], settings["sync.http_timeout_seconds"]["source"]) == (
        30.0,
        "default",
    )
    assert settings["database.url"]["source"] == "env SYNCFLOW_DATABASE_URL"
    assert settings["connectors.erp.token_env"] == {
        "key": "connectors.erp.token_env",
        "value": TOKEN_ENV,
        "source": "file",
    }
    checks = by_name(report)
    assert {c["status"] for c in checks.values()} == {"ok"}
    assert {"config", "database", "migrations", "clock", "connector erp", "token erp"} <= set(checks)
    assert "expires" in checks["token erp"]["message"]
    assert abs(checks["clock"]["skew_seconds"]) < 5


def test_text_output_is_one_line_per_check_and_flag_source(cli: Cli, jwt_server: tuple[DemoServer, str]) -> None:
    server, token = jwt_server
    configure(cli, server.url)
    url = cli.env["SYNCFLOW_DATABASE_URL"]
    r = CliRunner().invoke(
        app, ["--config", str(cli.config), "--database-url", url, "doctor"], env={**cli.env, TOKEN_ENV: token}
    )
    assert r.exit_code == 1, r.stdout + r.stderr  # migrations not applied yet
    lines = r.stdout.splitlines()
    assert any(line.startswith("fail") and "migrations" in line and "syncflow db upgrade" in line for line in lines)
    assert any("database.url" in line and "(flag --database-url)" in line for line in lines)
    assert any(line.startswith("ok") and "connector erp" in line for line in lines)
    assert all(line.split(" ", 1)[0] in ("ok", "warn", "fail", "info") for line in lines), lines


def test_secrets_are_redacted(cli: Cli, jwt_server: tuple[DemoServer, str]) -> None:
    server, token = jwt_server
    configure(cli, server.url)
    info = psycopg.conninfo.conninfo_to_dict(cli.env["SYNCFLOW_DATABASE_URL"])
    url = f"postgresql://{info['user']}:S3cretPW@{info['host']}:{info['port']}/{info['dbname']}"
    for args in (["--json"], []):
        r = CliRunner().invoke(
            app,
            ["--config", str(cli.config), "doctor", *args],
            env={**cli.env, TOKEN_ENV: token, "SYNCFLOW_DATABASE_URL": url},
        )
        shown = r.stdout + r.stderr
        assert "S3cretPW" not in shown
        for piece in token.split("."):
            assert piece not in shown
        assert "Secret Name Inside" not in shown
        assert "database.url" in shown
        assert "****" in shown


def test_token_expiry_warns_within_7_days_and_fails_when_expired(cli: Cli) -> None:
    soon = jwt(datetime.now(UTC) + timedelta(days=3))
    with DemoServer(DemoState({"items": 5}, token=soon)) as server:
        configure(cli, server.url)
        assert cli("db", "upgrade").exit_code == 0
        code, report, _ = doctor_json(cli, env={TOKEN_ENV: soon})
        assert code == 0
        check = by_name(report)["token erp"]
        assert check["status"] == "warn"
        assert "expires" in check["message"]
        assert check["expires_at"].startswith((datetime.now(UTC) + timedelta(days=3)).date().isoformat()[:7])
    old = jwt(datetime.now(UTC) - timedelta(hours=1))
    with DemoServer(DemoState({"items": 5}, token=old)) as server:
        configure(cli, server.url)
        code, report, _ = doctor_json(cli, env={TOKEN_ENV: old})
        assert code == 1
        check = by_name(report)["token erp"]
        assert check["status"] == "fail"
        assert "expired" in check["message"]
        assert by_name(report)["connector erp"]["status"] == "ok"  # the demo still takes it: only the expiry fails


def test_a_refused_token_unset_variable_and_unreachable_database_fail(cli: Cli, demo: DemoServer) -> None:
    configure(cli, demo.url, f'\n[connectors.other]\nbase_url = "{demo.url}"\ntoken_env = "SYNCFLOW_TEST_UNSET"\n')
    code, report, _ = doctor_json(
        cli, env={TOKEN_ENV: "not-the-token", "SYNCFLOW_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x"}
    )
    assert code == 1
    assert report["ok"] is False
    checks = by_name(report)
    assert checks["database"]["status"] == "fail"
    assert "port 1" in checks["database"]["message"]
    assert checks["connector erp"]["status"] == "fail"
    assert "401" in checks["connector erp"]["message"]
    assert checks["token erp"]["status"] == "ok"
    assert "not a JWT" in checks["token erp"]["message"]
    assert checks["connector other"]["status"] == "fail"
    assert "SYNCFLOW_TEST_UNSET is not set" in checks["connector other"]["message"]
    assert "not-the-token" not in json.dumps(report)


def test_config_file_rules(cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cli.config.write_text("[sync]\nworkers = 2\n", encoding="utf-8")
    runner = CliRunner()
    r = runner.invoke(app, ["doctor", "--json"], env={**cli.env, "SYNCFLOW_CONFIG": str(cli.config)})
    assert json.loads(r.stdout)["config"]["found_by"] == "$SYNCFLOW_CONFIG"
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, ["doctor", "--json"], env={**cli.env, "SYNCFLOW_CONFIG": None})
    report = json.loads(r.stdout)
    assert report["config"]["found_by"] == "./syncflow.toml"
    (tmp_path / "syncflow.toml").unlink()
    r = runner.invoke(app, ["doctor", "--json"], env={**cli.env, "SYNCFLOW_CONFIG": None})
    report = json.loads(r.stdout)
    assert r.exit_code == 1
    assert by_name(report)["config"]["status"] == "fail"
    assert "no configuration file" in by_name(report)["config"]["message"]


def test_an_invalid_file_fails_the_config_check(cli: Cli) -> None:
    cli.config.write_text("[sync]\nworkers = 0\n", encoding="utf-8")
    code, report, _ = doctor_json(cli)
    assert code == 1
    assert by_name(report)["config"]["status"] == "fail"
    assert "sync.workers" in by_name(report)["config"]["message"]


def test_clock_skew_against_the_database(db_url: str, tmp_path: Path) -> None:
    runtime = Runtime.load(config_path=None, database_url=db_url, require_file=False, env={})
    with psycopg.connect(db_url) as conn:
        ok = doctor.clock_check(conn, clock=lambda: datetime.now(UTC))
        ahead = doctor.clock_check(conn, clock=lambda: datetime.now(UTC) + timedelta(seconds=120))
        slightly = doctor.clock_check(conn, clock=lambda: datetime.now(UTC) - timedelta(seconds=10))
    assert runtime.schema == "bridge"
    assert ok.status == "ok"
    assert ahead.status == "fail"
    assert ahead.details["skew_seconds"] < -100
    assert slightly.status == "warn"
    assert slightly.details["skew_seconds"] > 5
