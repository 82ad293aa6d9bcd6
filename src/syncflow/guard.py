"""The rules that decide whether a run may soft-delete and how it ends (pure; no I/O).

They are the last line between a flaky read and lost data, so they live in
one place, read as plain functions of what the run counted, and are tested
(and mutation-tested) without a database. The engine (:mod:`syncflow.sync`)
gathers the counts and applies the verdicts.
"""

from __future__ import annotations

from dataclasses import dataclass

from syncflow.pages import compare_rowversions


def movement_signs(*, total_changed: bool, repeats: int) -> list[str]:
    """Signs that a page-number read may have skipped a row that moved between pages."""
    signs = []
    if total_changed:
        signs.append("the announced total changed during the run")
    if repeats > 0:
        signs.append(f"{repeats} key(s) came more than once (rows shifted between pages)")
    return signs


def delete_hold_reasons(
    *,
    hold: list[str],
    rejected: int,
    fetched: int,
    first_total: int | None,
    live: int,
    unseen: int,
    max_delete_fraction: float,
) -> list[str]:
    """Why the rows not seen in a complete read must not be soft-deleted; empty when they may be.

    ``hold`` carries reasons found earlier (the source moved while it was
    read); ``fetched`` counts distinct keys plus rejects; ``live`` and
    ``unseen`` are the target's live rows and those of them this run did not see.
    """
    reasons = list(hold)
    if rejected > 0:
        reasons.append(f"{rejected} row(s) were rejected, so the fetch is incomplete")
    distinct = fetched - rejected
    if first_total is not None and distinct < first_total:
        reasons.append(f"fewer distinct keys arrived ({distinct}) than the total announced ({first_total})")
    if live > 0 and unseen / live > max_delete_fraction:
        reasons.append(
            f"it would soft-delete {unseen} of {live} rows ({unseen / live:.0%}), more than the allowed "
            f"{max_delete_fraction:.0%} (--max-delete-fraction overrides)"
        )
    return reasons


@dataclass(frozen=True)
class Outcome:
    """How a run that got to its end is recorded."""

    status: str  # "success" or "partial"
    checkpoint: str | None
    set_checkpoint: bool  # False: the stored checkpoint stays as it was


def outcome(
    *,
    rowversion: bool,
    full_refresh: bool,
    rejected: int,
    stable: bool,
    stored: str | None,
    earned: str | None,
    backfill_from: str | None = None,
    deletes_held: bool = False,
) -> Outcome:
    """Status and checkpoint of a finished run.

    A run with rejects or an unstable read is ``partial`` and never moves the
    checkpoint: the rows it may have missed must be read again. A rowversion
    run stores what its stream ``earned`` (never below the checkpoint it
    started from); a successful full refresh of any other entity clears it.
    A backfill (rows above ``backfill_from`` only) moves it forward only when
    it began at or below the stored checkpoint: rows between the checkpoint
    and a higher start were not read. A read from the start that found rows
    gone but held their deletion back (the delete guard) keeps the stored
    checkpoint: such a read lists no tombstones, so moving past their versions
    would lose those deletions for every later incremental run.
    """
    if rejected > 0 or not stable:
        return Outcome("partial", stored, False)
    if rowversion and backfill_from is not None:
        covers = stored is not None and compare_rowversions(backfill_from, stored) <= 0
        return Outcome("success", earned if covers else stored, True)
    if rowversion and deletes_held:
        return Outcome("success", stored, False)
    if rowversion:
        return Outcome("success", earned, True)
    if full_refresh:
        return Outcome("success", None, True)
    return Outcome("success", stored, False)
