"""Resumable first loads: the progress a run commits with each batch, and the next run continuing from it.

A run killed part-way (SIGKILL, OOM, a lost node, retries exhausted) keeps
every batch it committed. What the next run may skip depends on the read:

- **rowversion** (keyset reads): each committed batch also commits the
  checkpoint below which every row was passed on and merged (the page's
  ``position``), so the next run is an ordinary incremental sync from there,
  tombstones included. Only where no delete step is due: an incremental run,
  or a load into a table that was empty when it began (a read from the start
  into a non-empty table must see every row before it may delete).
- **full / hash** (page numbers): each committed batch records the next page
  number and a digest of the keys of the page before it. The next ``sync``
  (not ``full-refresh``) of the same table form and page size starts at that
  page before and compares it: a page that differs, a total that moved, or a
  dead run that saw rows move, means rows may have shifted across the resume
  point, so the run reads the whole entity again until two reads agree before
  it may end ``success``; otherwise the pages before are trusted as loaded.
  Deletes wait for the next complete read (the table then holds rows the
  source may have deleted since; no live source row is missing).

Why each choice keeps the invariant: ``docs/correctness.md``, "Resumed loads".
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from syncflow import records
from syncflow.models import Entity
from syncflow.pages import KeyFn, Page, PageStream, compare_rowversions, keys_digest
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
    first_page: int = 1  # a by-number read starts here: the page before the resume point
    boundary: str | None = None  # the digest of first_page's keys as the dead run saw them
    total: int | None = None  # the total the dead run saw
    moved: list[str] = field(default_factory=list)  # signs that rows moved between the two runs

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
        plan = cls(conn, schema, entity, result, page_size, stored=entity.last_rowversion)
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
            return plan
        page = state.get("page")
        if (
            state.get("mode") == "pages"
            and not full_refresh
            and not empty
            and isinstance(page, int)
            and page > 1
            and state.get("page_size") == page_size
            and state.get("form") == table_form(entity)
        ):
            plan._resumed(uid, state)
            plan.first_page = page - 1
            plan.boundary = state.get("boundary")
            plan.total = state.get("total")
            if state.get("moved"):
                plan.moved.append("rows moved while the run it resumes was reading")
        plan.record = empty or plan.resuming
        return plan

    def _resumed(self, uid: str, state: dict[str, Any]) -> None:
        rows = state.get("rows")
        self.result.resumed_from = uid
        self.result.resumed_at_rows = rows if isinstance(rows, int) else 0

    def on_page(self, page: Page, key_fn: KeyFn) -> bool:
        """The page before the resume point must be as the dead run saw it (its keys, in order).

        True: the page is that check only, not loaded (its rows are in the table), so the rest of
        the load is plain inserts into rows it lacks, and a key that comes again is a sign, as in
        any first load.
        """
        if self.boundary is None or page.number != self.first_page:
            return False
        if keys_digest(page.rows, key_fn) != self.boundary:
            self.moved.append("the page before the resume point changed since the resumed run read it")
        self.boundary = None
        return True

    def after_read(self, stream: PageStream) -> None:
        """A total that moved between the two runs is a sign too."""
        if self.resuming and self.first_page > 1 and self.total is not None and stream.state.first_total != self.total:
            self.moved.append("the source's row count changed between the two runs")

    def commit(self, page: Page, stream: PageStream, *, rows: int, key_fn: KeyFn, moved: bool) -> None:
        """Record the progress of the batch about to commit (in its transaction)."""
        if not self.record or self.result.counts.rejected:
            return  # a rejected row must be read again: no checkpoint may pass it
        loaded = (self.result.resumed_at_rows or 0) + rows
        if stream.state.keyset:
            position = page.position
            if position is None or (self.stored is not None and compare_rowversions(position, self.stored) <= 0):
                return
            records.advance_checkpoint(self.conn, self.schema, self.entity.uid, position)
            self.stored = position
            records.save_resume(
                self.conn, self.schema, self.result.uid, {"mode": "keyset", "rowversion": position, "rows": loaded}
            )
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
                "total": stream.state.first_total,
                "boundary": keys_digest(page.rows, key_fn),
                "rows": loaded,
                "form": table_form(self.entity),
                "moved": moved or bool(self.moved),
            },
        )
