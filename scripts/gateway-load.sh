#!/usr/bin/env bash
# The gateway in the peers' units (issue 42, item 1): a local
# OpenAI-compatible upstream (examples/fake_llm: a fixed think time, then a
# JSON answer or a stream of CHUNKS one-token events with the usage last),
# and the same requests sent to it directly and through Tollgate's
# `[[proxy]]` (openai dialect: authenticated, enforced, forwarded, tokens
# recorded), same run, alternating. At each fixed rate (open loop, no
# coordinated omission: examples/loadgen), plain and streamed, it prints
# both latency distributions and what Tollgate adds at p50/p90/p99/p99.9;
# then the streamed tokens per second of a closed loop, through Tollgate
# against direct. Loopback only.
#   scripts/gateway-load.sh   (RATES="1000 5000" DURATION=10 CONNS=64 THINK_MS=1 CHUNKS=100 ROUNDS=1 TPUT_CONNS=16)
set -euo pipefail
cd "$(dirname "$0")/.."
RATES=${RATES:-"1000 5000"}; DURATION=${DURATION:-10}; CONNS=${CONNS:-64}
THINK_MS=${THINK_MS:-1}; CHUNKS=${CHUNKS:-100}; ROUNDS=${ROUNDS:-1}; TPUT_CONNS=${TPUT_CONNS:-16}
cargo build --release --quiet --bin tollgate --example fake_llm --example loadgen
DATA=$(mktemp -d)
cat > "$DATA/gateway.toml" <<TOML
[[proxy]]
prefix = "/v1"
upstream = "http://127.0.0.1:18190/v1"
dialect = "openai"
TOML
target/release/examples/fake_llm 127.0.0.1:18190 "$THINK_MS" "$CHUNKS" 2 &
UP=$!
TOLLGATE_ADMIN_TOKEN=load-admin TOLLGATE_LOG=warn target/release/tollgate serve \
  --config "$DATA/gateway.toml" --bind 127.0.0.1:18191 --data-dir "$DATA/data" >/dev/null &
TG=$!
trap 'kill $TG $UP 2>/dev/null; wait 2>/dev/null; rm -rf "$DATA"' EXIT
until curl -sf 127.0.0.1:18191/healthz >/dev/null; do sleep 0.1; done
. scripts/lib/bench-tenant.sh
KEY=$(bench_key 127.0.0.1:18191 load-admin)
ASK='"model":"gpt-4o-mini","messages":[{"role":"user","content":"What is six times seven?"}]'
PLAIN="{$ASK}"
STREAM="{$ASK,\"stream\":true,\"stream_options\":{\"include_usage\":true}}"
# One run: BODY ADDR RATE CONNS -> loadgen's line.
run() { LOADGEN_BODY="$1" target/release/examples/loadgen "$2" "$KEY" "$3" "$DURATION" "$4" /v1/chat/completions; }
# A figure of a loadgen line: "p99", "tokens" ... -> its number.
fig() { sed -n "s/.* $2 \([0-9.]*\).*/\1/p" <<<"$1"; }
tps() { sed -n 's/.*tokens [0-9]* (\([0-9]*\)\/s).*/\1/p' <<<"$1"; }
check() { # the same answer both ways, before anything is timed
  local d t
  d=$(curl -sf -X POST 127.0.0.1:18190/v1/chat/completions -H 'Content-Type: application/json' -d "$PLAIN")
  t=$(curl -sf -X POST 127.0.0.1:18191/v1/chat/completions -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' -d "$PLAIN")
  [ "$d" = "$t" ] || { echo "the gateway's answer differs from the upstream's:"; echo "$d"; echo "$t"; exit 1; }
}
check
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'); upstream think time ${THINK_MS} ms, ${CHUNKS} tokens a stream"
for r in $(seq "$ROUNDS"); do
  for mode in plain stream; do
    body=$PLAIN; [ $mode = stream ] && body=$STREAM
    for rate in $RATES; do
      d=$(run "$body" 127.0.0.1:18190 "$rate" "$CONNS")
      t=$(run "$body" 127.0.0.1:18191 "$rate" "$CONNS")
      echo "round $r, $mode, $rate/s"
      echo "  direct   $d"
      echo "  tollgate $t"
      printf '  added    p50 %.3f ms  p90 %.3f ms  p99 %.3f ms  p99.9 %.3f ms\n' \
        "$(echo "$(fig "$t" p50) - $(fig "$d" p50)" | bc -l)" "$(echo "$(fig "$t" p90) - $(fig "$d" p90)" | bc -l)" \
        "$(echo "$(fig "$t" p99) - $(fig "$d" p99)" | bc -l)" "$(echo "$(fig "$t" p99.9) - $(fig "$d" p99.9)" | bc -l)"
    done
  done
  # Streamed throughput, a closed loop on TPUT_CONNS connections.
  d=$(run "$STREAM" 127.0.0.1:18190 0 "$TPUT_CONNS")
  t=$(run "$STREAM" 127.0.0.1:18191 0 "$TPUT_CONNS")
  echo "round $r, streamed throughput, closed loop on $TPUT_CONNS connections"
  echo "  direct   $d"
  echo "  tollgate $t"
  echo "  tokens/s through Tollgate ÷ direct: $(echo "$(tps "$t") / $(tps "$d")" | bc -l | cut -c1-5)"
done
# Every request through Tollgate was recorded with its tokens.
sleep 2
curl -sf "127.0.0.1:18191/api/billing/usage" -H "Authorization: Bearer $KEY" |
  sed 's/.*"calls":{"used":\([0-9]*\).*"tokens":{"used":\([0-9]*\).*/recorded through Tollgate: \1 calls, \2 tokens/'
echo
