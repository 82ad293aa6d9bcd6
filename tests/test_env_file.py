"""`--env-file PATH` / `$SYNCFLOW_ENV_FILE`: KEY=VALUE lines as dotenv reads them; the environment wins."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from syncflow.cli import app
from tests.helpers import DEMO_TOKEN, TOKEN_ENV, Cli

# Every variable an env file in these tests sets: CliRunner restores exactly these afterwards.
TOUCHED = (TOKEN_ENV, "SYNCFLOW_DATABASE_URL", "SYNCFLOW_CONFIG", "SYNCFLOW_ENV_FILE", "SYNCFLOW_TEST_OTHER")


def run(args: list[str], env: dict[str, str | None]) -> Any:
    base: dict[str, str | None] = dict.fromkeys(TOUCHED)
    base.update(env)
    result = CliRunner().invoke(app, args, env=base)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def env_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "syncflow.env"
    path.write_text(text, encoding="utf-8")
    return path


def test_env_file_gives_the_token_without_export_with_quotes_and_comments(demo_cli: Cli, tmp_path: Path) -> None:
    path = env_file(
        tmp_path,
        f'# SyncFlow secrets\n{TOKEN_ENV}="{DEMO_TOKEN}"  # the bearer token\n'
        f"SYNCFLOW_DATABASE_URL={demo_cli.env['SYNCFLOW_DATABASE_URL']}\nexport SYNCFLOW_TEST_OTHER='x y'\n",
    )
    args = ["--config", str(demo_cli.config), "--env-file", str(path), "connector", "test", "erp"]
    r = run(args, {})
    assert r.exit_code == 0, r.stderr
    # Without the file the token is missing: the file is what made it work.
    r = run(["--config", str(demo_cli.config), "connector", "test", "erp"], {})
    assert r.exit_code == 2
    assert f"environment variable {TOKEN_ENV} is not set" in r.stderr


def test_variables_already_in_the_environment_win(demo_cli: Cli, tmp_path: Path) -> None:
    path = env_file(tmp_path, f"{TOKEN_ENV}={DEMO_TOKEN}\n")
    r = run(
        ["--config", str(demo_cli.config), "--env-file", str(path), "connector", "test", "erp"],
        {TOKEN_ENV: "wrong-token-from-the-environment"},
    )
    assert r.exit_code == 1, r.stderr
    assert "401" in r.stderr, r.stderr
    assert "wrong-token" not in r.stderr
    assert DEMO_TOKEN not in r.stderr


def test_syncflow_env_file_variable_and_the_option_beats_it(demo_cli: Cli, tmp_path: Path) -> None:
    good = env_file(tmp_path, f"{TOKEN_ENV}={DEMO_TOKEN}\nSYNCFLOW_CONFIG={demo_cli.config}\n")
    r = run(["connector", "test", "erp"], {"SYNCFLOW_ENV_FILE": str(good)})
    assert r.exit_code == 0, r.stderr  # the config file itself came from the env file
    r = run(["--env-file", str(good), "connector", "test", "erp"], {"SYNCFLOW_ENV_FILE": str(tmp_path / "absent")})
    assert r.exit_code == 0, r.stderr


def test_a_missing_env_file_is_a_config_error_naming_it(demo_cli: Cli, tmp_path: Path) -> None:
    absent = tmp_path / "nope.env"
    r = run(["--config", str(demo_cli.config), "--env-file", str(absent), "connector", "list"], {})
    assert r.exit_code == 2
    assert str(absent) in r.stderr
    assert "not found" in r.stderr
    r = run(["--config", str(demo_cli.config), "connector", "list"], {"SYNCFLOW_ENV_FILE": str(absent)})
    assert r.exit_code == 2
    assert str(absent) in r.stderr
    assert "SYNCFLOW_ENV_FILE" in r.stderr


def test_crontab_example_uses_env_file_and_no_sourcing() -> None:
    text = (Path(__file__).resolve().parents[1] / "examples" / "crontab").read_text(encoding="utf-8")
    jobs = [line for line in text.splitlines() if line.strip() and not line.startswith("#") and "syncflow " in line]
    assert jobs
    assert all("--env-file /etc/syncflow/env" in line for line in jobs)
    assert all(" . /etc/syncflow/env" not in line for line in jobs)
