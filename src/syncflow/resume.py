"""Resumable first loads: the progress a run commits with each batch, and the next run continuing from it.

A run killed part-way (SIGKILL, OOM, a lost node, retries exhausted) keeps
every batch it committed. What the next run may skip depends on the read:

- **rowversion** (keyset reads): each committed batch also commits the
  checkpoint below which every row was passed on and merged (the page's
  ``position``), so the next run is an ordinary incremental sync from there,
  tombstones included. Only where no delete step is due: an incremental run,
  or a load into a table that was empty when it began (a read from the start
  into a non-empty table must see every row before it may delete).
- **full / hash** (page numbers): each committed batch of a first load
  records the next page number and how many rows the pages before it served.
  The next ``sync`` (not ``full-refresh``) with the same table form and page
  size fetches the pages from there (the table is complete sooner), then reads
  the whole entity once more, as an ordinary sync of a non-empty table does,
  before it may end ``success``: the pages the dead run read may have changed
  since (updated in place, rows inserted or deleted before the resume point),
  and only a complete read sees that. That read writes only what differs, and
  is followed by the usual delete step.

Why each choice keeps the invariant: ``docs/correctness.md``, "Resumed loads".
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from syncflow import records
from syncflow.models import Entity
from syncflow.pages import Page, PageStream, compare_rowversions, is_digits
from syncflow.records import RunResult
from syncflow.store import Conn


def table_form(entity: Entity) -> str:
    """The columns rows are written with: rows loaded under another form cannot be kept as they are."""
    form = [(c.pg_name, c.pg_type, c.policy, c.is_business_key) for c in entity.active_columns]
    return hashlib.sha256(json.dumps(form).encode()).hexdigest()[:16]


@dataclass
class Resume:
    """One run's side of resuming: where it starts, the checks it owes, the progress it records."""

    conn: Conn
    schema: str
    entity: Entity
    result: RunResult
    page_size: int
    stored: str | None  # the entity's checkpoint as committed (moves with each keyset batch)
    record: bool = False  # whether this run records progress for a later one
    first_page: int = 1  # a by-number read starts here: the first page the dead run did not commit
    read: int = 0  # the rows the pages before first_page served (a server may serve fewer than page_size)
    form: str = ""  # table_form(entity), recorded with the progress
    # Row-version ranges (lo, hi] above the checkpoint that the dead run's range-parallel read finished.
    skip: tuple[tuple[str, str], ...] = ()
    done: tuple[tuple[str, str], ...] = ()  # the finished ranges this run last recorded

    @property
    def resuming(self) -> bool:
        return self.result.resumed_from is not None

    @classmethod
    def plan(  # noqa: PLR0913 - the run's context, then keyword-only facts about it
        cls,
        conn: Conn,
        schema: str,
        entity: Entity,
        result: RunResult,
        *,
        page_size: int,
        full_refresh: bool,
        backfill: bool,
        empty: bool,
        reconcile: bool,
    ) -> Resume:
        """What this run resumes (if anything) and whether it records its own progress."""
        plan = cls(conn, schema, entity, result, page_size, stored=entity.last_rowversion, form=table_form(entity))
        if backfill:
            return plan  # a backfill never moves the checkpoint, and resumes nothing
        found = records.resumable(conn, schema, entity.uid, result.uid)
        uid, state = found if found is not None else ("", {})
        if entity.delta_strategy == "rowversion":
            plan.record = not reconcile or empty
            if (
                state.get("mode") == "keyset"
                and not full_refresh
                and entity.last_rowversion is not None
                and state.get("rowversion") == entity.last_rowversion
            ):
                plan._resumed(uid, state)
                plan.skip = _ranges(state.get("done"), above=entity.last_rowversion)
            return plan
        page, read = state.get("page"), state.get("read")
        if (
            state.get("mode") == "pages"
            and not full_refresh
            and not empty
            and isinstance(page, int)
            and page > 1
            and isinstance(read, int)
            and state.get("page_size") == page_size
            and state.get("form") == plan.form
        ):
            plan._resumed(uid, state)
            plan.first_page, plan.read = page, read
        plan.record = empty or plan.resuming
        return plan

    def _resumed(self, uid: str, state: dict[str, Any]) -> None:
        rows = state.get("rows")
        self.result.resumed_from = uid
        self.result.resumed_at_rows = rows if isinstance(rows, int) else 0

    def commit(self, page: Page, stream: PageStream, *, rows: int) -> None:
        """Record the progress of the batch about to commit (in its transaction)."""
        if not self.record or self.result.counts.rejected:
            return  # a rejected row must be read again: no checkpoint may pass it
        loaded = (self.result.resumed_at_rows or 0) + rows
        if stream.state.keyset:
            position = page.position
            if position is None:
                return
            if self.stored is None or compare_rowversions(position, self.stored) > 0:
                records.advance_checkpoint(self.conn, self.schema, self.entity.uid, position)
                self.stored = position
            elif position != self.stored or page.done == self.done:
                return  # nothing new: the checkpoint stays, no range above it finished since
            self.done = page.done
            state: dict[str, Any] = {"mode": "keyset", "rowversion": position, "rows": loaded}
            if page.done:
                state["done"] = [list(r) for r in page.done]
            records.save_resume(self.conn, self.schema, self.result.uid, state)
            return
        if page.number < 1:
            return
        records.save_resume(
            self.conn,
            self.schema,
            self.result.uid,
            {
                "mode": "pages",
                "page": page.number + 1,
                "page_size": self.page_size,
                "read": self.read + rows,  # the rows pages 1 .. page.number served
                "rows": loaded,
                "form": self.form,
            },
        )


def _ranges(value: Any, *, above: str | None) -> tuple[tuple[str, str], ...]:
    """The finished ranges of a resume record, if they are well formed and above the checkpoint."""
    if not isinstance(value, list):
        return ()
    found: list[tuple[str, str]] = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 2 and all(isinstance(v, str) for v in item)):
            return ()
        lo, hi = item
        if compare_rowversions(lo, hi) >= 0 or (above is not None and compare_rowversions(lo, above) < 0):
            return ()
        if not (is_digits(lo) and is_digits(hi)):
            # A gap is read from just below the finished range's top version (a row may have joined it
            # since); other versions have no "just below": read it all again rather than miss one.
            return ()
        found.append((lo, hi))
    return tuple(found)
