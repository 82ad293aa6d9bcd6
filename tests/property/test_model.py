"""Model-based tests of sync: a reference model of the source against the real engine.

Hypothesis drives a demo APISmith (a real HTTP server) through inserts,
updates, deletes, tie groups, mid-paging changes and transient faults, runs
``syncflow sync`` / ``full-refresh`` in-process against a real PostgreSQL, and
after every run checks the invariant (see ``tests/conftest.py``):

- a ``success`` run leaves every live source row as a live table row with
  identical typed values, and (full/hash, full-refresh) no other live row;
- no live source row is ever soft-deleted, whatever the run's status;
- the checkpoint never passes a row the table lacks;
- the run's counts add up.

Profiles: ``ci`` (default, a few minutes on two cores) and ``fuzz`` (``nox -s
fuzz``; ``HYPOTHESIS_PROFILE=fuzz``), for before releases.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule, run_state_machine_as_test
from psycopg.rows import dict_row

from demo_apismith import DROP, DemoServer, DemoState
from tests.helpers import DEMO_TOKEN, TOKEN_ENV, Cli

settings.register_profile(
    "ci",
    max_examples=int(os.environ.get("SYNCFLOW_PROPERTY_EXAMPLES", "60")),
    stateful_step_count=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
    # CI replays the same histories every time (a red CI is then a change's doing, reproducible at once);
    # new histories are the fuzz profile's job.
    derandomize=True,
    print_blob=True,
)
settings.register_profile(
    "fuzz",
    max_examples=2000,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
    print_blob=True,
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")

COLUMNS = [
    {"name": "ID", "output_alias": "id", "data_type": "NUMBER(38)", "is_business_key": True},
    {"name": "CODE", "output_alias": "code", "data_type": "VARCHAR2(20)", "is_business_key": True},
    {"name": "AMOUNT", "output_alias": "amount", "data_type": "NUMBER(38,10)"},
    {"name": "LABEL", "output_alias": "label", "data_type": "CLOB"},
    {"name": "AT", "output_alias": "at", "data_type": "TIMESTAMP WITH TIME ZONE"},
    {"name": "OK", "output_alias": "ok", "data_type": "boolean"},
    {"name": "DOC", "output_alias": "doc", "data_type": "json"},
    {"name": "SELECT", "output_alias": "select", "data_type": "NUMBER(9)"},
    {"name": "DAY", "output_alias": "day", "data_type": "DATEONLY"},
    {"name": "LOCAL", "output_alias": "local", "data_type": "TIMESTAMP(6)"},
    {"name": "BOOKED", "output_alias": "booked", "data_type": "DATE"},
    {"name": "RATIO", "output_alias": "ratio", "data_type": "BINARY_DOUBLE"},
    {"name": "BIG", "output_alias": "big", "data_type": "INTEGER"},
    {"name": "RAW", "output_alias": "raw", "data_type": "RAW(16)"},
    {"name": 'Odd "Name"', "output_alias": "odd name", "data_type": "VARCHAR2(10)"},
]
NON_KEYS = ["amount", "label", "at", "ok", "doc", "select", "day", "local", "booked", "ratio", "big", "raw", "odd name"]
# Added by the ``add_column`` rule (discovery adds the column; rows read before have no value in it).
EXTRA = {"name": "EXTRA", "output_alias": "extra", "data_type": "VARCHAR2(30)"}

_chars = st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00")  # JSON and PostgreSQL text
amounts = st.builds(
    lambda whole, frac, neg: Decimal(f"{'-' if neg else ''}{whole}.{frac:010d}"),
    st.integers(0, 10**28 - 1),
    st.integers(0, 10**10 - 1),
    st.booleans(),
)
labels = st.one_of(
    st.none(),
    st.text(_chars, max_size=30),
    st.just("x" * 10_000),
    st.just("𝔘𝔫𝔦𝔠𝔬𝔡𝔢 😀"),
)
stamps = st.one_of(
    st.none(),
    st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.timezones()).map(
        lambda d: d.isoformat()
    ),
)
docs = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30) | amounts | st.text(_chars, max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(_chars, max_size=4), inner, max_size=3),
    max_leaves=6,
)
codes = st.sampled_from(["a", "B", "ü", "a b", "SELECT", "1", "𝔘", "0000-00-00"])
days = st.dates(min_value=date(1, 1, 1), max_value=date(9999, 12, 31)).map(lambda d: d.isoformat())
locals_ = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)).map(lambda d: d.isoformat())
booked = st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)).map(
    lambda d: d.replace(microsecond=0).isoformat()
)  # Oracle DATE: whole seconds
ratios = st.floats(allow_nan=False, allow_infinity=False) | st.just(-0.0) | st.just(5e-324)
raws = st.binary(max_size=24).map(lambda b: base64.b64encode(b).decode())


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "amount": draw(st.none() | amounts),
        "label": draw(labels),
        "at": draw(stamps),
        "ok": draw(st.none() | st.booleans()),
        "doc": draw(st.none() | docs),
        "select": draw(st.none() | st.integers(-(2**31), 2**31 - 1)),
        "day": draw(st.none() | days),
        "local": draw(st.none() | locals_),
        "booked": draw(st.none() | booked),
        "ratio": draw(st.none() | ratios),
        "big": draw(st.none() | st.integers(-(2**63), 2**63 - 1)),
        "raw": draw(st.none() | raws),
        "odd name": draw(st.none() | st.text(_chars, max_size=10)),
        "extra": draw(st.none() | st.text(_chars, max_size=30)),
    }


def _as_json_value(value: Any, as_string: bool) -> Any:
    """Numbers go out as JSON numbers or, as the protocol allows, as strings."""
    if isinstance(value, Decimal) and as_string:
        return str(value)
    return value


def _typed(column: str, value: Any) -> Any:
    """What PostgreSQL should hold for a source value, in the form psycopg returns it."""
    if value is None:
        return None
    if column in ("at", "local", "booked"):
        return datetime.fromisoformat(value)
    if column == "day":
        return date.fromisoformat(value)
    if column == "raw":
        return base64.b64decode(value)
    return value


@pytest.fixture
def server() -> Iterator[DemoServer]:
    with DemoServer(DemoState({}, token=DEMO_TOKEN)) as s:
        yield s


def test_sync_keeps_the_table_equal_to_the_model(  # noqa: C901 - the state machine closes over the fixtures
    cli: Cli, server: DemoServer, db_url: str
) -> None:
    class SyncModel(RuleBasedStateMachine):
        """The source as a dict of key → record; the engine must keep the table equal to it."""

        def __init__(self) -> None:
            super().__init__()
            with psycopg.connect(db_url, autocommit=True) as conn:
                conn.execute("DROP SCHEMA IF EXISTS erp CASCADE")
                conn.execute("DROP SCHEMA IF EXISTS bridge CASCADE")
            self.state = DemoState({}, token=DEMO_TOKEN)
            server.httpd.state = self.state
            self.model: dict[tuple[Any, ...], dict[str, Any]] = {}
            self.strategy = "rowversion"
            self.next_id = 0
            self.discovered = False
            self.hard_deleted: set[tuple[Any, ...]] = set()
            self.extra_added = False
            self.history = False

        # -- configuration ------------------------------------------------------------------

        @initialize(
            strategy=st.sampled_from(["rowversion", "full", "hash"]),
            page_size=st.integers(1, 7),
            history=st.booleans(),
            as_strings=st.booleans(),
            batch_rows=st.integers(1, 12),
            concurrency=st.sampled_from([2, 4, 8]),
            parallel=st.sampled_from(["always", "always", "auto"]),
        )
        def configure(
            self,
            strategy: str,
            page_size: int,
            history: bool,
            as_strings: bool,
            batch_rows: int,
            concurrency: int,
            parallel: str,
        ) -> None:
            """Pages are fetched ahead in parallel (max_concurrent_requests > 1; ``parallel_reads`` "always", or
            "auto", which reads a source on this machine in order): the invariant must hold."""
            self.strategy = strategy
            self.as_strings = as_strings
            self.history = history
            self.state.set_api("things", {"slug": "things", "delta_strategy": strategy, "columns": COLUMNS})
            entity = f"\n[connectors.erp.entities.things]\npage_size = {page_size}\nhistory = {str(history).lower()}\n"
            cli.config.write_text(
                f"[sync]\nretry_backoff_seconds = 0\nretry_attempts = 3\nbatch_rows = {batch_rows}\n"
                f'[connectors.erp]\nbase_url = "{server.url}"\ntoken_env = "{TOKEN_ENV}"\n'
                f'max_concurrent_requests = {concurrency}\nparallel_reads = "{parallel}"\n{entity}',
                encoding="utf-8",
            )
            self._discover()

        # -- the source ---------------------------------------------------------------------

        def _put(self, rows: list[tuple[tuple[Any, ...], dict[str, Any]]], version: int | None = None) -> None:
            payload = []
            for key, rec in rows:
                if not self.extra_added:
                    rec = {c: v for c, v in rec.items() if c != "extra"}
                self.model[key] = rec
                self.hard_deleted.discard(key)
                out = {"id": key[0], "code": key[1]}
                out.update({c: _as_json_value(v, self.as_strings and c == "amount") for c, v in rec.items()})
                payload.append(out)
            self.state.put_rows("things", payload, version=version)

        @rule(data=st.data(), n=st.integers(1, 12), tie=st.booleans())
        def insert(self, data: st.DataObject, n: int, tie: bool) -> None:
            """New rows; with ``tie`` they all share one row version."""
            rows = []
            for _ in range(n):
                self.next_id += 1
                big = data.draw(st.sampled_from([0, 10**30, -(10**37)]))
                key = (self.next_id + big, data.draw(codes))
                rows.append((key, data.draw(records())))
            if tie:
                self._put(rows)
            else:
                for row in rows:
                    self._put([row])

        @precondition(lambda self: bool(self.model))
        @rule(data=st.data())
        def update(self, data: st.DataObject) -> None:
            keys = data.draw(
                st.lists(st.sampled_from(sorted(self.model, key=repr)), min_size=1, max_size=5, unique=True)
            )
            self._put([(k, data.draw(records())) for k in keys])

        @precondition(lambda self: bool(self.model))
        @rule(data=st.data(), hard=st.booleans())
        def delete(self, data: st.DataObject, hard: bool) -> None:
            keys = data.draw(
                st.lists(st.sampled_from(sorted(self.model, key=repr)), min_size=1, max_size=3, unique=True)
            )
            for k in keys:
                del self.model[k]
                if hard and self.strategy == "rowversion":
                    self.hard_deleted.add(k)
            self.state.delete("things", keys=keys, hard=hard)

        @rule(
            rec=records(),
            pick=st.integers(0, 10**6),
            at_request=st.integers(1, 6),
            kind=st.sampled_from(["update", "delete", "insert"]),
        )
        def change_while_paging(self, rec: dict[str, Any], pick: int, at_request: int, kind: str) -> None:
            """The next run meets one change at the source just before its ``at_request``-th page request."""
            seen: list[int] = []

            def hook(slug: str, page: int, params: dict[str, str]) -> None:
                seen.append(page)
                if len(seen) != at_request:
                    return
                keys = sorted(self.model, key=repr)
                if kind == "insert" or not keys:
                    self.next_id += 1
                    self._put([((self.next_id, "a"), rec)])
                elif kind == "update":
                    self._put([(keys[pick % len(keys)], rec)])
                else:
                    key = keys[pick % len(keys)]
                    del self.model[key]
                    self.state.delete("things", keys=[key])

            self.state.before_page = hook

        @rule(at_request=st.integers(1, 8))
        def dies_part_way(self, at_request: int) -> None:
            """The next run's source goes down after ``at_request`` page requests and stays down through every
            retry: the run fails, keeping the batches it committed; the runs after it resume from them."""
            seen: list[int] = []

            def hook(slug: str, page: int, params: dict[str, str]) -> None:
                seen.append(page)
                if len(seen) == at_request:
                    self.state.fail_next(503, 50)

            self.state.before_page = hook

        @rule(count=st.integers(1, 4), status=st.sampled_from([503, 502, 429, DROP]))
        def transient_fault(self, count: int, status: int) -> None:
            """The next ``count`` requests fail (DROP: the connection is cut in the middle of the body)."""
            self.state.fail_next(status, count)

        @precondition(lambda self: self.discovered and not self.extra_added)
        @rule()
        def add_column(self) -> None:
            """The API gains a column; discovery adds it and the next sync fills it in every row."""
            self.state.set_api(
                "things", {"slug": "things", "delta_strategy": self.strategy, "columns": [*COLUMNS, EXTRA]}
            )
            self._discover_now()
            self.extra_added = True

        @precondition(lambda self: self.discovered)
        @rule()
        def discover_again(self) -> None:
            """Discovery with nothing changed changes nothing (and never resets what it must not)."""
            self._discover_now()

        def _discover_now(self) -> None:
            """Discover; faults queued for the next sync are kept for it (discovery reads /apis only)."""
            pending = list(self.state.faults)
            self.state.faults.clear()
            r = cli("discover")
            self.state.faults[:] = pending
            assert r.exit_code == 0, r.stderr

        # -- SyncFlow -----------------------------------------------------------------------

        def _discover(self) -> None:
            if not self.discovered:
                r = cli("discover")
                assert r.exit_code == 0, r.stderr
                self.discovered = True

        def _run(self, *args: str) -> dict[str, Any]:
            self._discover()
            r = cli(*args, "--json")
            self.state.before_page = None
            self.state.faults.clear()
            runs = json.loads(r.stdout) if r.stdout.strip() else []
            assert runs, r.stderr
            run: dict[str, Any] = runs[0]
            assert r.exit_code == {"success": 0, "partial": 1, "failed": 1}[run["status"]], (r.exit_code, run)
            self._check(run, full=args[0] == "full-refresh")
            return run

        @rule()
        def sync(self) -> None:
            self._run("sync", "erp.things")

        @rule()
        def full_refresh(self) -> None:
            self._run("full-refresh", "erp.things")

        @rule()
        def settle(self) -> None:
            """Undisturbed, a run succeeds and the table equals the source."""
            run = self._run("sync", "erp.things")
            if run["status"] != "success":  # one more: the last one may have been cut short by a fault
                run = self._run("sync", "erp.things")
            assert run["status"] == "success", (run["error_message"], run)

        def teardown(self) -> None:
            """Every sequence ends converged: an undisturbed run leaves the table equal to the source."""
            if self.discovered:
                self.settle()

        # -- the invariant ------------------------------------------------------------------

        def _table(self) -> dict[tuple[Any, ...], dict[str, Any]]:
            """The table's rows by key, their columns named by the API's aliases."""
            with psycopg.connect(db_url) as conn, conn.cursor(row_factory=dict_row) as cur:
                cur.execute("SELECT columns FROM bridge.entities WHERE slug = 'things'")
                found = cur.fetchone()
                assert found is not None
                alias = {c["pg_name"]: c["api_name"] for c in found["columns"]}
                cur.execute("SELECT *, doc::text AS doc_text FROM erp.things")
                rows = [{alias.get(k, k): v for k, v in r.items()} for r in cur.fetchall()]
                return {(r["id"], r["code"]): r for r in rows}

        def _check_history(self, table: dict[tuple[Any, ...], dict[str, Any]]) -> None:
            """Each key's versions are contiguous, one is open, and the open one is the table row."""
            with psycopg.connect(db_url) as conn, conn.cursor(row_factory=dict_row) as cur:
                cur.execute("SELECT history_table FROM bridge.entities WHERE slug = 'things'")
                found = cur.fetchone()
                assert found is not None
                assert found["history_table"]
                cur.execute(
                    psycopg.sql.SQL("SELECT * FROM {} ORDER BY _bridge_history_id").format(
                        psycopg.sql.Identifier("erp", found["history_table"])
                    )
                )
                versions: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
                for v in cur.fetchall():
                    versions.setdefault((v["id"], v["code"]), []).append(v)
            assert set(versions) == set(table), "history keys differ from the table's"
            for key, vs in versions.items():
                for a, b in itertools.pairwise(vs):
                    assert a["_bridge_valid_to"] == b["_bridge_valid_from"], ("history has a gap", key)
                assert vs[-1]["_bridge_valid_to"] is None, ("no open version", key)
                row, last = table[key], vs[-1]
                assert (last["_bridge_operation"] == "delete") == row["_bridge_deleted"], (key, last, row)
                assert last["_bridge_rowversion"] == row["_bridge_rowversion"], key

        def _check(self, run: dict[str, Any], *, full: bool) -> None:
            table = self._table()
            live = {k: r for k, r in table.items() if not r["_bridge_deleted"]}
            if self.history:
                self._check_history(table)
            assert not any(table[k]["_bridge_deleted"] for k in self.model if k in table), (
                "a live source row is soft-deleted"
            )
            counted = run["records_inserted"] + run["records_updated"] + run["records_rejected"]
            assert run["records_fetched"] >= counted, run
            assert run["records_unchanged"] >= 0, run
            if self.strategy == "rowversion":  # after every run: a failed one may have committed progress
                self._check_checkpoint(live)
            if run["status"] != "success":
                return
            missing = set(self.model) - set(live)
            assert not missing, f"live source rows missing after success: {sorted(missing, key=repr)[:5]}"
            for key, rec in self.model.items():
                row = live[key]
                for column in [*NON_KEYS, "extra"] if self.extra_added else NON_KEYS:
                    got = row[column]
                    if column == "doc" and got is not None:
                        got = json.loads(row["doc_text"], parse_float=Decimal)
                    want = _typed(column, rec.get(column))
                    assert got == want, (key, column, got, want)
            reconciles = self.strategy in ("full", "hash") or full
            guard = any(w.startswith("deleted nothing") for w in run["warnings"])
            if reconciles and not guard:
                extra = set(live) - set(self.model)
                assert not extra, f"rows gone at the source still live: {sorted(extra, key=repr)[:5]}"
            elif self.strategy == "rowversion" and not guard:
                extra = set(live) - set(self.model) - self.hard_deleted
                assert not extra, f"tombstoned rows still live: {sorted(extra, key=repr)[:5]}"

        def _check_checkpoint(self, live: dict[tuple[Any, ...], dict[str, Any]]) -> None:
            """The stored checkpoint never passes a row the table lacks (nor a newer version of it)."""
            with psycopg.connect(db_url) as conn:
                found = conn.execute("SELECT last_rowversion FROM bridge.entities WHERE slug = 'things'").fetchone()
            checkpoint = found[0] if found else None
            if checkpoint is None:
                return
            ent = self.state.entities["things"]
            for key, version in ent.versions.items():
                if version <= int(checkpoint):
                    assert key in live, ("the checkpoint passed a row the table lacks", key)
                    assert int(live[key]["_bridge_rowversion"]) >= version, (
                        "the checkpoint passed a row the table lacks",
                        key,
                    )

    run_state_machine_as_test(SyncModel, settings=settings.get_profile(PROFILE))
