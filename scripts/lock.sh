#!/usr/bin/env bash
# Regenerates the hashed lock files the Dockerfile installs from:
#   requirements.lock        SyncFlow's runtime dependencies (from pyproject.toml)
#   requirements-build.lock  pip, build, setuptools and wheel (from requirements-build.in)
# uv runs from a scratch virtual environment, so nothing is added to .venv. Commit both files.
set -euo pipefail
cd "$(dirname "$0")/.."
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
"${PYTHON:-python3}" -m venv "$SCRATCH/venv"
"$SCRATCH/venv/bin/python" -m pip install --quiet uv
UV="$SCRATCH/venv/bin/uv"
"$UV" pip compile pyproject.toml --generate-hashes --universal --python-version 3.11 \
  --custom-compile-command "bash scripts/lock.sh" -o requirements.lock
"$UV" pip compile requirements-build.in --generate-hashes --universal --python-version 3.11 \
  --custom-compile-command "bash scripts/lock.sh" -o requirements-build.lock
