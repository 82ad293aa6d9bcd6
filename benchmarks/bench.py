#!/usr/bin/env python3
"""SyncFlow's benchmark suite: the real CLI against the demo APISmith and the local PostgreSQL.

    nox -s bench                      # 100k and 1M rows, 3 runs each (10 minutes idle, plus the latency waits)
    nox -s bench -- --sizes 20000 --repeat 1 --no-wide   # a quick smoke run
    nox -s bench -- --skip zero,workers,latency          # start-up only

Workloads (protocol items entity, 12 columns, ~20 % nulls, pages of 1,000):
  a  first full sync into an empty table
  b  full sync again, no change at the source
  c  full and hash sync with 1 % of the rows changed (and full with record history on)
  d  rowversion incremental sync with 1 % changed
  e  10 entities x 100k rows, --workers 1 and --workers 4
  f  a first full load with the demo server answering each data page after 0 and 50 ms
     (the largest of --sizes, 1M by default) and after 0 and 200 ms (the smallest, 100k)
  g  10 entities x 100k rows with the default settings (no [sync] table, no flags), 0 and 50 ms per page
  s  start-up: `syncflow --version`, and `syncflow sync --all` with nothing due (hyperfine when it
     is installed, else a loop of runs; medians)
and, in the same run, the floor: download + decode + COPY of the same rows into an
empty table, in one process with no overlap. For each: wall time (median, min-max),
rows/s, peak RSS of the syncflow process, and rows written per pg_stat_user_tables.
Results are printed and written to docs/benchmarks.md, with the ratio of each to its
target (issue 16); benchmarks/analysis.md and benchmarks/earlier.md are appended.

Every syncflow process runs with its bytecode cached (PYTHONPYCACHEPREFIX in a temporary
directory, warmed up first), as an installed package has it: without the cache each run
would compile SyncFlow's modules again (PYTHONDONTWRITEBYTECODE is set on some machines).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import shutil
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
# Dropped and created again by every part: two checkouts benchmarking on one server each name their own.
DB = os.environ.get("SYNCFLOW_BENCH_DB", "syncflow_bench")
# The console script cron runs (``python -m syncflow`` when it is not installed next to this Python).
SYNCFLOW = [str(Path(PY).parent / "syncflow")] if (Path(PY).parent / "syncflow").exists() else [PY, "-m", "syncflow"]
PYCACHE = Path(tempfile.mkdtemp(prefix="syncflow-bench-pyc-"))
atexit.register(shutil.rmtree, PYCACHE, ignore_errors=True)


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

    def _post(self, path: str) -> bytes:
        req = urllib.request.Request(f"{self.url}{path}", method="POST")  # noqa: S310 - our own local server
        with urllib.request.urlopen(req, timeout=300) as answer:  # noqa: S310 - our own local server
            return bytes(answer.read())

    def mutate(self, entity: str, update: int) -> None:
        self._post(f"/_demo/mutate?entity={entity}&update={update}")

    def latency(self, ms: float, jitter_ms: float = 0) -> None:
        """Each data page from now on is answered after ``ms`` (+/- ``jitter_ms``) milliseconds."""
        self._post(f"/_demo/settings?latency_ms={ms}&jitter_ms={jitter_ms}")

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


def child_env(config: Path, db_url: str) -> dict[str, str]:
    """The environment of a syncflow process: its configuration, and bytecode cached as when installed."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, "PYTHONPYCACHEPREFIX": str(PYCACHE), "SYNCFLOW_CONFIG": str(config), "SYNCFLOW_DATABASE_URL": db_url}


def cli(config: Path, db_url: str, *args: str) -> None:
    """Run syncflow for setting up (not measured)."""
    env = child_env(config, db_url)
    proc = subprocess.run([*SYNCFLOW, *args], env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"syncflow {' '.join(args)} failed:\n{proc.stderr}")


def run_measured(config: Path, db_url: str, *args: str) -> Sample:
    before = written(db_url)
    wall, rss, rows = cli_wait4(config, db_url, *args)
    time.sleep(0.7)  # let the backend's statistics reach the shared counters
    return Sample(wall, rss, rows, written(db_url) - before)


def cli_wait4(config: Path, db_url: str, *args: str) -> tuple[float, float, int]:
    """Like :func:`cli`, with peak RSS from wait4 for exactly this child."""
    env = child_env(config, db_url)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as errf:
        started = time.perf_counter()
        proc = subprocess.Popen([*SYNCFLOW, *args, "--json"], stdout=out, stderr=errf, env=env)
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


TRUNCATE_ALL = (
    "DO $$ DECLARE t text; BEGIN FOR t IN SELECT tablename FROM pg_tables WHERE"
    " schemaname = 'b' LOOP EXECUTE format('TRUNCATE b.%I', t); END LOOP; END $$;"
    " UPDATE bridge.entities SET last_sync_at = NULL, last_rowversion = NULL"
)


def bench_wide(repeat: int, tmp: Path, per_entity: int = 100_000, *, workers: bool, latency: bool) -> list[Result]:
    """e: --workers 1 and 4 at 0 ms; g: the default settings at 0 and 50 ms per page (one data set for both)."""
    print(f"\n== 10 entities x {per_entity:,} rows ==", flush=True)
    server = Server(f"items*10={per_entity}", "items=full")
    out = []
    try:
        db_url = fresh_database()
        config = config_for(tmp, server.url)
        cli(config, db_url, "discover")
        runs: list[tuple[str, Path, list[str], float]] = []
        if workers:
            runs += [(f"e 10 x {per_entity:,}, --workers {n}", config, ["--workers", str(n)], 0) for n in (1, 4)]
        if latency:
            defaults = tmp / "defaults.toml"  # no [sync] table: every setting at its default
            defaults.write_text(f'[connectors.b]\nbase_url = "{server.url}"\n', encoding="utf-8")
            runs += [(f"g 10 x {per_entity:,}, default settings, {ms} ms/page", defaults, [], ms) for ms in (0, 50)]
        for name, cfg, flags, ms in runs:
            server.latency(ms)
            r = Result(name)
            for _ in range(repeat):
                execute(db_url, TRUNCATE_ALL)
                r.samples.append(run_measured(cfg, db_url, "sync", "--all", "--force", *flags))
            report_line(r)
            out.append(r)
    finally:
        server.close()
    return out


def latency_plan(sizes: list[int]) -> dict[int, tuple[int, ...]]:
    """Rows -> milliseconds per page: the largest size at 0 and 50 ms, the smallest at 0 and 200 ms."""
    plan: dict[int, set[int]] = {}
    plan.setdefault(max(sizes), set()).update((0, 50))
    plan.setdefault(min(sizes), set()).update((0, 200))
    return {n: tuple(sorted(ms)) for n, ms in sorted(plan.items())}


def bench_latency(n: int, latencies: tuple[int, ...], repeat: int, tmp: Path, strategy: str) -> list[Result]:
    """f: the first load of one entity with the server answering each data page after ``ms`` milliseconds."""
    print(f"\n== {n:,} rows, {strategy}, {', '.join(map(str, latencies))} ms per page ==", flush=True)
    server = Server(f"items={n}", f"items={strategy}")
    out = []
    try:
        db_url = fresh_database()
        config = config_for(tmp, server.url)
        cli(config, db_url, "discover")
        for ms in latencies:
            server.latency(ms)
            r = Result(f"f first {strategy} load, {ms} ms/page ({n:,})")
            for _ in range(repeat):
                reset_items(db_url)
                r.samples.append(run_measured(config, db_url, "sync", "b.items"))
            report_line(r)
            out.append(r)
    finally:
        server.close()
    return out


GNU_TIME = Path("/usr/bin/time")


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one process; its output is discarded.

    The RSS comes from GNU time when it is there: wait4 on a child of this process would also count the
    pages it shared with this process between fork and exec (about 45 MB here), which swamps a start-up's.
    """
    with tempfile.NamedTemporaryFile(mode="r") as rss_file:
        wrap = [str(GNU_TIME), "-f", "%M", "-o", rss_file.name] if GNU_TIME.exists() else []
        started = time.perf_counter()
        proc = subprocess.Popen([*wrap, *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            assert proc.stderr is not None
            raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr.read().decode()}")
        rss_kb = float(rss_file.read().strip().splitlines()[-1]) if wrap else usage.ru_maxrss
    return wall, rss_kb / 1024


def hyperfine(cmd: list[str], env: dict[str, str], runs: int) -> list[float] | None:
    """Wall times of ``runs`` runs measured by hyperfine (3 warm-up runs, no shell), or None without it."""
    exe = shutil.which("hyperfine")
    if exe is None:
        return None
    with tempfile.NamedTemporaryFile(suffix=".json") as export:
        subprocess.run(
            [exe, "--warmup", "3", "--runs", str(runs), "-N", "--export-json", export.name, " ".join(cmd)],
            env=env,
            check=True,
            capture_output=True,
        )
        return [float(x) for x in json.loads(Path(export.name).read_text(encoding="utf-8"))["results"][0]["times"]]


def bench_startup(runs: int, tmp: Path) -> list[Result]:
    """s: what every cron invocation pays before any work: ``--version``, and ``sync --all`` with nothing due."""
    print("\n== start-up ==", flush=True)
    server = Server("items=100,customers=50,orders=80", "")
    out = []
    try:
        db_url = fresh_database()
        config = config_for(tmp, server.url)
        cli(config, db_url, "discover")
        cli(config, db_url, "sync", "--all")  # every entity synced just now: the next pass has nothing due
        env = child_env(config, db_url)
        tool = "hyperfine" if shutil.which("hyperfine") else f"a loop of {runs} runs"
        for name, args in (("s syncflow --version", ["--version"]), ("s sync --all, nothing due", ["sync", "--all"])):
            cmd = [*SYNCFLOW, *args]
            for _ in range(3):  # warm-up: the bytecode cache, the page cache
                timed(cmd, env)
            r = Result(f"{name} ({tool})")
            walls = hyperfine(cmd, env, runs)
            rss = [timed(cmd, env)[1] for _ in range(3)]
            if walls is None:
                samples = [timed(cmd, env) for _ in range(runs)]
                walls, rss = [w for w, _ in samples], [m for _, m in samples]
            r.samples = [Sample(w, statistics.median(rss), 0, 0) for w in walls]
            report_line(r)
            out.append(r)
    finally:
        server.close()
    return out


def secs(value: float) -> str:
    """Seconds to the precision that matters: milliseconds below 1 s (start-up), else centiseconds."""
    return f"{value:.3f}" if value < 1 else f"{value:.2f}"


def report_line(r: Result) -> None:
    lo, hi = r.span("wall")
    rows = r.median("rows")
    wall = r.median("wall")
    print(
        f"{r.name:<56} {secs(wall):>8} s  ({secs(lo)}-{secs(hi)})  {rows / wall if wall else 0:>10,.0f} rows/s"
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
        "- every syncflow process runs from its console script with its bytecode cached (as installed)",
    ]


def write_markdown(results: list[Result], repeat: int, path: Path, notes: list[str]) -> None:
    lines = [
        "# SyncFlow benchmarks",
        "",
        f"Written by `nox -s bench` (benchmarks/bench.py). Medians of {repeat} runs (start-up: of more, as"
        " named), min-max in brackets.",
        "",
        *machine(),
        *notes,
        "",
        "| workload | wall s (min-max) | rows/s | peak RSS MB | rows written |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        lo, hi = r.span("wall")
        wall = r.median("wall")
        rss = r.median("rss_mb")
        rate = f"{r.median('rows') / wall:,.0f}" if wall and r.median("rows") else "-"
        lines.append(
            f"| {r.name} | {secs(wall)} ({secs(lo)}-{secs(hi)}) | {rate} | {f'{rss:.0f}' if rss else '-'} | "
            f"{r.median('written'):,.0f} |"
        )
    lines += ["", "## Targets", "", "Ratios of figures measured side by side in this run.", ""]
    lines += targets(results)
    for extra in ("analysis.md", "earlier.md"):
        file = ROOT / "benchmarks" / extra
        if file.exists():
            lines += ["", file.read_text(encoding="utf-8").strip()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"\nwrote {path}")


def _verdict(value: float, limit: float, *, at_most: bool = True) -> str:
    return "met" if (value <= limit if at_most else value >= limit) else "missed"


def targets(results: list[Result]) -> list[str]:  # noqa: C901 - one line per target, each optional
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
            out.append(f"- {n:,} rows, first full sync / floor: {ratio:.2f}x (target <= 1.3x: {_verdict(ratio, 1.3)})")
        if a and b:
            ratio = b.median("wall") / a.median("wall")
            out.append(
                f"- {n:,} rows, no-change sync: {b.median('written'):,.0f} rows written (target 0), "
                f"{ratio:.2f}x the first load (target <= 0.8x: {_verdict(ratio, 0.8)})"
            )
        if d:
            out.append(f"- {n:,} rows, rowversion sync of 1 % changed: {d.median('wall'):.2f} s (target <= 2 s at 1M)")
        if a:
            out.append(f"- {n:,} rows, peak RSS of the first load: {a.median('rss_mb'):.0f} MB (target <= 150 MB)")
        for strategy in ("full", "rowversion", "hash"):
            zero = by.get(f"f first {strategy} load, 0 ms/page {tag}")
            for ms, limit in ((50, 1.3), (200, 1.6)):
                slow = by.get(f"f first {strategy} load, {ms} ms/page {tag}")
                if zero and slow:
                    ratio = slow.median("wall") / zero.median("wall")
                    out.append(
                        f"- {n:,} rows, first {strategy} load at {ms} ms/page / at 0 ms: {ratio:.2f}x"
                        f" (target <= {limit}x: {_verdict(ratio, limit)})"
                    )
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
    g0 = next((r for r in results if r.name.startswith("g ") and r.name.endswith(" 0 ms/page")), None)
    g50 = next((r for r in results if r.name.startswith("g ") and r.name.endswith(" 50 ms/page")), None)
    if g0 and g50:
        ratio = g50.median("wall") / g0.median("wall")
        out.append(
            f"- 10 entities, default settings, 50 ms/page / 0 ms: {ratio:.2f}x (target <= 1.3x: {_verdict(ratio, 1.3)})"
        )
    for prefix, limit in (("s syncflow --version", 0.15), ("s sync --all, nothing due", 0.3)):
        s = next((r for r in results if r.name.startswith(prefix)), None)
        if s:
            wall = s.median("wall")
            out.append(f"- {prefix[2:]}: {wall:.3f} s (target <= {limit} s: {_verdict(wall, limit)})")
    measured = [r for r in results if r.median("rss_mb")]
    if measured:
        top = max(measured, key=lambda r: r.median("rss_mb"))
        peak = top.median("rss_mb")
        out.append(
            f"- peak RSS, largest of any workload: {peak:.0f} MB, {top.name} (target <= 150 MB: {_verdict(peak, 150)})"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-wide", action="store_true", help="skip the 10-entity workloads (e and g)")
    parser.add_argument("--wide-rows", type=int, default=100_000, help="rows per entity of e and g")
    parser.add_argument(
        "--skip",
        default="",
        help="parts to leave out, comma-separated: zero (a-d, the floor), workers (e), latency (f, g), startup (s)",
    )
    parser.add_argument("--latency-strategy", default="full", choices=("full", "hash", "rowversion"))
    parser.add_argument("--startup-runs", type=int, default=20)
    parser.add_argument("--out", type=Path, default=ROOT / "docs/benchmarks.md")
    args = parser.parse_args()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    os.environ.setdefault("PGHOST", "127.0.0.1")
    os.environ.setdefault("PGUSER", "postgres")
    sizes = [int(x) for x in args.sizes.split(",")]
    load = os.getloadavg()[0]
    started = time.monotonic()
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        if "startup" not in skip:
            results += bench_startup(args.startup_runs, Path(tmp))
        if "zero" not in skip:
            for n in sizes:
                results += bench_size(n, args.repeat, Path(tmp))
        if "latency" not in skip:
            for n, latencies in latency_plan(sizes).items():
                results += bench_latency(n, latencies, args.repeat, Path(tmp), args.latency_strategy)
        if not args.no_wide and not {"workers", "latency"} <= skip:
            results += bench_wide(
                args.repeat, Path(tmp), args.wide_rows, workers="workers" not in skip, latency="latency" not in skip
            )
    notes = [
        f"- command: `benchmarks/bench.py {' '.join(sys.argv[1:])}`".rstrip() + f", {time.monotonic() - started:.0f} s",
        f"- load average (1 min) at the start: {load:.2f}, at the end: {os.getloadavg()[0]:.2f}",
    ]
    write_markdown(results, args.repeat, args.out, notes)
    print("\n".join(targets(results)))


if __name__ == "__main__":
    main()
