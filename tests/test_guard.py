"""The delete guard and the checkpoint rule as plain functions: every reason, every boundary.

End-to-end tests (tests/test_exact.py, tests/test_sync.py) show the engine
applies these verdicts; these pin the verdicts themselves, including the
boundaries where one comparison operator decides whether rows are deleted.
"""

from __future__ import annotations

import pytest

from syncflow.guard import Outcome, delete_hold_reasons, movement_signs, outcome


def reasons(**kw: object) -> list[str]:
    args: dict[str, object] = {
        "hold": [],
        "rejected": 0,
        "fetched": 10,
        "first_total": 10,
        "live": 10,
        "unseen": 1,
        "max_delete_fraction": 0.5,
    }
    args.update(kw)
    return delete_hold_reasons(**args)  # type: ignore[arg-type]


def test_a_clean_complete_read_may_delete() -> None:
    assert reasons() == []


def test_held_reasons_are_kept_first_and_not_mutated() -> None:
    hold = ["the source kept changing"]
    assert reasons(hold=hold, rejected=1, fetched=11) == [
        "the source kept changing",
        "1 row(s) were rejected, so the fetch is incomplete",
    ]
    assert hold == ["the source kept changing"]


def test_rejects_hold_deletes() -> None:
    assert reasons(rejected=2, fetched=12) == ["2 row(s) were rejected, so the fetch is incomplete"]


def test_fewer_distinct_keys_than_announced_hold_deletes() -> None:
    # 12 fetched of which 3 rejected: 9 distinct good keys against a total of 10.
    assert reasons(rejected=3, fetched=12) == [
        "3 row(s) were rejected, so the fetch is incomplete",
        "fewer distinct keys arrived (9) than the total announced (10)",
    ]
    assert reasons(fetched=9) == ["fewer distinct keys arrived (9) than the total announced (10)"]


def test_exactly_the_announced_total_or_no_total_is_enough() -> None:
    assert reasons(fetched=10, first_total=10) == []
    assert reasons(fetched=11, first_total=10) == []
    assert reasons(fetched=0, first_total=None) == []


def test_the_delete_fraction_is_a_strict_upper_bound() -> None:
    assert reasons(live=10, unseen=5, max_delete_fraction=0.5) == []
    assert reasons(live=10, unseen=6, max_delete_fraction=0.5) == [
        "it would soft-delete 6 of 10 rows (60%), more than the allowed 50% (--max-delete-fraction overrides)"
    ]
    assert reasons(live=10, unseen=10, max_delete_fraction=1.0) == []
    assert reasons(live=4, unseen=1, max_delete_fraction=0.2) == [
        "it would soft-delete 1 of 4 rows (25%), more than the allowed 20% (--max-delete-fraction overrides)"
    ]


def test_no_live_rows_is_no_fraction() -> None:
    assert reasons(live=0, unseen=0) == []


def test_the_only_live_row_gone_is_all_of_the_table() -> None:
    assert reasons(live=1, unseen=1, max_delete_fraction=0.5) == [
        "it would soft-delete 1 of 1 rows (100%), more than the allowed 50% (--max-delete-fraction overrides)"
    ]


def test_every_reason_at_once_in_order() -> None:
    got = reasons(hold=["moved"], rejected=1, fetched=5, first_total=10, live=10, unseen=9)
    assert [r.split(" ")[0] for r in got] == ["moved", "1", "fewer", "it"]


def test_movement_signs() -> None:
    assert movement_signs(total_changed=False, repeats=0) == []
    assert movement_signs(total_changed=True, repeats=0) == ["the announced total changed during the run"]
    assert movement_signs(total_changed=False, repeats=1) == [
        "1 key(s) came more than once (rows shifted between pages)"
    ]
    assert movement_signs(total_changed=True, repeats=3) == [
        "the announced total changed during the run",
        "3 key(s) came more than once (rows shifted between pages)",
    ]


@pytest.mark.parametrize("rowversion", [True, False])
@pytest.mark.parametrize("full_refresh", [True, False])
def test_rejects_or_an_unstable_read_never_move_the_checkpoint(rowversion: bool, full_refresh: bool) -> None:
    for rejected, stable in [(1, True), (0, False), (2, False)]:
        got = outcome(
            rowversion=rowversion, full_refresh=full_refresh, rejected=rejected, stable=stable, stored="7", earned="9"
        )
        assert got == Outcome("partial", "7", False)


def test_a_rowversion_run_stores_what_it_earned() -> None:
    got = outcome(rowversion=True, full_refresh=False, rejected=0, stable=True, stored="7", earned="9")
    assert got == Outcome("success", "9", True)
    got = outcome(rowversion=True, full_refresh=True, rejected=0, stable=True, stored="7", earned="3")
    assert got == Outcome("success", "3", True)
    got = outcome(rowversion=True, full_refresh=False, rejected=0, stable=True, stored=None, earned=None)
    assert got == Outcome("success", None, True)


def test_a_full_refresh_of_a_full_entity_clears_the_checkpoint() -> None:
    got = outcome(rowversion=False, full_refresh=True, rejected=0, stable=True, stored="7", earned="9")
    assert got == Outcome("success", None, True)


def test_a_plain_full_sync_leaves_the_checkpoint_alone() -> None:
    got = outcome(rowversion=False, full_refresh=False, rejected=0, stable=True, stored="7", earned="9")
    assert got == Outcome("success", "7", False)


def test_a_backfill_moves_the_checkpoint_only_when_it_covered_everything_above_it() -> None:
    def backfill(start: str, stored: str | None) -> Outcome:
        return outcome(
            rowversion=True, full_refresh=False, rejected=0, stable=True, stored=stored, earned="9", backfill_from=start
        )

    assert backfill("5", "7") == Outcome("success", "9", True)  # began below the checkpoint
    assert backfill("7", "7") == Outcome("success", "9", True)  # began at it
    assert backfill("8", "7") == Outcome("success", "7", True)  # rows 7..8 were not read
    assert backfill("10", "9") == Outcome("success", "9", True)  # digit versions compare as numbers
    assert backfill("5", None) == Outcome("success", None, True)  # no checkpoint: nothing is covered
    got = outcome(
        rowversion=True, full_refresh=False, rejected=1, stable=True, stored="7", earned="9", backfill_from="5"
    )
    assert got == Outcome("partial", "7", False)


def test_a_read_from_the_start_that_held_deletes_keeps_the_stored_checkpoint() -> None:
    got = outcome(
        rowversion=True, full_refresh=True, rejected=0, stable=True, stored="7", earned="9", deletes_held=True
    )
    assert got == Outcome("success", "7", False)
    got = outcome(
        rowversion=True, full_refresh=False, rejected=0, stable=True, stored=None, earned="9", deletes_held=True
    )
    assert got == Outcome("success", None, False)
    # Full and hash entities keep no checkpoint of their own: nothing changes for them.
    got = outcome(
        rowversion=False, full_refresh=True, rejected=0, stable=True, stored="7", earned="9", deletes_held=True
    )
    assert got == Outcome("success", None, True)
