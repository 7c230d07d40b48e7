#!/usr/bin/env bash
# Decisions over gRPC against the JSON API, same tool, same run: Envoy's
# ShouldRateLimit and ext_authz Check on Tollgate's gRPC listener, and
# POST /api/v1/authorize over HTTP/1.1, each closed-loop from one thread of
# examples/grpc_loadgen at CONC calls in flight, alternating rounds. wrk's
# figure for the JSON path is printed as a reference (a leaner client).
# Client and server share the machine, and tonic's client costs more CPU a
# call than a raw HTTP/1.1 one, so the server's own CPU per call (from
# /proc, over each run) is printed too: it is what bounds a server's rate.
# Prints the medians and the gRPC/JSON ratios. Loopback only.
#   scripts/grpc-load.sh       (DURATION=10 ROUNDS=3 CONC=64 CONNS=2)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10}; ROUNDS=${ROUNDS:-3}; CONC=${CONC:-64}; CONNS=${CONNS:-2}
cargo build --release --quiet --bin tollgate --example grpc_loadgen
DATA=$(mktemp -d)
TOLLGATE_ADMIN_TOKEN=grpc-load-admin-0123456789abcdef TOLLGATE_LOG=warn TOLLGATE_GRPC_BIND=127.0.0.1:18191 \
  target/release/tollgate serve --bind 127.0.0.1:18190 --data-dir "$DATA" >/dev/null &
TG=$!
trap 'kill $TG 2>/dev/null; wait 2>/dev/null; rm -rf "$DATA" /tmp/tollgate-grpc-load.lua' EXIT
until curl -sf 127.0.0.1:18190/healthz >/dev/null; do sleep 0.1; done
. scripts/lib/bench-tenant.sh
KEY=$(bench_key 127.0.0.1:18190 grpc-load-admin-0123456789abcdef)
TICK=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' /proc/$TG/stat; }
# One run: "calls/s server-us-per-call  (the tool's line)".
gen() {
  local before after out
  before=$(ticks)
  out=$(target/release/examples/grpc_loadgen "$1" "$2" "$KEY" "$DURATION" "$CONC" "$CONNS")
  after=$(ticks)
  awk -v o="$out" -v t=$((after - before)) -v hz="$TICK" -v d="$DURATION" \
    'BEGIN { split(o, f, " "); printf "%s %.1f  (%s)\n", f[1], t * 1e6 / hz / (f[1] * d), o }'
}
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'); $CONC in flight, $CONNS HTTP/2 connections"
echo "each line: calls/s, the server's CPU per call in microseconds, the tool's figures"
HTTP=(); RLS=(); AUTHZ=(); HC=(); LC=(); AC=()
for r in $(seq "$ROUNDS"); do
  h=$(gen http 127.0.0.1:18190); l=$(gen rls 127.0.0.1:18191); a=$(gen authz 127.0.0.1:18191)
  echo "round $r  json:  $h"; echo "         rls:   $l"; echo "         authz: $a"
  HTTP+=("${h%% *}"); RLS+=("${l%% *}"); AUTHZ+=("${a%% *}")
  HC+=("$(cut -d' ' -f2 <<< "$h")"); LC+=("$(cut -d' ' -f2 <<< "$l")"); AC+=("$(cut -d' ' -f2 <<< "$a")")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { echo "$1 / $2" | bc -l | cut -c1-5; }
MH=$(median "${HTTP[@]}"); ML=$(median "${RLS[@]}"); MA=$(median "${AUTHZ[@]}")
CH=$(median "${HC[@]}"); CL=$(median "${LC[@]}"); CA=$(median "${AC[@]}")
echo "median calls/s: json $MH, rls $ML (x$(ratio "$ML" "$MH")), authz $MA (x$(ratio "$MA" "$MH"))"
echo "median server CPU per call (us): json $CH, rls $CL, authz $CA"
echo "server calls per CPU-second, gRPC / JSON: rls x$(ratio "$CH" "$CL"), authz x$(ratio "$CH" "$CA") (target >= 1)"
if command -v wrk >/dev/null; then
  authorize_lua "$KEY" /tmp/tollgate-grpc-load.lua
  echo "reference: wrk -t1 -c$CONC on the JSON path: $(wrk -t1 -c"$CONC" -d"${DURATION}s" -s /tmp/tollgate-grpc-load.lua http://127.0.0.1:18190/api/v1/authorize | awk '/Requests\/sec/ {print $2}') req/s"
fi
