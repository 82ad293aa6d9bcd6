#!/usr/bin/env python3
"""SyncFlow's benchmark suite: the real CLI against the demo APISmith and the local PostgreSQL.

    nox -s bench                      # 100k and 1M rows, 3 runs each (about 10 minutes)
    nox -s bench -- --sizes 20000 --repeat 1 --no-wide   # a quick smoke run

Workloads (protocol items entity, 12 columns, ~20 % nulls, pages of 1,000):
  a  first full sync into an empty table
  b  full sync again, no change at the source
  c  full and hash sync with 1 % of the rows changed (and full with record history on)
  d  rowversion incremental sync with 1 % changed
  e  10 entities x 100k rows, --workers 1 and --workers 4
and, in the same run, the floor: download + decode + COPY of the same rows into an
empty table, in one process with no overlap. For each: wall time (median, min-max),
rows/s, peak RSS of the syncflow process, and rows written per pg_stat_user_tables.
Results are printed and written to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
DB = "syncflow_bench"


@dataclass
class Sample:
    wall: float
    rss_mb: float
    rows: int
    written: int


@dataclass
class Result:
    name: str
    samples: list[Sample] = field(default_factory=list)

    def median(self, attr: str) -> float:
        return statistics.median(getattr(s, attr) for s in self.samples)

    def span(self, attr: str) -> tuple[float, float]:
        values = [getattr(s, attr) for s in self.samples]
        return min(values), max(values)


class Server:
    def __init__(self, rows: str, strategy: str) -> None:
        self.proc = subprocess.Popen(
            [
                PY,
                str(ROOT / "examples/demo_apismith.py"),
                "--port",
                "0",
                "--rows",
                rows,
                "--strategy",
                strategy,
                "--max-page-size",
                "1000",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        self.url = line.strip().rsplit(" ", 1)[-1]

    def mutate(self, entity: str, update: int) -> None:
        url = f"{self.url}/_demo/mutate?entity={entity}&update={update}"
        req = urllib.request.Request(url, method="POST")  # noqa: S310 - our own local server
        urllib.request.urlopen(req, timeout=300).read()  # noqa: S310 - our own local server

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait()


def admin() -> psycopg.Connection[Any]:
    return psycopg.connect(dbname="postgres", autocommit=True)


def fresh_database() -> str:
    with admin() as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB)))
    return f"postgresql:///{DB}"


def written(db_url: str) -> int:
    with psycopg.connect(db_url) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_user_tables WHERE schemaname = 'b'"
        ).fetchone()
    return int(row[0]) if row else 0


def execute(db_url: str, statement: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(statement.encode())


def cli(config: Path, db_url: str, *args: str) -> None:
    """Run syncflow for setting up (not measured)."""
    env = {**os.environ, "SYNCFLOW_CONFIG": str(config), "SYNCFLOW_DATABASE_URL": db_url}
    proc = subprocess.run([PY, "-m", "syncflow", *args], env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"syncflow {' '.join(args)} failed:\n{proc.stderr}")


def run_measured(config: Path, db_url: str, *args: str) -> Sample:
    before = written(db_url)
    wall, rss, rows = cli_wait4(config, db_url, *args)
    time.sleep(0.7)  # let the backend's statistics reach the shared counters
    return Sample(wall, rss, rows, written(db_url) - before)


def cli_wait4(config: Path, db_url: str, *args: str) -> tuple[float, float, int]:
    """Like :func:`cli`, with peak RSS from wait4 for exactly this child."""
    env = {**os.environ, "SYNCFLOW_CONFIG": str(config), "SYNCFLOW_DATABASE_URL": db_url}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as errf:
        started = time.perf_counter()
        proc = subprocess.Popen([PY, "-m", "syncflow", *args, "--json"], stdout=out, stderr=errf, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        errf.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"syncflow {' '.join(args)} exited {proc.returncode}:\n{errf.read().decode()}")
        rows = sum(run.get("records_fetched", 0) for run in orjson.loads(out.read() or b"[]"))  # one JSON array
    return wall, usage.ru_maxrss / 1024, rows


def floor(server: Server, db_url: str, slug: str) -> Sample:
    """Download + decode + COPY into an empty copy of the table, one process, no overlap."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS b._floor")
        conn.execute(f"CREATE TABLE b._floor (LIKE b.{slug} INCLUDING ALL)".encode())
        cols = [
            r[0]
            for r in conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = 'b._floor'::regclass AND attnum > 0"
                " AND NOT attisdropped AND attname NOT LIKE '\\_bridge\\_%' ORDER BY attnum"
            ).fetchall()
        ]
    started = time.perf_counter()
    rows = 0
    with httpx.Client(base_url=server.url, timeout=60) as http, psycopg.connect(db_url) as conn:
        page = 1
        copy_sql = sql.SQL("COPY b._floor ({}) FROM STDIN").format(sql.SQL(", ").join(map(sql.Identifier, cols)))
        with conn.cursor() as cur, cur.copy(copy_sql) as cp:
            while True:
                body = orjson.loads(http.get(f"/api/v1/data/{slug}", params={"page": page, "page_size": 1000}).content)
                for r in body["rows"]:
                    d = r["data"]
                    cp.write_row([d.get(c) for c in cols])
                rows += len(body["rows"])
                if not body.get("has_more"):
                    break
                page += 1
        conn.commit()
    return Sample(time.perf_counter() - started, 0.0, rows, rows)


def config_for(tmp: Path, url: str) -> Path:
    path = tmp / "syncflow.toml"
    path.write_text(f'[sync]\nworkers = 4\n\n[connectors.b]\nbase_url = "{url}"\n', encoding="utf-8")
    return path


def reset_items(db_url: str, slug: str = "items") -> None:
    execute(db_url, f"TRUNCATE b.{slug}; UPDATE bridge.entities SET last_rowversion = NULL, last_sync_at = NULL")


def bench_size(n: int, repeat: int, tmp: Path) -> list[Result]:
    results: list[Result] = []
    print(f"\n== {n:,} rows ==", flush=True)
    server = Server(f"items={n}", "items=full")
    try:
        db_url = fresh_database()
        config = config_for(tmp, server.url)
        cli(config, db_url, "discover")
        fl = Result(f"floor: download + decode + COPY ({n:,})")
        for _ in range(repeat):
            fl.samples.append(floor(server, db_url, "items"))
        results.append(fl)
        a, b, c_full, c_hash = (
            Result(f"{x} ({n:,})")
            for x in (
                "a first full sync",
                "b full sync, no change",
                "c full sync, 1 % changed",
                "c hash sync, 1 % changed",
            )
        )
        for _ in range(repeat):
            reset_items(db_url)
            a.samples.append(run_measured(config, db_url, "sync", "b.items"))
        for _ in range(repeat):
            b.samples.append(run_measured(config, db_url, "sync", "b.items"))
        for _ in range(repeat):
            server.mutate("items", n // 100)
            c_full.samples.append(run_measured(config, db_url, "sync", "b.items"))
        execute(db_url, "UPDATE bridge.entities SET delta_strategy = 'hash' WHERE slug = 'items'")
        for _ in range(repeat):
            server.mutate("items", n // 100)
            c_hash.samples.append(run_measured(config, db_url, "sync", "b.items"))
        c_hist = Result(f"c full sync, 1 % changed, history on ({n:,})")
        execute(
            db_url, "UPDATE bridge.entities SET delta_strategy = 'full', history_enabled = true WHERE slug = 'items'"
        )
        cli(config, db_url, "sync", "b.items")  # creates and seeds the history table: not measured
        for _ in range(repeat):
            server.mutate("items", n // 100)
            c_hist.samples.append(run_measured(config, db_url, "sync", "b.items"))
        results += [a, b, c_full, c_hash, c_hist]
        for r in results[-6:]:
            report_line(r)
    finally:
        server.close()
    server = Server(f"items={n}", "items=rowversion")
    try:
        db_url = fresh_database()
        config = config_for(tmp, server.url)
        cli(config, db_url, "discover")
        first = Result(f"a' first rowversion sync ({n:,})")
        first.samples.append(run_measured(config, db_url, "sync", "b.items"))
        d = Result(f"d rowversion sync, 1 % changed ({n:,})")
        for _ in range(repeat):
            server.mutate("items", n // 100)
            d.samples.append(run_measured(config, db_url, "sync", "b.items"))
        results += [first, d]
        report_line(first)
        report_line(d)
    finally:
        server.close()
    return results


def bench_wide(repeat: int, tmp: Path, per_entity: int = 100_000) -> list[Result]:
    print(f"\n== 10 entities x {per_entity:,} rows ==", flush=True)
    server = Server(f"items*10={per_entity}", "items=full")
    out = []
    try:
        db_url = fresh_database()
        config = config_for(tmp, server.url)
        cli(config, db_url, "discover")
        for workers in (1, 4):
            r = Result(f"e 10 x {per_entity:,}, --workers {workers}")
            for _ in range(repeat):
                execute(
                    db_url,
                    "DO $$ DECLARE t text; BEGIN FOR t IN SELECT tablename FROM pg_tables WHERE"
                    " schemaname = 'b' LOOP EXECUTE format('TRUNCATE b.%I', t); END LOOP; END $$;"
                    " UPDATE bridge.entities SET last_sync_at = NULL",
                )
                r.samples.append(run_measured(config, db_url, "sync", "--all", "--force", "--workers", str(workers)))
            report_line(r)
            out.append(r)
    finally:
        server.close()
    return out


def report_line(r: Result) -> None:
    lo, hi = r.span("wall")
    rows = r.median("rows")
    wall = r.median("wall")
    print(
        f"{r.name:<48} {wall:8.2f} s  ({lo:.2f}-{hi:.2f})  {rows / wall if wall else 0:>10,.0f} rows/s"
        f"  {r.median('rss_mb'):6.0f} MB  {r.median('written'):>10,.0f} written",
        flush=True,
    )


def machine() -> list[str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    with psycopg.connect(dbname="postgres") as conn:
        pg = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
    from importlib.metadata import version

    return [
        f"- machine: {os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, {platform.system()} {platform.release()}",
        f"- PostgreSQL {pg} on the same machine; Python {platform.python_version()}",
        f"- syncflow {version('syncflow')}, psycopg {version('psycopg')}, httpx {version('httpx')},"
        f" orjson {version('orjson')}",
        "- the demo APISmith server, the syncflow process and PostgreSQL share the cores",
    ]


def write_markdown(results: list[Result], repeat: int, path: Path) -> None:
    lines = [
        "# SyncFlow benchmarks",
        "",
        f"Written by `nox -s bench` (benchmarks/bench.py). Medians of {repeat} runs, min-max in brackets.",
        "",
        *machine(),
        "",
        "| workload | wall s (min-max) | rows/s | peak RSS MB | rows written |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        lo, hi = r.span("wall")
        wall = r.median("wall")
        rss = r.median("rss_mb")
        lines.append(
            f"| {r.name} | {wall:.2f} ({lo:.2f}-{hi:.2f}) | {r.median('rows') / wall if wall else 0:,.0f} | "
            f"{rss:.0f} | {r.median('written'):,.0f} |"
            if rss
            else f"| {r.name} | {wall:.2f} ({lo:.2f}-{hi:.2f}) | {r.median('rows') / wall if wall else 0:,.0f} | "
            f"- | {r.median('written'):,.0f} |"
        )
    lines += ["", "## Targets", ""]
    lines += targets(results)
    notes = ROOT / "benchmarks" / "analysis.md"
    if notes.exists():
        lines += ["", notes.read_text(encoding="utf-8").strip()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"\nwrote {path}")


def targets(results: list[Result]) -> list[str]:
    by = {r.name: r for r in results}
    out = []
    sizes = sorted(
        {
            int(r.name.rsplit("(", 1)[1].rstrip(")").replace(",", ""))
            for r in results
            if "(" in r.name and r.name.rsplit("(", 1)[1].rstrip(")").replace(",", "").isdigit()
        }
    )
    for n in sizes:
        tag = f"({n:,})"
        fl, a, b = (
            by.get(f"floor: download + decode + COPY {tag}"),
            by.get(f"a first full sync {tag}"),
            by.get(f"b full sync, no change {tag}"),
        )
        d = by.get(f"d rowversion sync, 1 % changed {tag}")
        if fl and a:
            ratio = a.median("wall") / fl.median("wall")
            out.append(f"- {n:,} rows, first full sync / floor: {ratio:.2f}x (target <= 1.3x)")
        if a and b:
            out.append(
                f"- {n:,} rows, no-change sync: {b.median('written'):,.0f} rows written (target 0), "
                f"{b.median('wall') / a.median('wall'):.2f}x the first load (target <= 1.0x)"
            )
        if d:
            out.append(f"- {n:,} rows, rowversion sync of 1 % changed: {d.median('wall'):.2f} s (target <= 2 s at 1M)")
        if a:
            out.append(f"- {n:,} rows, peak RSS of the first load: {a.median('rss_mb'):.0f} MB (target <= 150 MB)")
    rss = [(n, by[f"a first full sync ({n:,})"].median("rss_mb")) for n in sizes if f"a first full sync ({n:,})" in by]
    if len(rss) >= 2:
        out.append(
            f"- RSS growth {rss[0][0]:,} -> {rss[-1][0]:,} rows: {rss[-1][1] / rss[0][1] - 1:+.0%} (target within 20 %)"
        )
    w1 = next((r for r in results if r.name.endswith("--workers 1")), None)
    w4 = next((r for r in results if r.name.endswith("--workers 4")), None)
    if w1 and w4:
        out.append(
            f"- 10 entities, throughput 4 workers / 1 worker: {w1.median('wall') / w4.median('wall'):.2f}x "
            "(target >= 1.5x)"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-wide", action="store_true", help="skip the 10-entity workload")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/benchmarks.md")
    args = parser.parse_args()
    os.environ.setdefault("PGHOST", "127.0.0.1")
    os.environ.setdefault("PGUSER", "postgres")
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(x) for x in args.sizes.split(",")):
            results += bench_size(n, args.repeat, Path(tmp))
        if not args.no_wide:
            results += bench_wide(args.repeat, Path(tmp))
    write_markdown(results, args.repeat, args.out)
    print("\n".join(targets(results)))


if __name__ == "__main__":
    main()
