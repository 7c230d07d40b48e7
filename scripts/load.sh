#!/usr/bin/env bash
# HTTP load on the enforcement path: Tollgate's POST /api/v1/authorize (valid
# key, plan with a monthly quota and a burst limit) against a bare actix-web
# handler returning a body of the same size, same tool, same run, alternating
# A B A B; with them, the bare handler sending Tollgate's six headers fixed
# (the same bytes on the wire: what the headers cost the client and the
# kernel, apart from what Tollgate does). Prints the throughput ratios, then
# the latency of bare and Tollgate at a fixed 5,000 requests/s and the p99
# Tollgate adds. Loopback only.
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
target/release/examples/bare_actix 127.0.0.1:18182 "$(nproc)" headers &
SAME=$!
trap 'kill $TG $BARE $SAME 2>/dev/null; wait 2>/dev/null; rm -rf "$DATA" /tmp/tollgate-load.lua' EXIT
until curl -sf 127.0.0.1:18180/healthz >/dev/null; do sleep 0.1; done
. scripts/lib/bench-tenant.sh
KEY=$(bench_key 127.0.0.1:18180 load-admin)
authorize_lua "$KEY" /tmp/tollgate-load.lua
# One round against ADDR, served by PID: "req/s requests user-ticks sys-ticks"
# (the server's CPU over the round, from /proc/PID/stat).
round() {
  local a b
  a=$(awk '{print $14, $15}' "/proc/$2/stat")
  wrk -t1 -c"$CONNS" -d"${DURATION}s" -s /tmp/tollgate-load.lua "http://$1/api/v1/authorize" |
    awk -v a="$a" -v b_file="/proc/$2/stat" '/requests in/ {n=$1} /Requests\/sec/ {r=$2}
      END {getline b < b_file; split(a, x, " "); split(b, y, " "); print r, n, y[14]-x[1], y[15]-x[2]}'
}
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p')"
echo "round  bare-actix req/s  bare+headers req/s  tollgate req/s  ratio  ÷bare+headers"
BARES=(); SAMES=(); TGS=(); CPU=()
ratio() { echo "$1 / $2" | bc -l | cut -c1-5; }
for r in $(seq "$ROUNDS"); do
  read -r b bn bu bs < <(round 127.0.0.1:18181 $BARE)
  read -r h hn hu hs < <(round 127.0.0.1:18182 $SAME)
  read -r t tn tu ts < <(round 127.0.0.1:18180 $TG)
  BARES+=("$b"); SAMES+=("$h"); TGS+=("$t"); CPU+=("bare $bn $bu $bs" "bare+headers $hn $hu $hs" "tollgate $tn $tu $ts")
  echo "$r      $b         $h           $t        $(ratio "$t" "$b")  $(ratio "$t" "$h")"
done
# The server's CPU per request over all rounds (user, kernel), in µs.
printf '%s\n' "${CPU[@]}" | awk -v hz="$(getconf CLK_TCK)" '{n[$1]+=$2; u[$1]+=$3; s[$1]+=$4}
  END {printf "server CPU per request, user + kernel:"; split("bare bare+headers tollgate", k, " ");
       for (i = 1; i <= 3; i++) printf "  %s %.2f + %.2f us", k[i], u[k[i]]*1e6/hz/n[k[i]], s[k[i]]*1e6/hz/n[k[i]]; print ""}'
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
MB=$(median "${BARES[@]}"); MH=$(median "${SAMES[@]}"); MT=$(median "${TGS[@]}")
echo "median bare $MB, bare+headers $MH ($(ratio "$MH" "$MB") of bare), tollgate $MT, ratio $(ratio "$MT" "$MB") (target >= 0.7), $(ratio "$MT" "$MH") of bare+headers"
echo "fixed rate $RATE/s for ${DURATION}s:"
echo -n "bare-actix  "; target/release/examples/loadgen 127.0.0.1:18181 "$KEY" "$RATE" "$DURATION"
echo -n "tollgate    "; target/release/examples/loadgen 127.0.0.1:18180 "$KEY" "$RATE" "$DURATION"
