#!/usr/bin/env bash
# SyncFlow's main job end to end against the demo APISmith:
# start the demo server, add a connector, discover, sync, change data at the
# source, sync again incrementally, and show the run history.
#
# Needs Python 3.11+ and a PostgreSQL server reachable through the libpq PG*
# variables (default 127.0.0.1:5432, user postgres). It creates (or recreates)
# the database syncflow_demo; nothing else is touched.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
DEMO_DB=${DEMO_DB:-syncflow_demo}

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
trap 'kill $SERVER_PID 2>/dev/null || true' EXIT
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
printf '\nDone. Database %s holds the synced tables (schema demo); config in %s.\n' "$DEMO_DB" "$SYNCFLOW_CONFIG"
