"""Prints the mutation score per module from mutmut's results (run from the project root after ``mutmut run``).

A mutant counts as killed when a test failed or timed out on it; "no tests"
and "survived" count against the score; "skipped" mutants are not counted.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter, defaultdict


def main() -> int:
    out = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"], capture_output=True, text=True, check=True
    ).stdout
    per: dict[str, Counter[str]] = defaultdict(Counter)
    for line in out.splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if not sep:
            continue
        module = ".".join(name.split(".")[:2])
        per[module][status] += 1
    print(f"{'module':<20} {'killed':>7} {'timeout':>7} {'survived':>8} {'no tests':>8} {'score':>6}")
    for module, c in sorted(per.items()):
        total = sum(n for s, n in c.items() if s not in ("skipped", "not checked"))
        killed = c["killed"] + c["timeout"]
        score = killed / total if total else 0.0
        print(f"{module:<20} {c['killed']:>7} {c['timeout']:>7} {c['survived']:>8} {c['no tests']:>8} {score:>6.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
