#!/usr/bin/env bash
# Runs SyncFlow's test suite: creates .venv if needed, installs the package with
# its test and lint tools, then runs ruff, mypy and pytest against the local
# PostgreSQL (libpq PG* variables; default 127.0.0.1:5432, user postgres).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh dev
.venv/bin/ruff check src tests examples benchmarks noxfile.py
.venv/bin/ruff format --check src tests examples benchmarks noxfile.py
.venv/bin/mypy src tests
exec .venv/bin/pytest "$@"
