#!/usr/bin/env bash
# What Tollgate as nginx's auth service adds to a request: open-loop load
# (examples/loadgen, RATE requests/s for DURATION seconds) through nginx with the
# tested recipe (docs/integrations/nginx.conf) and through the same nginx
# proxying straight to the same upstream (an nginx `return 200`), twice
# each, alternating; prints the latency percentiles of each run.
#   scripts/forward-auth-latency.sh      (RATE=2000 DURATION=20 CONNS=16)
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-2000}; DURATION=${DURATION:-20}; CONNS=${CONNS:-16}
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { echo "needs nginx (apt-get install nginx)"; exit 1; }
cargo build --release --quiet --bin tollgate --example loadgen
DATA=$(mktemp -d)
TG=""; NG=""
trap '{ [ -n "$TG" ] && kill $TG; [ -n "$NG" ] && kill $NG; wait; rm -rf "$DATA"; } 2>/dev/null || true' EXIT
TOLLGATE_ADMIN_TOKEN=latency-admin-token-0123456789 TOLLGATE_LOG=warn target/release/tollgate serve --bind 127.0.0.1:18200 --data-dir "$DATA/tg" >/dev/null &
TG=$!
until curl -sf 127.0.0.1:18200/healthz >/dev/null; do sleep 0.1; done
admin() { curl -sf -H "Authorization: Bearer latency-admin-token-0123456789" -H 'Content-Type: application/json' "$@"; }
admin -X POST 127.0.0.1:18200/api/admin/tenants -d '{"id":"edge","planId":"enterprise"}' >/dev/null
KEY=$(admin -X POST 127.0.0.1:18200/api/admin/tenants/edge/keys | sed 's/.*"key":"\([^"]*\)".*/\1/')
mkdir -p "$DATA/ng"
# The recipe as it is, plus an upstream and a plain proxy in the same nginx.
sed -e "s|{{LISTEN}}|127.0.0.1:18201|; s|{{TOLLGATE}}|127.0.0.1:18200|; s|{{UPSTREAM}}|127.0.0.1:18202|; s|{{DIR}}|$DATA/ng|g" \
  docs/integrations/nginx.conf | sed '$d' > "$DATA/ng/nginx.conf"
cat >> "$DATA/ng/nginx.conf" <<CONF
    keepalive_requests 10000000;   # loadgen keeps each connection for the whole run
    server { listen 127.0.0.1:18202; location / { return 200 "ok\n"; } }
    server { listen 127.0.0.1:18203; location / { proxy_http_version 1.1; proxy_set_header Connection ""; proxy_pass http://api; } }
}
CONF
nginx -p "$DATA/ng" -e "$DATA/ng/error.log" -c "$DATA/ng/nginx.conf" &
NG=$!
until curl -sf 127.0.0.1:18203/ >/dev/null; do sleep 0.1; done
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p')"
for run in 1 2; do
  echo "run $run, nginx alone:     $(target/release/examples/loadgen 127.0.0.1:18203 "$KEY" "$RATE" "$DURATION" "$CONNS" /v1/search)"
  echo "run $run, nginx + Tollgate: $(target/release/examples/loadgen 127.0.0.1:18201 "$KEY" "$RATE" "$DURATION" "$CONNS" /v1/search)"
done
