#!/usr/bin/env bash
# Where flat-out ingestion's CPU goes, by thread: HTTP workers (reading and
# parsing the batches), the flusher (rollups, sled), sled's own threads.
# wrk -t1 -c8 posts 1,000-record batches (as scripts/ingest.sh) for 14 s;
# perf record samples the server for 10 s; the report groups the samples
# by thread name, so the stripped release build is enough.
#   scripts/profile-ingest.sh      (needs perf and wrk; loopback only;
#                                   FORMAT=ndjson, BIN=path as ingest.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${BIN:-}" ]; then cargo build --release --quiet --bin tollgate; fi
BIN=${BIN:-target/release/tollgate}
DATA=$(mktemp -d)
TOLLGATE_ADMIN_TOKEN=ingest-admin TOLLGATE_LOG=warn "$BIN" serve --bind 127.0.0.1:18195 --data-dir "$DATA" >/dev/null 2>&1 &
TG=$!
trap 'kill $TG 2>/dev/null; wait $TG 2>/dev/null; rm -rf "$DATA" /tmp/pi.lua' EXIT
until curl -sf 127.0.0.1:18195/healthz >/dev/null; do sleep 0.1; done
. scripts/lib/bench-tenant.sh
KEY=$(ingest_key 127.0.0.1:18195 ingest-admin)
python3 scripts/lib/ingest-batch.py "$KEY" "${FORMAT:-json}" > /tmp/pi.lua
wrk -t1 -c8 -d14s -s /tmp/pi.lua http://127.0.0.1:18195/api/v1/usage > /tmp/pi-wrk.txt &
WRK=$!
sleep 2
perf record -F 999 -p $TG -o /tmp/perf-ingest.data -- sleep 10 >/dev/null 2>&1
wait $WRK
grep -E "Requests/sec|Non-2xx" /tmp/pi-wrk.txt || true
perf report -i /tmp/perf-ingest.data --sort comm --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -12
