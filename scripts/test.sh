#!/usr/bin/env bash
# Runs SyncFlow's test suite: creates .venv if needed, installs the package with
# its test and lint tools, then runs ruff, mypy and pytest against the local
# PostgreSQL (libpq PG* variables; default 127.0.0.1:5432, user postgres).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
export PGHOST=${PGHOST:-127.0.0.1} PGPORT=${PGPORT:-5432} PGUSER=${PGUSER:-postgres}
.venv/bin/ruff check src tests examples noxfile.py
.venv/bin/ruff format --check src tests examples noxfile.py
.venv/bin/mypy src
exec .venv/bin/pytest "$@"
