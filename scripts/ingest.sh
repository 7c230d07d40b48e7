#!/usr/bin/env bash
# Sustained ingestion: POST /api/v1/usage with 1,000-record batches from wrk
# for DURATION seconds (default 60), then checks that every accepted record
# (a 202) was persisted - a batch the queue has no room for is refused whole
# with a 503 and counted apart - and prints accepted records/s and the
# largest queue depth seen (the flush lag, in records). Loopback only.
#   scripts/ingest.sh            (DURATION=60 CONNS=8; DELAY_MS=N paces each
#                                 connection, to hold a rate below the maximum;
#                                 FORMAT=ndjson sends the batch as NDJSON;
#                                 KEYED=1 sends each batch with an
#                                 Idempotency-Key of its own, so that every
#                                 record is claimed and written exactly once;
#                                 IDS=1 gives every record an id of its own
#                                 instead (a claim per record);
#                                 BIN=path runs that binary instead of HEAD's)
#   ENGINE=postgres scripts/ingest.sh
#       the same into PostgreSQL: a throw-away cluster on this machine
#       (Debian's postgresql, as user postgres when run as root), then the
#       baseline - the very rows Tollgate wrote, exported and COPYed back
#       (FORMAT binary) into the same table - and the ratio of the two.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-60}; CONNS=${CONNS:-8}
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)"; exit 1; }
# BIN=path runs another build (an earlier commit's, for a same-run baseline).
if [ -z "${BIN:-}" ]; then cargo build --release --quiet --bin tollgate; fi
BIN=${BIN:-target/release/tollgate}
DATA=$(mktemp -d)
chmod 755 "$DATA"
PGDIR=""
source scripts/lib/pg-cluster.sh
if [ "${ENGINE:-sled}" = postgres ]; then pg_start "$DATA/pg" 18191; fi
TOLLGATE_ADMIN_TOKEN=ingest-admin TOLLGATE_LOG=${SERVER_LOG_LEVEL:-warn} "$BIN" serve --bind 127.0.0.1:18190 --data-dir "$DATA/tg" >/dev/null 2>"${SERVER_LOG:-/dev/stderr}" &
TG=$!
trap '{ kill $TG 2>/dev/null; wait $TG 2>/dev/null; pg_stop; rm -rf "$DATA" /tmp/tollgate-ingest.lua /tmp/tollgate-ingest.wrk; } || true' EXIT
until curl -sf 127.0.0.1:18190/healthz >/dev/null; do sleep 0.1; done
. scripts/lib/bench-tenant.sh
KEY=$(ingest_key 127.0.0.1:18190 ingest-admin)
IDS=${IDS:-0} python3 scripts/lib/ingest-batch.py "$KEY" "${FORMAT:-json}" > /tmp/tollgate-ingest.lua
if [ -n "${DELAY_MS:-}" ]; then echo "function delay() return $DELAY_MS end" >> /tmp/tollgate-ingest.lua; fi
if [ "${IDS:-0}" = 1 ]; then
  cat >> /tmp/tollgate-ingest.lua <<LUA
template = wrk.body
sent = 0
request = function()
  sent = sent + 1
  return wrk.format(nil, nil, nil, (template:gsub("@@", "$RANDOM$RANDOM-" .. sent)))
end
LUA
fi
if [ "${KEYED:-0}" = 1 ]; then
  cat >> /tmp/tollgate-ingest.lua <<LUA
sent = 0
request = function()
  sent = sent + 1
  wrk.headers["Idempotency-Key"] = "bench-$RANDOM$RANDOM-" .. sent
  return wrk.format()
end
LUA
fi
( while kill -0 $TG 2>/dev/null; do curl -s 127.0.0.1:18190/healthz | sed 's/.*"queueDepth":\([0-9]*\).*/\1/'; echo; sleep 1; done ) > /tmp/tollgate-ingest.depth &
SAMPLER=$!
wrk -t1 -c"$CONNS" -d"${DURATION}s" -s /tmp/tollgate-ingest.lua http://127.0.0.1:18190/api/v1/usage > /tmp/tollgate-ingest.wrk
kill $SAMPLER 2>/dev/null || true
REQS=$(awk '/requests in/ {print $1}' /tmp/tollgate-ingest.wrk)
NON2XX=$(awk '/Non-2xx/ {print $NF}' /tmp/tollgate-ingest.wrk); NON2XX=${NON2XX:-0}
sleep 3
HEALTH=$(curl -s 127.0.0.1:18190/healthz)
TOTAL=$(curl -s -H "Authorization: Bearer $KEY" "127.0.0.1:18190/api/billing/api-usage?range=day" | python3 -c 'import json,sys; print(json.load(sys.stdin)["summary"]["totalRequests"])')
MAXQ=$(sort -n /tmp/tollgate-ingest.depth | tail -1)
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p')"
ACCEPTED=$(( (REQS - NON2XX) * 1000 ))
echo "requests $REQS of 1,000 records in ${DURATION}s, $NON2XX refused (503, nothing taken): $(( ACCEPTED / DURATION )) accepted records/s"
echo "records in the rollups after the run: $TOTAL (expected $ACCEPTED: every accepted record)"
# wrk stops counting the batches in flight when the time is up; the server
# may still have taken those (at most one per connection), so the rollups
# can hold up to CONNS x 1,000 more than wrk saw answered.
if [ "$TOTAL" -ge "$ACCEPTED" ] && [ "$TOTAL" -le $(( ACCEPTED + CONNS * 1000 )) ]; then
  echo "PASS: every acknowledged record persisted ($(( TOTAL - ACCEPTED )) more from batches in flight at the cut-off)"
else
  echo "FAIL: $(( ACCEPTED - TOTAL )) acknowledged records missing"
fi
echo "largest queue depth sampled: ${MAXQ:-0} records; health after: $HEALTH"
if [ -n "$PGDIR" ]; then
  # Month analytics of the tenant over everything it wrote (from rollup
  # cells): five answers, loopback, the median.
  for _ in 1 2 3 4 5; do
    curl -s -o /dev/null -w '%{time_total}\n' -H "Authorization: Bearer $KEY" "127.0.0.1:18190/api/billing/api-usage?range=month"
  done | sort -n | sed -n 3p | awk -v n="$TOTAL" '{ printf "month analytics of one tenant with %d records: %.1f ms (median of 5, whole request)\n", n, $1 * 1000 }'
  # The baseline: the same rows, exported and COPYed back into the same
  # table (partitions and index as Tollgate made them), timed by PostgreSQL.
  ROWS=$(psql -d tollgate -c "SELECT count(*) FROM usage_records")
  psql -d tollgate -c "COPY (SELECT day, tenant_id, ts, endpoint, method, status, response_ms, prompt_tokens, completion_tokens, tokens, model, user_id, bot_id, metadata, calls, cost_usd, rejected FROM usage_records) TO '$PGDIR/rows.bin' (FORMAT binary)"
  psql -d tollgate -c "TRUNCATE usage_records" -c "CHECKPOINT"
  START=$(date +%s.%N)
  psql -d tollgate -c "COPY usage_records (day, tenant_id, ts, endpoint, method, status, response_ms, prompt_tokens, completion_tokens, tokens, model, user_id, bot_id, metadata, calls, cost_usd, rejected) FROM '$PGDIR/rows.bin' (FORMAT binary)"
  END=$(date +%s.%N)
  COPY_RATE=$(python3 -c "print(int($ROWS / ($END - $START)))")
  echo "baseline: plain COPY (FORMAT binary) of the same $ROWS rows into the same table: $COPY_RATE rows/s"
  python3 -c "print('ratio: Tollgate sustained %.2f of the plain COPY rate' % ($(( ACCEPTED / DURATION )) / $COPY_RATE))"
fi
