"""Bad configuration exits 2 with one line per problem naming file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from syncflow.config import resolve
from syncflow.errors import ConfigError
from tests.helpers import Cli


def write(cli: Cli, text: str) -> str:
    cli.config.write_text(text, encoding="utf-8")
    return str(cli.config)


def test_toml_syntax_error_names_line_and_column(cli: Cli) -> None:
    path = write(cli, '[database]\nschema = "bridge"\n[sync]\npage_size = \n')
    r = cli("connector", "list")
    assert r.exit_code == 2
    assert r.messages == f"error: {path}:4:13: TOML syntax error: Invalid value\n"


def test_unknown_key_and_wrong_type_reported_together(cli: Cli) -> None:
    path = write(cli, '[sync]\npage_size = "lots"\nworkerz = 3\n')
    r = cli("connector", "list")
    assert r.exit_code == 2
    lines = r.messages.splitlines()
    assert (
        f"error: {path}: sync.page_size: Input should be a valid integer, unable to parse string as an integer" in lines
    )
    assert f"error: {path}: sync.workerz: unknown key" in lines
    assert len(lines) == 2


def test_literal_token_is_refused(cli: Cli) -> None:
    path = write(cli, '[connectors.erp]\nbase_url = "https://x.example"\ntoken = "eyJsecret"\n')
    r = cli("connector", "list")
    assert r.exit_code == 2
    assert "eyJsecret" not in r.stderr + r.stdout
    assert r.messages == (
        f"error: {path}: connectors.erp.token: a literal token is not allowed in the file; put it in an "
        'environment variable and name that variable with token_env = "ERP_APISMITH_TOKEN"\n'
    )


def test_invalid_url(cli: Cli) -> None:
    path = write(cli, '[connectors.erp]\nbase_url = "ftp://x.example"\n')
    r = cli("connector", "list")
    assert r.exit_code == 2
    assert r.messages == (
        f"error: {path}: connectors.erp.base_url: invalid URL 'ftp://x.example': "
        "expected http://host[:port][/path] or https://...\n"
    )


def test_token_variable_not_set(cli: Cli) -> None:
    path = write(cli, '[connectors.erp]\nbase_url = "http://127.0.0.1:9"\ntoken_env = "NOPE_NOT_SET"\n')
    r = cli("connector", "test", "erp", env={"NOPE_NOT_SET": ""})
    assert r.exit_code == 2
    assert r.messages == f"error: {path}: connectors.erp.token_env: environment variable NOPE_NOT_SET is not set\n"


def test_missing_explicit_file(cli: Cli) -> None:
    cli.config.unlink()
    r = cli("connector", "list")
    assert r.exit_code == 2
    assert r.messages == f"error: {cli.config}: configuration file not found\n"


def test_environment_overrides_file_and_is_named_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text("[sync]\nworkers = 2\npage_size = 10\n", encoding="utf-8")
    loaded = resolve(cli_path=path, env={"SYNCFLOW_SYNC_WORKERS": "7"})
    assert loaded.settings.sync.workers == 7
    assert loaded.settings.sync.page_size == 10
    with pytest.raises(ConfigError) as info:
        resolve(cli_path=path, env={"SYNCFLOW_SYNC_WORKERS": "many"})
    assert info.value.problems == [
        f"{path}: environment SYNCFLOW_SYNC_WORKERS (sync.workers): "
        "Input should be a valid integer, unable to parse string as an integer"
    ]


def test_command_line_beats_environment(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[database]\nurl = "postgresql://file/db"\n', encoding="utf-8")
    env = {"SYNCFLOW_DATABASE_URL": "postgresql://env/db"}
    assert resolve(cli_path=path, env=env).settings.database.url == "postgresql://env/db"
    loaded = resolve(cli_path=path, env=env, overrides={"database": {"url": "postgresql://cli/db"}})
    assert loaded.settings.database.url == "postgresql://cli/db"


def test_config_file_from_environment_variable(tmp_path: Path) -> None:
    path = tmp_path / "other.toml"
    path.write_text("[sync]\nworkers = 3\n", encoding="utf-8")
    assert resolve(env={"SYNCFLOW_CONFIG": str(path)}).settings.sync.workers == 3


# -- credentials in base_url, CA bundle, response cap -----------------------------------------

CREDS_FIX = "credentials in base_url are not allowed; put the token in the environment variable named by token_env"


@pytest.mark.parametrize("url", ["http://svcuser:S3cretPW@127.0.0.1:1", "https://S3cretPW@127.0.0.1:1/smith"])
def test_credentials_in_base_url_are_refused_in_the_file(cli: Cli, url: str) -> None:
    path = write(cli, f'[connectors.erp]\nbase_url = "{url}"\n')
    for args in (("connector", "list"), ("connector", "show", "erp", "--json"), ("connector", "test", "erp")):
        r = cli(*args)
        assert r.exit_code == 2, args
        assert "S3cretPW" not in r.stdout + r.stderr
        assert r.messages == f"error: {path}: connectors.erp.base_url: {CREDS_FIX}\n"


def test_credentials_in_base_url_are_refused_by_connector_add(cli: Cli) -> None:
    before = cli.config.read_text(encoding="utf-8")
    r = cli("connector", "add", "erp", "--url", "http://svcuser:S3cretPW@127.0.0.1:1", "--token-env", "ERP_T")
    assert r.exit_code == 2
    assert "S3cretPW" not in r.stdout + r.stderr
    assert CREDS_FIX in r.stderr
    assert cli.config.read_text(encoding="utf-8") == before


def test_missing_ca_bundle_is_a_configuration_error_naming_the_file(cli: Cli, tmp_path: Path) -> None:
    missing = tmp_path / "certs" / "apismith-ca.pem"
    write(cli, f'[connectors.erp]\nbase_url = "https://127.0.0.1:1"\nverify_tls = "{missing}"\n')
    r = cli("connector", "test", "erp")
    assert r.exit_code == 2
    assert str(missing) in r.stderr
    assert "connectors.erp.verify_tls" in r.stderr


def test_max_response_bytes_default_and_validation(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text("[sync]\nmax_response_bytes = 1024\n", encoding="utf-8")
    assert resolve(cli_path=path, env={}).settings.sync.max_response_bytes == 1024
    path.write_text("", encoding="utf-8")
    assert resolve(cli_path=path, env={}).settings.sync.max_response_bytes == 268_435_456
    with pytest.raises(ConfigError) as info:
        resolve(cli_path=path, env={"SYNCFLOW_SYNC_MAX_RESPONSE_BYTES": "0"})
    assert info.value.problems == [
        f"{path}: environment SYNCFLOW_SYNC_MAX_RESPONSE_BYTES (sync.max_response_bytes): Input should be greater than 0"
    ]


def test_runtime_client_gets_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from syncflow.runtime import Runtime

    path = tmp_path / "s.toml"
    path.write_text(
        "[sync]\nmax_response_bytes = 4096\nhttp_timeout_seconds = 7\n\n"
        '[connectors.erp]\nbase_url = "http://127.0.0.1:1"\ntoken_env = "ERP_T"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("ERP_T", "not-this-one")  # the environment given to load() is where the token comes from
    runtime = Runtime.load(config_path=path, env={"ERP_T": "tok"})
    cancel = threading.Event()
    with runtime.client("erp", cancel=cancel) as client:
        assert (client.max_response_bytes, client.timeout, client.token_env) == (4096, 7.0, "ERP_T")
        assert client.cancel is cancel
