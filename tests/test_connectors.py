"""`connector add/remove/list/show/test` and mirroring into bridge.connectors."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg

from tests.helpers import DEMO_TOKEN, TOKEN_ENV, Cli

COMMENTED = """\
# Production SyncFlow
[database]
schema = "bridge"   # keep the default

# ERP, the main source
[connectors.erp]
base_url = "https://erp.example:8007"  # behind the proxy
token_env = "ERP_TOKEN"

[connectors.erp.entities.items]
interval_seconds = 60

# Warehouse system
[connectors.wms]
base_url = "https://wms.example"
"""


def test_add_then_remove_keeps_comments(cli: Cli) -> None:
    cli.config.write_text(COMMENTED, encoding="utf-8")
    r = cli(
        "connector",
        "add",
        "crm",
        "--url",
        "https://crm.example/smith",
        "--token-env",
        "CRM_TOKEN",
        "--target-schema",
        "crm_data",
    )
    assert r.exit_code == 0, r.stderr
    text = cli.config.read_text(encoding="utf-8")
    assert text.startswith(COMMENTED)
    assert '[connectors.crm]\nbase_url = "https://crm.example/smith"\ntoken_env = "CRM_TOKEN"\n' in text
    listed = json.loads(cli("connector", "list", "--json").stdout)
    assert [c["name"] for c in listed] == ["crm", "erp", "wms"]
    assert listed[0]["target_schema"] == "crm_data"

    r = cli("connector", "remove", "crm")
    assert r.exit_code == 0, r.stderr
    assert cli.config.read_text(encoding="utf-8") == COMMENTED


def test_remove_middle_connector_keeps_other_comments(cli: Cli) -> None:
    cli.config.write_text(COMMENTED, encoding="utf-8")
    assert cli("connector", "remove", "erp").exit_code == 0
    text = cli.config.read_text(encoding="utf-8")
    assert "erp" not in text.replace("# ERP", "")
    assert "# Production SyncFlow" in text
    assert 'schema = "bridge"   # keep the default' in text
    assert "# Warehouse system\n[connectors.wms]" in text
    assert "# ERP, the main source" in text  # the comment above a removed table is kept as is


def test_add_creates_file_and_refuses_duplicates_and_bad_names(cli: Cli) -> None:
    cli.config.unlink()
    assert cli("connector", "add", "erp", "--url", "http://localhost:8007").exit_code == 0
    r = cli("connector", "add", "erp", "--url", "http://localhost:8007")
    assert r.exit_code == 2
    assert r.messages == f"error: {cli.config}: connector 'erp' already exists\n"
    r = cli("connector", "add", "Bad-Name", "--url", "http://localhost:8007")
    assert r.exit_code == 2
    assert "invalid connector name 'Bad-Name'" in r.stderr
    r = cli("connector", "add", "crm", "--url", "not a url")
    assert r.exit_code == 2
    assert "--url: invalid URL 'not a url'" in r.stderr
    assert "crm" not in cli.config.read_text(encoding="utf-8")


def test_connector_test_reports_success_and_each_failure(demo_cli: Cli, tmp_path: Path) -> None:
    r = demo_cli("connector", "test", "erp", "--json")
    assert r.exit_code == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["ok"] is True
    assert data["apis"] == 3
    assert DEMO_TOKEN not in r.stdout

    r = demo_cli("connector", "test", "erp", env={TOKEN_ENV: "wrong-token"})
    assert r.exit_code == 1
    assert "APISmith refused the token (HTTP 401)" in r.stderr
    assert "wrong-token" not in r.stderr

    demo_cli("connector", "add", "dead", "--url", "http://127.0.0.1:9")
    r = demo_cli("connector", "test", "dead")
    assert r.exit_code == 1
    assert r.messages.startswith("error: connector dead: cannot connect to http://127.0.0.1:9/api/v1/apis")

    demo_cli("connector", "add", "nowhere", "--url", "http://no-such-host.invalid")
    r = demo_cli("connector", "test", "nowhere")
    assert r.exit_code == 1
    assert "connector nowhere: cannot connect to http://no-such-host.invalid/api/v1/apis" in r.stderr


def test_connectors_mirrored_and_removed_ones_become_inactive(demo_cli: Cli, db_url: str) -> None:
    demo_cli("connector", "add", "crm", "--url", "http://127.0.0.1:9")
    assert demo_cli("sync", "--all").exit_code == 0  # writing commands mirror the file; reading ones do not
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT name, is_active, target_schema FROM bridge.connectors ORDER BY name").fetchall()
    assert rows == [("crm", True, "crm"), ("erp", True, "erp")]
    demo_cli("connector", "remove", "crm")
    assert demo_cli("sync", "--all").exit_code == 0
    with psycopg.connect(db_url) as conn:
        rows = conn.execute("SELECT name, is_active FROM bridge.connectors ORDER BY name").fetchall()
    assert rows == [("crm", False), ("erp", True)]


def test_show_and_list_table(demo_cli: Cli) -> None:
    r = demo_cli("connector", "list")
    assert r.exit_code == 0
    assert f"${TOKEN_ENV} (set)" in r.stdout
    r = demo_cli("connector", "show", "erp")
    assert "target_schema: erp" in r.stdout
    r = demo_cli("connector", "show", "nope")
    assert r.exit_code == 2
    assert r.messages == f"error: {demo_cli.config}: no connector named 'nope' (configured: erp)\n"
