#!/usr/bin/env bash
# Profiles the POST /api/v1/authorize HTTP path: a release build with symbols
# (target/prof), wrk -t1 -c64 for 14 s, perf record -g on the server for 10 s.
# Then: perf report -i /tmp/perf.data --no-children --sort dso,symbol
#   scripts/profile-http.sh        (needs perf and wrk; loopback only)
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_PROFILE_RELEASE_STRIP=false CARGO_PROFILE_RELEASE_DEBUG=1 cargo build --release --quiet --bin tollgate --target-dir target/prof
BIN=target/prof/release/tollgate
DATA=$(mktemp -d)
TOLLGATE_ADMIN_TOKEN=load-admin TOLLGATE_LOG=warn $BIN serve --bind 127.0.0.1:18180 --data-dir "$DATA" >/dev/null 2>&1 &
TG=$!
until curl -sf 127.0.0.1:18180/healthz >/dev/null; do sleep 0.1; done
. scripts/lib/bench-tenant.sh
KEY=$(bench_key 127.0.0.1:18180 load-admin)
authorize_lua "$KEY" /tmp/p.lua
wrk -t1 -c64 -d14s -s /tmp/p.lua http://127.0.0.1:18180/api/v1/authorize > /tmp/wrk.txt &
sleep 2
perf record -F 1999 -g -p $TG -o /tmp/perf.data -- sleep 10 >/dev/null 2>&1
sleep 3
kill $TG; wait $TG 2>/dev/null; rm -rf "$DATA"
grep Requests /tmp/wrk.txt
