#!/usr/bin/env bash
# What persisting the authorize path's records costs the disk and the
# scheduler: one server per binary given (default: this checkout's release
# build), wrk -t1 -c64 for DURATION s on POST /api/v1/authorize, then
# req/s, the bytes the process wrote (/proc/PID/io) per record, and the
# context switches of its threads, grouped by name (sled's I/O threads,
# the flusher, the workers). ROUNDS alternate the binaries. Loopback only.
#   scripts/store-writes.sh [BIN...]   (DURATION=10 ROUNDS=1 DATA_PARENT=/tmp)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}; ROUNDS=${ROUNDS:-1}
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)"; exit 1; }
if [ $# -eq 0 ]; then
  cargo build --release --quiet --bin tollgate
  set -- target/release/tollgate
fi
. scripts/lib/bench-tenant.sh
one() {
  local bin=$1 data tg key w0 w1 rps
  data=$(mktemp -d -p "${DATA_PARENT:-/tmp}")
  TOLLGATE_ADMIN_TOKEN=load-admin TOLLGATE_LOG=warn "$bin" serve --bind 127.0.0.1:18180 --data-dir "$data" >/dev/null 2>&1 &
  tg=$!
  until curl -sf 127.0.0.1:18180/healthz >/dev/null; do sleep 0.1; done
  key=$(bench_key 127.0.0.1:18180 load-admin)
  authorize_lua "$key" /tmp/tollgate-writes.lua
  w0=$(awk '/^write_bytes/ {print $2}' /proc/$tg/io)
  rps=$(wrk -t1 -c64 -d"${DURATION}s" -s /tmp/tollgate-writes.lua http://127.0.0.1:18180/api/v1/authorize | awk '/Requests\/sec/ {print $2}')
  sleep 0.5
  w1=$(awk '/^write_bytes/ {print $2}' /proc/$tg/io)
  echo "$bin: $rps req/s, $(( (w1 - w0) / 1000000 )) MB written, $(echo "($w1 - $w0) / ($rps * $DURATION)" | bc) B/record"
  for t in /proc/$tg/task/*; do
    printf '%s %s\n' "$(tr ' ' _ < "$t/comm" | sed 's/-[0-9]*$//')" \
      "$(awk '/^voluntary_ctxt/ {v=$2} /^nonvoluntary_ctxt/ {n=$2} END {print v + n}' "$t/status")"
  done | awk '{c[$1] += $2} END {for (k in c) print "  " k, c[k]}' | sort -k2 -rn | head -5 | sed 's/$/ context switches/'
  kill $tg; wait $tg 2>/dev/null || true
  rm -rf "$data"
}
trap 'rm -f /tmp/tollgate-writes.lua' EXIT
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p')"
for r in $(seq "$ROUNDS"); do
  for b in "$@"; do one "$b"; done
done
