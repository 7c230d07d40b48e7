#!/usr/bin/env bash
# Spool catch-up after a PostgreSQL outage under load (issue 36, item 9,
# the issue's own setup): INSTANCES servers on one throw-away PostgreSQL
# (Debian's, its default durability: fsync on), one `wrk -t1 -cCONNS` on
# POST /api/v1/authorize per instance; after WARM s the database is stopped
# for OUTAGE s while the load goes on, then started again, and the load
# still goes on. Prints, per binary and round: the records the spools held
# when the database came back, the seconds until every instance's spool
# was empty (give up after LIMIT s), and that backlog over that time.
# The binaries alternate, round by round, each on a fresh cluster.
#   scripts/spool-catchup.sh [BIN...]   (default: this checkout's release
#   build; INSTANCES=3 CONNS=32 WARM=3 OUTAGE=11 LIMIT=180 ROUNDS=2)
set -euo pipefail
cd "$(dirname "$0")/.."
INSTANCES=${INSTANCES:-3}; CONNS=${CONNS:-32}; WARM=${WARM:-3}; OUTAGE=${OUTAGE:-11}
LIMIT=${LIMIT:-180}; ROUNDS=${ROUNDS:-2}
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)"; exit 1; }
if [ $# -eq 0 ]; then
  cargo build --release --quiet --bin tollgate
  set -- target/release/tollgate
fi
DATA=$(mktemp -d)
chmod 755 "$DATA"
PGDIR=""
PIDS=()
source scripts/lib/pg-cluster.sh
. scripts/lib/bench-tenant.sh
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pg_stop
}
trap '{ cleanup; rm -rf "$DATA"; } 2>/dev/null || true' EXIT
port() { echo $((18210 + $1)); }
spooled() { # the records every instance's spool holds, summed
  local n sum=0 v
  for n in $(seq "$INSTANCES"); do
    v=$(curl -sf "127.0.0.1:$(port "$n")/healthz" | sed -n 's/.*"spooledRecords":\([0-9]*\).*/\1/p')
    sum=$((sum + ${v:-0}))
  done
  echo "$sum"
}
one() {
  local bin=$1 round=$2 n key restarted held now left
  PIDS=()
  pg_start "$DATA/pg-$round-$(basename "$bin")" 18209
  for n in $(seq "$INSTANCES"); do
    TOLLGATE_ADMIN_TOKEN=load-admin TOLLGATE_LOG=error "$bin" serve --bind "127.0.0.1:$(port "$n")" \
      --data-dir "$DATA/tg-$round-$n-$(basename "$bin")" >/dev/null 2>&1 &
    PIDS+=($!)
  done
  for n in $(seq "$INSTANCES"); do until curl -sf "127.0.0.1:$(port "$n")/healthz" >/dev/null; do sleep 0.1; done; done
  key=$(bench_key "127.0.0.1:$(port 1)" load-admin)
  authorize_lua "$key" "$DATA/authorize.lua"
  sleep 1 # the other instances hear of the key
  for n in $(seq "$INSTANCES"); do
    wrk -t1 -c"$CONNS" -d"$((WARM + OUTAGE + LIMIT + 10))s" -s "$DATA/authorize.lua" \
      "http://127.0.0.1:$(port "$n")/api/v1/authorize" >/dev/null 2>&1 &
    PIDS+=($!)
  done
  sleep "$WARM"
  "${AS[@]}" "$PGBIN/pg_ctl" -D "$PGDIR/data" -m fast stop >/dev/null
  sleep "$OUTAGE"
  "${AS[@]}" "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/log" -o "-p $PGPORT -k $PGDIR -c listen_addresses=127.0.0.1 -c shared_buffers=1GB -c max_wal_size=8GB" start >/dev/null
  restarted=$(date +%s.%N)
  held=$(spooled)
  left=$held
  while [ "$left" -gt 0 ]; do
    now=$(date +%s.%N)
    if [ "$(echo "$now - $restarted > $LIMIT" | bc)" = 1 ]; then break; fi
    sleep 0.2
    left=$(spooled)
  done
  now=$(date +%s.%N)
  if [ "$left" -gt 0 ]; then
    echo "$bin round $round: $held records spooled at the restart; $left still spooled after $LIMIT s"
  else
    local took
    took=$(echo "$now - $restarted" | bc -l)
    printf '%s round %s: %s records spooled at the restart; every spool empty after %.1f s (%.0f records/s)\n' \
      "$bin" "$round" "$held" "$took" "$(echo "$held / $took" | bc -l)"
  fi
  cleanup
}
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'); $INSTANCES instances, wrk -c$CONNS each, outage $OUTAGE s"
for r in $(seq "$ROUNDS"); do
  for b in "$@"; do one "$b" "$r"; done
done
