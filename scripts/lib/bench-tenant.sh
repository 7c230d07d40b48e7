# Sourced by the load and ingestion scripts: bench_key ADDR TOKEN prints a
# fresh key of tenant "bench", made on the running server at ADDR with the
# admin TOKEN, on a plan no benchmark reaches (a huge quota and burst), so
# that every decision is allowed and recorded.
bench_key() {
  local admin=(curl -sf -H "Authorization: Bearer $2" -H 'Content-Type: application/json')
  "${admin[@]}" -X POST "$1/api/admin/plans" -d '{"id":"bench","name":"Bench","monthlyCalls":100000000000000,"rateLimit":{"requests":1000000000,"perSeconds":1,"burst":1000000000}}' >/dev/null
  "${admin[@]}" -X POST "$1/api/admin/tenants" -d '{"id":"bench","planId":"bench"}' >/dev/null
  "${admin[@]}" -X POST "$1/api/admin/tenants/bench/keys" | sed 's/.*"key":"\([^"]*\)".*/\1/'
}

# ingest_key ADDR TOKEN prints a fresh key of tenant "ingest" on the
# enterprise plan, for the ingestion scripts (scripts/ingest.sh,
# scripts/profile-ingest.sh).
ingest_key() {
  local admin=(curl -sf -H "Authorization: Bearer $2" -H 'Content-Type: application/json')
  "${admin[@]}" -X POST "$1/api/admin/tenants" -d '{"id":"ingest","planId":"enterprise"}' >/dev/null
  "${admin[@]}" -X POST "$1/api/admin/tenants/ingest/keys" | sed 's/.*"key":"\([^"]*\)".*/\1/'
}

# authorize_lua KEY FILE writes the wrk script every authorize benchmark
# sends: POST /api/v1/authorize with a small JSON body under KEY.
authorize_lua() {
  cat > "$2" <<LUA
wrk.method = "POST"
wrk.body = '{"endpoint":"/v1/search"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $1"
LUA
}
