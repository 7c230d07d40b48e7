#!/usr/bin/env bash
# Writes a small data directory with a given Tollgate binary, for the tests
# that check a newer build opens what an older one wrote (the store format
# changes over time; tests/store_fixture.rs reads the result).
#   scripts/make-store-fixture.sh BINARY OUT_DIR
# The committed tests/fixtures/format1 was written on 2026-12-01 by the
# release of commit da0a9ab (store format 1), built with
# `cargo build --release --bin tollgate` in a worktree of that commit;
# tests/fixtures/format2 by commit b615c63 (store format 2, the last
# before rows of the store's own), which also wrote the suspended tenant
# `paused-co` and the revoked key `old` of other-co.
# Timestamps are fixed (2026-12-01T08:00Z onwards), so they must be within
# 7 days of the day it runs: the figures the test expects are listed there.
set -euo pipefail
BIN=$1; OUT=$2
[ ! -e "$OUT" ] || { echo "$OUT exists"; exit 1; }
PORT=18199
TOLLGATE_ADMIN_TOKEN=fixture-admin TOLLGATE_LOG=warn "$BIN" serve --bind 127.0.0.1:$PORT --data-dir "$OUT" >/dev/null 2>&1 &
TG=$!
trap 'kill $TG 2>/dev/null || true' EXIT
until curl -sf 127.0.0.1:$PORT/healthz >/dev/null; do sleep 0.1; done
admin() { curl -sf -H "Authorization: Bearer fixture-admin" -H 'Content-Type: application/json' "$@"; }
admin -X POST 127.0.0.1:$PORT/api/admin/plans -d '{"id":"fixture","name":"Fixture","monthlyCalls":1000,"monthlyTokens":100000,"rateLimit":{"requests":50,"perSeconds":1,"burst":100},"priceUsdMonthly":12.5}' >/dev/null
for t in fixture-co other-co; do
  admin -X POST 127.0.0.1:$PORT/api/admin/tenants -d "{\"id\":\"$t\",\"name\":\"$t\",\"planId\":\"fixture\"}" >/dev/null
  admin -X POST 127.0.0.1:$PORT/api/admin/tenants/$t/keys -d '{"name":"main"}' | sed 's/.*"key":"\([^"]*\)".*/\1/' > "$OUT/../$t.key"
done
KEY=$(cat "$OUT/../fixture-co.key"); OTHER=$(cat "$OUT/../other-co.key")
python3 - > /tmp/fixture-batch.json <<'PY'
import json
recs = [{"timestamp": "2026-12-01T08:%02d:00.000Z" % i, "endpoint": "/v1/chat", "method": "POST",
         "statusCode": 500 if i % 10 == 9 else 200, "responseTime": 100 + i, "promptTokens": 10,
         "completionTokens": 5, "model": "gpt-4o", "userId": "u%d" % (i % 5), "botId": "b1",
         "metadata": {"run": "fixture", "n": i}, "calls": 1} for i in range(50)]
print(json.dumps(recs))
PY
curl -sf -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' -d @/tmp/fixture-batch.json 127.0.0.1:$PORT/api/v1/usage >/dev/null
curl -sf -H "Authorization: Bearer $OTHER" -H 'Content-Type: application/json' \
  -d '[{"timestamp":"2026-12-01T08:30:00.000Z","endpoint":"/other","tokensUsed":7},{"timestamp":"2026-12-01T08:31:00.000Z","endpoint":"/other","tokensUsed":7}]' \
  127.0.0.1:$PORT/api/v1/usage >/dev/null
# A suspended tenant and a revoked key (format 2 onwards: the upgrade to
# format 3 rewrites both).
admin -X POST 127.0.0.1:$PORT/api/admin/tenants -d '{"id":"paused-co","name":"Paused Co","planId":"fixture"}' >/dev/null
admin -X PATCH 127.0.0.1:$PORT/api/admin/tenants/paused-co -d '{"status":"suspended"}' >/dev/null
OLD=$(admin -X POST 127.0.0.1:$PORT/api/admin/tenants/other-co/keys -d '{"name":"old"}' | sed 's/.*"id":"\([^"]*\)".*/\1/')
admin -X DELETE 127.0.0.1:$PORT/api/admin/tenants/other-co/keys/$OLD >/dev/null
sleep 3   # past a checkpoint: some rollups stored, the graceful stop writes the rest
kill -TERM $TG; wait $TG || true
trap - EXIT
rm -f /tmp/fixture-batch.json
echo "written: $OUT (keys beside it: fixture-co.key, other-co.key)"
