#!/usr/bin/env bash
# POST /api/v1/authorize on two builds of Tollgate, same run, alternating
# rounds of wrk -t1 -c32: BASE (a binary built from an earlier commit) and
# this checkout's release build. For checking that a change to the request
# path costs nothing. Loopback only.
#   scripts/ab-authorize.sh BASE_BINARY      (ROUNDS=5 DURATION=6)
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${1:?give the tollgate binary built from the earlier commit}
ROUNDS=${ROUNDS:-5}; DURATION=${DURATION:-6}
cargo build --release --quiet --bin tollgate
. scripts/lib/bench-tenant.sh
DATA=$(mktemp -d)
start() { TOLLGATE_ADMIN_TOKEN=ab-admin-token-0123456789abcdef TOLLGATE_LOG=error "$1" serve --bind "127.0.0.1:$2" --data-dir "$DATA/$2" >/dev/null 2>&1 & echo $!; }
A=$(start "$BASE" 18301); B=$(start target/release/tollgate 18302)
trap 'kill $A $B 2>/dev/null; wait 2>/dev/null; rm -rf "$DATA" /tmp/ab-a.lua /tmp/ab-b.lua' EXIT
until curl -sf 127.0.0.1:18301/healthz >/dev/null && curl -sf 127.0.0.1:18302/healthz >/dev/null; do sleep 0.1; done
KA=$(bench_key 127.0.0.1:18301 ab-admin-token-0123456789abcdef); KB=$(bench_key 127.0.0.1:18302 ab-admin-token-0123456789abcdef)
lua() { printf 'wrk.method="POST"\nwrk.body=%s\nwrk.headers["Content-Type"]="application/json"\nwrk.headers["Authorization"]="Bearer %s"\n' "'{\"endpoint\":\"/v1/search\"}'" "$1" > /tmp/ab-$2.lua; }
lua $KA a; lua $KB b
for r in $(seq "$ROUNDS"); do
  a=$(wrk -t1 -c32 -d"${DURATION}s" -s /tmp/ab-a.lua http://127.0.0.1:18301/api/v1/authorize | awk '/Requests\/sec/ {print $2}')
  b=$(wrk -t1 -c32 -d"${DURATION}s" -s /tmp/ab-b.lua http://127.0.0.1:18302/api/v1/authorize | awk '/Requests\/sec/ {print $2}')
  echo "round $r base $a head $b ratio $(echo "$b / $a" | bc -l | cut -c1-5)"
done
