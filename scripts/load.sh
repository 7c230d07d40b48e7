#!/usr/bin/env bash
# HTTP load on the enforcement path: Tollgate's POST /api/v1/authorize (valid
# key, plan with a monthly quota and a burst limit) against a bare actix-web
# handler returning a body of the same size, same tool, same run, alternating
# A B A B. Prints the throughput ratio, then the latency of both at a fixed
# 5,000 requests/s and the p99 Tollgate adds. Loopback only.
#   scripts/load.sh            (DURATION=10 ROUNDS=3 CONNS=64 RATE=5000 TG_LOG=warn)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}; ROUNDS=${ROUNDS:-3}; CONNS=${CONNS:-64}; RATE=${RATE:-5000}
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)"; exit 1; }
cargo build --release --quiet --bin tollgate --example bare_actix --example loadgen
DATA=$(mktemp -d)
TOLLGATE_ADMIN_TOKEN=load-admin TOLLGATE_LOG=${TG_LOG:-warn} target/release/tollgate serve --bind 127.0.0.1:18180 --data-dir "$DATA" >/dev/null &
TG=$!
target/release/examples/bare_actix 127.0.0.1:18181 "$(nproc)" &
BARE=$!
trap 'kill $TG $BARE 2>/dev/null; wait 2>/dev/null; rm -rf "$DATA" /tmp/tollgate-load.lua' EXIT
until curl -sf 127.0.0.1:18180/healthz >/dev/null; do sleep 0.1; done
. scripts/lib/bench-tenant.sh
KEY=$(bench_key 127.0.0.1:18180 load-admin)
authorize_lua "$KEY" /tmp/tollgate-load.lua
rps() { wrk -t1 -c"$CONNS" -d"${DURATION}s" -s /tmp/tollgate-load.lua "http://$1/api/v1/authorize" | awk '/Requests\/sec/ {print $2}'; }
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p')"
echo "round  bare-actix req/s  tollgate req/s  ratio"
BARES=(); TGS=()
for r in $(seq "$ROUNDS"); do
  b=$(rps 127.0.0.1:18181); t=$(rps 127.0.0.1:18180)
  BARES+=("$b"); TGS+=("$t")
  echo "$r      $b         $t        $(echo "$t / $b" | bc -l | cut -c1-5)"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
MB=$(median "${BARES[@]}"); MT=$(median "${TGS[@]}")
echo "median bare $MB, tollgate $MT, ratio $(echo "$MT / $MB" | bc -l | cut -c1-5) (target >= 0.7)"
echo "fixed rate $RATE/s for ${DURATION}s:"
echo -n "bare-actix  "; target/release/examples/loadgen 127.0.0.1:18181 "$KEY" "$RATE" "$DURATION"
echo -n "tollgate    "; target/release/examples/loadgen 127.0.0.1:18180 "$KEY" "$RATE" "$DURATION"
