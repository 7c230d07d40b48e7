#!/usr/bin/env bash
# POST /api/v1/authorize on one instance whose quotas are shared through a
# real Redis ([cluster] redis_url) against the same instance without it, same
# tool, same run, alternating A B A B; then the Redis round trips the shared
# one made per 1,000 decisions (its /metrics). A tenant far from its limit
# (scripts/lib/bench-tenant.sh), so this is the lease path. Loopback only.
#   scripts/cluster-load.sh   (DURATION=10 ROUNDS=3 CONNS=32)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}; ROUNDS=${ROUNDS:-3}; CONNS=${CONNS:-32}
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)"; exit 1; }
command -v redis-server >/dev/null || { echo "needs redis-server (apt-get install redis-server)"; exit 1; }
cargo build --release --quiet --bin tollgate
TMP=$(mktemp -d)
redis-server --port 18199 --bind 127.0.0.1 --save "" --appendonly no --dir "$TMP" >/dev/null &
REDIS=$!
mkdir -p "$TMP/local" "$TMP/shared"
TOLLGATE_ADMIN_TOKEN=load-admin TOLLGATE_LOG=warn target/release/tollgate serve --bind 127.0.0.1:18190 --data-dir "$TMP/local" >/dev/null &
LOCAL=$!
TOLLGATE_ADMIN_TOKEN=load-admin TOLLGATE_LOG=warn TOLLGATE_CLUSTER_REDIS_URL=redis://127.0.0.1:18199/0 \
  target/release/tollgate serve --bind 127.0.0.1:18191 --data-dir "$TMP/shared" >/dev/null &
SHARED=$!
trap 'kill $LOCAL $SHARED 2>/dev/null; wait $LOCAL $SHARED 2>/dev/null; kill $REDIS 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"' EXIT
for p in 18190 18191; do until curl -sf 127.0.0.1:$p/healthz >/dev/null; do sleep 0.1; done; done
. scripts/lib/bench-tenant.sh
KL=$(bench_key 127.0.0.1:18190 load-admin); KS=$(bench_key 127.0.0.1:18191 load-admin)
lua() { authorize_lua "$2" "$TMP/$1.lua"; }
lua local "$KL"; lua shared "$KS"
rps() { wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$TMP/$2.lua" "http://127.0.0.1:$1/api/v1/authorize" | awk '/Requests\/sec/ {print $2}'; }
metric() { curl -sf 127.0.0.1:18191/metrics | awk -v m="$1" '$1 == m {print $2}'; }
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'); redis $(redis-server --version | awk '{print $3}')"
echo "round  local req/s  shared (redis) req/s  ratio"
LS=(); SS=()
for r in $(seq "$ROUNDS"); do
  a=$(rps 18190 local); b=$(rps 18191 shared)
  LS+=("$a"); SS+=("$b")
  echo "$r      $a      $b      $(echo "$b / $a" | bc -l | cut -c1-5)"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ML=$(median "${LS[@]}"); MS=$(median "${SS[@]}")
echo "median local $ML, shared $MS, ratio $(echo "$MS / $ML" | bc -l | cut -c1-5) (target >= 0.9)"
TRIPS=$(metric tollgate_cluster_redis_round_trips_total)
ALLOWED=$(curl -sf 127.0.0.1:18191/metrics | awk '$1 ~ /^tollgate_decisions_total/ && /outcome="allowed"/ {print $2}')
echo "redis round trips $TRIPS for $ALLOWED decisions: $(echo "1000 * $TRIPS / $ALLOWED" | bc -l | cut -c1-6) per 1,000 (aim <= 10)"
