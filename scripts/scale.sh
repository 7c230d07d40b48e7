#!/usr/bin/env bash
# Scale (SPEC §9): restart time with TENANTS tenants and RECORDS records, and
# the RSS of a server holding them. Builds the data once with examples/scale.
#   scripts/scale.sh [TENANTS=100000] [RECORDS=10000000]
#   ENGINE=postgres scripts/scale.sh ...   the same on a throw-away PostgreSQL
set -euo pipefail
cd "$(dirname "$0")/.."
TENANTS=${1:-100000}; RECORDS=${2:-10000000}
cargo build --release --quiet --bin tollgate --example scale
DATA=$(mktemp -d)
chmod 755 "$DATA"
PGDIR=""
source scripts/lib/pg-cluster.sh
TG=""
trap '{ [ -n "$TG" ] && kill $TG 2>/dev/null; wait; pg_stop; rm -rf "$DATA"; } || true' EXIT
if [ "${ENGINE:-sled}" = postgres ]; then pg_start "$DATA/pg" 18196; fi
KEY=$(target/release/examples/scale "$DATA/tg" "$TENANTS" "$RECORDS")
echo "data on disk: $(du -sh "$DATA" | cut -f1)"
for run in 1 2 3; do
  START=$(date +%s.%N)
  TOLLGATE_ADMIN_TOKEN=scale-admin TOLLGATE_LOG=warn target/release/tollgate serve --bind 127.0.0.1:18195 --data-dir "$DATA/tg" >/dev/null &
  TG=$!
  until curl -sf 127.0.0.1:18195/healthz >/dev/null 2>&1; do sleep 0.01; done
  END=$(date +%s.%N)
  curl -sf -X POST -H "Authorization: Bearer $KEY" 127.0.0.1:18195/api/v1/authorize >/dev/null
  sleep 1
  echo "run $run: serving after $(echo "$END - $START" | bc) s; RSS $(awk '/VmRSS/ {printf "%.1f MiB", $2/1024}' /proc/$TG/status)"
  kill -TERM $TG; wait $TG || true
done
