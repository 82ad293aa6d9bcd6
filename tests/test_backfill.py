"""Targeted backfills: ``sync C.SLUG --from-rowversion V`` (issue 17), demo APISmith, real PostgreSQL.

A backfill re-reads the rows above V of a rowversion entity. It never moves
the checkpoint backwards, moves it forwards only as far as the backfill proved
(every row above V was read, and V is at or below the old checkpoint), never
reconciles deletes, and touches no other entity.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tests.helpers import Cli, entity_state, live_keys, max_rv, query, source_keys, sync_json


@pytest.fixture
def synced(demo_cli: Cli) -> Cli:
    r = demo_cli("discover")
    assert r.exit_code == 0, r.stderr
    return demo_cli


def versions(demo: Any, slug: str = "items") -> list[int]:
    return sorted(demo.state.entities[slug].versions.values())


def runs_of(db_url: str, slug: str) -> list[tuple[Any, ...]]:
    return query(
        db_url,
        "SELECT r.kind, r.status, r.rowversion_start, r.rowversion_end FROM bridge.sync_runs r"
        " JOIN bridge.entities e ON e.uid = r.entity_uid WHERE e.slug = %s ORDER BY r.started_at",
        [slug],
    )


def test_backfill_rereads_rows_above_v_and_keeps_the_checkpoint(synced: Cli, demo: Any, db_url: str) -> None:
    assert synced("sync", "erp.items").exit_code == 0
    checkpoint = entity_state(db_url, "items")["last_rowversion"]
    assert checkpoint == max_rv(demo, "items")
    vs = versions(demo)
    v = str(vs[99])  # rows 101..120 are above V
    # Rows lost from the table by hand (a restore, a mistaken DELETE): 20 above V, one below.
    query(db_url, "DELETE FROM erp.items WHERE erp_rowversion::bigint > %s", [int(v)])
    query(db_url, "DELETE FROM erp.items WHERE erp_rowversion::bigint = %s", [vs[10]])
    demo.state.requests.clear()
    code, result, err = sync_json(synced, "erp.items", "--from-rowversion", v)
    assert code == 0, err
    run = result[0]
    assert (run["kind"], run["status"]) == ("backfill", "success")
    assert run["records_inserted"] == 20
    assert run["records_fetched"] == 20
    data_requests = [r for r in demo.state.requests if "/data/items" in r]
    assert f"rowversion_gt={v}" in data_requests[0]
    assert entity_state(db_url, "items")["last_rowversion"] == checkpoint  # not moved back to V
    assert len(live_keys(db_url, "erp.items", "item_number")) == 119  # the row below V stays missing
    assert runs_of(db_url, "items")[-1] == ("backfill", "success", checkpoint, checkpoint)


def test_backfill_moves_the_checkpoint_forward_to_what_it_proved(synced: Cli, demo: Any, db_url: str) -> None:
    assert synced("sync", "erp.items").exit_code == 0
    v = str(versions(demo)[50])
    demo.state.insert("items", 7)  # newer than the checkpoint
    code, result, _ = sync_json(synced, "erp.items", "--from-rowversion", v)
    assert code == 0
    assert result[0]["records_inserted"] == 7
    assert entity_state(db_url, "items")["last_rowversion"] == max_rv(demo, "items")  # max(old, proved)


def test_backfill_above_the_checkpoint_does_not_skip_the_rows_between(synced: Cli, demo: Any, db_url: str) -> None:
    assert synced("sync", "erp.items").exit_code == 0
    checkpoint = entity_state(db_url, "items")["last_rowversion"]
    between = demo.state.insert("items", 3)
    v = max_rv(demo, "items")
    demo.state.insert("items", 4)
    code, result, _ = sync_json(synced, "erp.items", "--from-rowversion", v)
    assert code == 0
    assert result[0]["records_inserted"] == 4
    # The 3 rows between the checkpoint and V were not read: the checkpoint may not pass them.
    assert entity_state(db_url, "items")["last_rowversion"] == checkpoint
    code, result, _ = sync_json(synced, "erp.items")
    assert code == 0
    assert result[0]["records_inserted"] == 3
    assert {k[0] for k in between} <= live_keys(db_url, "erp.items", "item_number")
    assert entity_state(db_url, "items")["last_rowversion"] == max_rv(demo, "items")


def test_backfill_of_a_never_synced_entity_sets_no_checkpoint(synced: Cli, demo: Any, db_url: str) -> None:
    v = str(versions(demo)[100])
    code, result, _ = sync_json(synced, "erp.items", "--from-rowversion", v)
    assert code == 0
    assert result[0]["records_inserted"] == 19
    assert entity_state(db_url, "items")["last_rowversion"] is None  # rows at or below V were never read
    code, result, _ = sync_json(synced, "erp.items")
    assert code == 0
    assert result[0]["records_inserted"] == 101


def test_backfill_never_reconciles_deletes(synced: Cli, demo: Any, db_url: str) -> None:
    assert synced("sync", "erp.items").exit_code == 0
    gone = demo.state.delete("items", 5, hard=True)  # no tombstones
    code, result, _ = sync_json(synced, "erp.items", "--from-rowversion", str(versions(demo)[0] - 1))
    assert code == 0
    assert result[0]["records_deleted"] == 0
    assert {k[0] for k in gone} <= live_keys(db_url, "erp.items", "item_number")
    # A full refresh would have deleted them: the backfill was a complete read of the same rows.
    assert synced("full-refresh", "erp.items").exit_code == 0
    assert live_keys(db_url, "erp.items", "item_number") == source_keys(demo, "items")


def test_backfill_touches_no_other_entity(synced: Cli, demo: Any, db_url: str) -> None:
    api = copy.deepcopy(demo.state.entities["items"].api)
    api["slug"] = "items_2"
    demo.state.set_api("items_2", api)
    demo.state.insert("items_2", 30)
    assert synced("discover").exit_code == 0
    assert synced("sync", "erp.items", "erp.items_2").exit_code == 0
    other = entity_state(db_url, "items_2")["last_rowversion"]
    other_runs = runs_of(db_url, "items_2")
    demo.state.insert("items_2", 2)
    demo.state.insert("items", 2)
    code, result, _ = sync_json(synced, "erp.items", "--from-rowversion", str(versions(demo)[0]))
    assert code == 0
    assert [r["entity"] for r in result] == ["erp.items"]
    assert entity_state(db_url, "items_2")["last_rowversion"] == other
    assert runs_of(db_url, "items_2") == other_runs
    assert entity_state(db_url, "items")["last_rowversion"] == max_rv(demo, "items")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("erp.orders", "--from-rowversion", "5"),
            "erp.orders: --from-rowversion needs a rowversion entity; its delta strategy is full",
        ),
        (
            ("erp.items", "erp.customers", "--from-rowversion", "5"),
            "erp.customers: --from-rowversion needs a rowversion entity; its delta strategy is hash",
        ),
        (("--all", "--from-rowversion", "5"), "--from-rowversion backfills named entities; it cannot go with --all"),
        (("erp.items", "--from-rowversion", ""), "--from-rowversion needs a row version"),
        (
            ("erp.items", "--where-key", "item_number=ABC"),
            "--where-key: the APISmith protocol has no key filter",
        ),
    ],
)
def test_backfill_usage_errors(synced: Cli, db_url: str, args: tuple[str, ...], message: str) -> None:
    r = synced("sync", *args)
    assert r.exit_code == 2, r.stderr
    assert message in r.stderr, r.stderr
    assert query(db_url, "SELECT count(*) FROM bridge.sync_runs") == [(0,)]


def test_the_backfill_kind_is_listed_by_runs(synced: Cli, demo: Any) -> None:
    assert synced("sync", "erp.items").exit_code == 0
    assert synced("sync", "erp.items", "--from-rowversion", str(versions(demo)[110])).exit_code == 0
    listed = json.loads(synced("runs", "erp.items", "--json").stdout)
    assert [r["kind"] for r in listed] == ["backfill", "sync"]
