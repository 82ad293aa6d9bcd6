"""`syncflow sync`, `full-refresh` and `runs` end to end: demo APISmith, real PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.helpers import TOKEN_ENV, Cli, entity_state, live_keys, max_rv, rows, sync_json


@pytest.fixture
def synced(demo_cli: Cli) -> Cli:
    r = demo_cli("discover")
    assert r.exit_code == 0, r.stderr
    return demo_cli


def assert_items_match_source(db_url: str, demo: Any) -> None:
    source = demo.state.snapshot("items")
    stored = {r["item_number"]: r for r in rows(db_url, "erp.items", where="NOT _bridge_deleted")}
    assert set(stored) == {k[0] for k in source}
    for (key,), data in source.items():
        assert stored[key]["erp_rowversion"] == data["erp_rowversion"], key
        assert stored[key]["category"] == data["category"], key


def test_rowversion_first_then_incremental(synced: Cli, demo: Any, db_url: str) -> None:
    code, runs, _ = sync_json(synced, "erp.items")
    assert code == 0
    assert runs[0]["status"] == "success"
    assert (runs[0]["records_fetched"], runs[0]["records_inserted"]) == (120, 120)
    assert entity_state(db_url, "items")["last_rowversion"] == max_rv(demo, "items")
    assert_items_match_source(db_url, demo)
    first_requests = [r for r in demo.state.requests if "/data/items" in r]
    assert "rowversion_gt" not in first_requests[0]

    demo.state.requests.clear()
    updated = demo.state.update("items", 10)
    demo.state.insert("items", 5)
    deleted = demo.state.delete("items", 3)
    code, runs, _ = sync_json(synced, "erp.items")
    assert code == 0
    run = runs[0]
    assert (
        run["records_fetched"],
        run["records_inserted"],
        run["records_updated"],
        run["records_deleted"],
        run["records_unchanged"],
    ) == (19, 5, 10, 3, 1)  # the row at the old checkpoint's version is read again, unchanged
    assert run["rowversion_end"] == max_rv(demo, "items")
    assert "rowversion_gt=" in demo.state.requests[0]
    assert_items_match_source(db_url, demo)
    flags = {r["item_number"]: r["_bridge_deleted"] for r in rows(db_url, "erp.items")}
    assert all(flags[k[0]] for k in deleted)
    assert not any(flags[k[0]] for k in updated if k not in deleted)


def test_second_sync_with_no_change_writes_nothing(synced: Cli, demo: Any, db_url: str) -> None:
    for ref in ("erp.items", "erp.orders", "erp.customers"):
        assert synced("sync", ref).exit_code == 0
    before = {t: rows(db_url, f"erp.{t}", "xmin::text AS x, _bridge_updated_at") for t in ("orders", "customers")}
    code, runs, _ = sync_json(synced, "erp.orders", "erp.customers", "erp.items")
    assert code == 0
    assert [(r["records_inserted"], r["records_updated"], r["records_deleted"]) for r in runs] == [(0, 0, 0)] * 3
    by_entity = {r["entity"]: r for r in runs}
    assert by_entity["erp.orders"]["records_unchanged"] == 40
    assert by_entity["erp.customers"]["records_unchanged"] == 30
    for t in ("orders", "customers"):
        assert rows(db_url, f"erp.{t}", "xmin::text AS x, _bridge_updated_at") == before[t]


def test_full_sync_soft_deletes_and_undeletes(synced: Cli, demo: Any, db_url: str) -> None:
    assert synced("sync", "erp.orders").exit_code == 0
    gone = demo.state.delete("orders", 3)
    code, runs, _ = sync_json(synced, "erp.orders")
    assert code == 0
    assert runs[0]["records_deleted"] == 3
    assert runs[0]["records_fetched"] == 37
    deleted = rows(db_url, "erp.orders", "order_no, line_no", "_bridge_deleted")
    assert {(r["order_no"], r["line_no"]) for r in deleted} == set(gone)
    # One comes back: undeleted, counted as updated.
    order_no, line_no = gone[0]
    demo.state.put_rows("orders", [{"order_no": order_no, "line_no": line_no, "quantity": 1}])
    code, runs, _ = sync_json(synced, "erp.orders")
    assert runs[0]["records_updated"] == 1
    assert runs[0]["records_deleted"] == 0
    back = rows(db_url, "erp.orders", "_bridge_deleted, quantity", f"order_no = '{order_no}' AND line_no = {line_no}")
    assert back == [{"_bridge_deleted": False, "quantity": 1}]


def test_delete_guard_refuses_mass_delete(synced: Cli, demo: Any, db_url: str) -> None:
    assert synced("sync", "erp.orders").exit_code == 0
    demo.state.delete("orders", 30)  # 75 % of 40
    code, runs, stderr = sync_json(synced, "erp.orders")
    assert code == 0
    assert runs[0]["records_deleted"] == 0
    assert "deleted nothing: it would soft-delete 30 of 40 rows (75%), more than the allowed 50%" in stderr
    assert len(live_keys(db_url, "erp.orders", "order_no")) == 10  # all 40 rows kept live
    assert rows(db_url, "erp.orders", "count(*) AS n", "NOT _bridge_deleted") == [{"n": 40}]
    code, runs, _ = sync_json(synced, "erp.orders", "--max-delete-fraction", "1")
    assert runs[0]["records_deleted"] == 30


def test_delete_guard_when_paging_is_unreliable(synced: Cli, demo: Any, db_url: str) -> None:
    synced.config.write_text(synced.config.read_text() + "\n[connectors.erp.entities.orders]\npage_size = 10\n")
    assert synced("sync", "erp.orders").exit_code == 0
    demo.state.delete("orders", 1)

    def shift(slug: str, page: int, params: dict[str, str]) -> None:
        if slug == "orders" and page == 3:
            demo.state.update("orders", 2)  # rows move to the end: one is read twice, one skipped

    demo.state.before_page = shift
    code, runs, stderr = sync_json(synced, "erp.orders")
    demo.state.before_page = None
    # Rows moved during every read (the first and both confirming ones): nothing can be trusted.
    assert (code, runs[0]["status"]) == (1, "partial")
    assert runs[0]["records_deleted"] == 0
    assert "deleted nothing:" in stderr
    assert "came more than once" in stderr
    assert "kept changing" in runs[0]["error_message"]
    # The next, undisturbed run reconciles exactly.
    code, runs, _ = sync_json(synced, "erp.orders")
    assert runs[0]["records_deleted"] == 1
    assert len(rows(db_url, "erp.orders", where="NOT _bridge_deleted")) == 39


def test_hash_strategy_writes_only_changed_rows(synced: Cli, demo: Any, db_url: str) -> None:
    assert synced("sync", "erp.customers").exit_code == 0
    changed = demo.state.update("customers", 3, changes={"email": "new@example.com"})
    code, runs, _ = sync_json(synced, "erp.customers")
    assert code == 0
    assert (runs[0]["records_updated"], runs[0]["records_unchanged"]) == (3, 27)
    emails = {r["customer_id"] for r in rows(db_url, "erp.customers", "customer_id", "email = 'new@example.com'")}
    assert emails == {k[0] for k in changed}


def test_ties_on_page_boundaries_and_changes_between_pages(synced: Cli, demo: Any, db_url: str) -> None:
    synced.config.write_text(synced.config.read_text() + "\n[connectors.erp.entities.items]\npage_size = 7\n")
    assert synced("sync", "erp.items").exit_code == 0
    # 25 rows share one row version: more than three pages of ties.
    tied = [{"item_number": f"T{i:03d}", "category": "tie"} for i in range(25)]
    demo.state.put_rows("items", tied)
    demo.state.update("items", 9)  # another tie group of 9

    calls = {"n": 0}

    def churn(slug: str, page: int, params: dict[str, str]) -> None:
        calls["n"] += 1
        if slug == "items" and calls["n"] in (2, 4, 6):
            demo.state.update("items", 3)  # rows move behind the cursor while we page
            demo.state.insert("items", 2)

    demo.state.before_page = churn
    demo.state.requests.clear()
    code, _runs, _ = sync_json(synced, "erp.items")
    demo.state.before_page = None
    assert code == 0
    # The tie group filled whole pages, so the stream paged by number inside it.
    assert any("page=2&" in r and "rowversion_gt=" in r for r in demo.state.requests)
    stored = live_keys(db_url, "erp.items", "item_number")
    assert {f"T{i:03d}" for i in range(25)} <= stored
    checkpoint = entity_state(db_url, "items")["last_rowversion"]
    assert int(checkpoint) <= demo.state.rv
    # Whatever changed during that run is picked up by the next one; nothing is ever lost.
    code, _, _ = sync_json(synced, "erp.items")
    assert code == 0
    assert_items_match_source(db_url, demo)
    assert entity_state(db_url, "items")["last_rowversion"] == max_rv(demo, "items")


def test_bad_values_are_rejected_and_the_rest_loads(synced: Cli, demo: Any, db_url: str) -> None:
    assert synced("sync", "erp.items").exit_code == 0
    start_checkpoint = entity_state(db_url, "items")["last_rowversion"]
    demo.state.put_rows(
        "items",
        [
            {"item_number": "GOOD1", "base_uom": "EA"},
            {"item_number": "LONG", "base_uom": "X" * 30},  # varchar(10)
            {"item_number": "OVER", "weight_per_unit": "123456789.5"},  # numeric(10,3) overflow
            {"item_number": "DATE", "launch_date": "not-a-date"},
            {"item_number": None, "base_uom": "EA"},  # null business key
            {"item_number": "GOOD2", "qty_on_hand": 12.0},  # an integer sent as 12.0 is fine
        ],
    )
    r = synced("sync", "erp.items", "--json")
    assert r.exit_code == 1
    (run,) = json.loads(r.stdout)
    assert run["status"] == "partial"
    # 7 fetched: the 6 new rows and the row at the checkpoint's own version, read again unchanged.
    assert (run["records_fetched"], run["records_inserted"], run["records_rejected"]) == (7, 2, 4)
    assert "4 row(s) rejected" in run["error_message"]
    assert {"GOOD1", "GOOD2"} <= live_keys(db_url, "erp.items", "item_number")
    # A partial run never advances the checkpoint.
    assert entity_state(db_url, "items")["last_rowversion"] == start_checkpoint
    shown = json.loads(synced("runs", "show", run["uid"], "--json").stdout)
    rejects = {(json.dumps(x["business_key"]), x["column"]): x for x in shown["rejects"]}
    assert rejects[('{"item_number": "LONG"}', "base_uom")]["reason"] == "value too long for type character varying(10)"
    assert rejects[('{"item_number": "OVER"}', "weight_per_unit")]["reason"] == "numeric field overflow"
    assert rejects[('{"item_number": "DATE"}', "launch_date")]["value"] == "not-a-date"
    assert rejects[('{"item_number": null}', "item_number")]["reason"].startswith("null value in column")
    text = synced("runs", "show", run["uid"][:8]).stdout
    assert "Rejected rows (4)" in text


def test_transient_errors_retried_auth_not(synced: Cli, demo: Any, db_url: str) -> None:
    demo.state.fail_next(503)
    demo.state.fail_next(429, headers={"Retry-After": "0"})
    code, runs, _ = sync_json(synced, "erp.customers")
    assert code == 0
    assert runs[0]["status"] == "success"
    demo.state.fail_next(503, count=3)
    code, runs, _ = sync_json(synced, "erp.orders")
    assert code == 1
    assert runs[0]["status"] == "failed"
    assert "HTTP 503" in runs[0]["error_message"]
    r = synced("sync", "erp.items", "--json", env={TOKEN_ENV: "wrong"})
    assert r.exit_code == 1
    (run,) = json.loads(r.stdout)
    assert run["status"] == "failed"
    assert "HTTP 401" in run["error_message"]
    assert "wrong" not in r.stdout
    assert entity_state(db_url, "items")["consecutive_failures"] == 1


def test_broken_source_fails_with_body_preview_and_no_checkpoint(synced: Cli, demo: Any, db_url: str) -> None:
    assert synced("sync", "erp.items").exit_code == 0
    checkpoint = entity_state(db_url, "items")["last_rowversion"]
    demo.state.update("items", 5)
    demo.state.fail_next(200, body=b"<html><body>Maintenance</body></html>")
    r = synced("sync", "erp.items", "--json")
    assert r.exit_code == 1
    (run,) = json.loads(r.stdout)
    assert run["status"] == "failed"
    assert "not JSON" in run["error_message"]
    assert "<html><body>Maintenance" in run["error_message"]
    assert "Traceback" not in r.stderr
    assert entity_state(db_url, "items") == {
        "last_rowversion": checkpoint,
        "last_sync_status": "failed",
        "consecutive_failures": 1,
    }
    shown = json.loads(synced("runs", "show", run["uid"], "--json").stdout)
    assert shown["error_details"]["body"].startswith("<html>")


def test_vanished_api_marks_entity_missing(synced: Cli, demo: Any, db_url: str) -> None:
    del demo.state.entities["customers"]
    r = synced("sync", "erp.customers", "--json")
    assert r.exit_code == 1
    assert "gone at the source" in json.loads(r.stdout)[0]["error_message"]
    assert rows(db_url, "bridge.entities", "missing_at_source", "slug = 'customers'") == [{"missing_at_source": True}]


def test_full_refresh_resets_checkpoint_and_reconciles(synced: Cli, demo: Any, db_url: str) -> None:
    assert synced("sync", "erp.items").exit_code == 0
    demo.state.delete("items", 2)
    demo.state.entities["items"].tombstones.clear()  # hard deletes: only a full fetch notices
    r = synced("full-refresh", "erp.items", "--json")
    assert r.exit_code == 0, r.stderr
    (run,) = json.loads(r.stdout)
    assert run["kind"] == "full_refresh"
    assert run["records_deleted"] == 2
    assert run["rowversion_end"] == max_rv(demo, "items")
    assert_items_match_source(db_url, demo)


def test_runs_history_json(synced: Cli, demo: Any) -> None:
    synced("sync", "erp.items")
    synced("sync", "erp.orders")
    data = json.loads(synced("runs", "--json").stdout)
    assert [r["entity"] for r in data] == ["erp.orders", "erp.items"]
    for key in (
        "uid",
        "status",
        "started_at",
        "completed_at",
        "records_fetched",
        "records_inserted",
        "records_updated",
        "records_unchanged",
        "records_deleted",
        "records_rejected",
        "rowversion_start",
        "rowversion_end",
        "error_message",
    ):
        assert key in data[0]
    assert json.loads(synced("runs", "erp.items", "--json").stdout)[0]["entity"] == "erp.items"
    assert json.loads(synced("runs", "--status", "failed", "--json").stdout) == []
    r = synced("runs", "--status", "weird")
    assert r.exit_code == 2
    r = synced("runs", "show", "00000000")
    assert r.exit_code == 2
    assert r.messages == "error: no run '00000000'\n"


def test_usage_errors(synced: Cli) -> None:
    r = synced("sync")
    assert r.exit_code == 2
    assert r.messages == "error: name the entities to sync (CONNECTOR.SLUG ...) or give --all\n"
    r = synced("sync", "items")
    assert r.exit_code == 2
    assert "not an entity reference: use CONNECTOR.SLUG" in r.stderr


def test_sync_all_takes_due_entities(synced: Cli) -> None:
    code, runs, _ = sync_json(synced, "--all")
    assert code == 0
    assert sorted(r["entity"] for r in runs) == ["erp.customers", "erp.items", "erp.orders"]
    r = synced("sync", "--all")
    assert r.exit_code == 0
    assert r.messages == "nothing is due\n"
    code, runs, _ = sync_json(synced, "--all", "--force")
    assert len(runs) == 3


def test_first_load_with_a_key_repeated_across_batches(
    synced: Cli, demo: Any, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Into an empty table batches are plain INSERTs; a key that comes again switches to the upsert."""
    from syncflow import store
    from syncflow.runtime import Runtime
    from syncflow.sync import SyncOptions, sync_entity

    moved: list[Any] = []

    def move(slug: str, page: int, params: dict[str, str]) -> None:
        if slug == "orders" and page == 3 and not moved:
            moved.extend(demo.state.update("orders", keys=[("SO0000000", 1)], changes={"status": "MOVED"}))

    for name, value in synced.env.items():
        monkeypatch.setenv(name, value)
    demo.state.before_page = move
    rt = Runtime.load(config_path=synced.config)
    with rt.metadata() as meta:
        entity = store.get_entity(meta, rt.schema, "erp.orders")
    conn = rt.connect()
    try:
        with rt.client("erp") as client:
            result = sync_entity(conn, rt.schema, entity, client, options=SyncOptions(page_size=10, batch_rows=10))
    finally:
        conn.close()
        demo.state.before_page = None
    assert result.status == "success", result.error_message
    assert moved
    got = rows(db_url, "erp.orders", "status", "order_no = 'SO0000000' AND line_no = 1")
    assert got == [{"status": "MOVED"}]  # the last occurrence wins
    # Offset paging over a changing source may skip a row shifted past a page boundary
    # (full strategy); it was not deleted, and the next run stores it.
    assert len(rows(db_url, "erp.orders")) >= 39
    assert synced("sync", "erp.orders").exit_code == 0
    assert len(rows(db_url, "erp.orders", where="NOT _bridge_deleted")) == 40


def test_an_entity_table_naming_no_entity_is_a_warning(synced: Cli) -> None:
    """Found by review: [connectors.erp.entities.itemz] (a typo) was silently ignored by sync --all."""
    synced.config.write_text(
        synced.config.read_text() + "\n[connectors.erp.entities.itemz]\ninterval_seconds = 5\n", encoding="utf-8"
    )
    r = synced("sync", "--all")
    assert r.exit_code == 0
    assert "[connectors.erp.entities.itemz] names no discovered entity of erp" in r.stderr
    r = synced("sync", "--all", "--connector", "erp")
    assert "itemz" in r.stderr
