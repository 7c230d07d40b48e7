# The wrk script of the ingestion benchmarks (scripts/ingest.sh,
# scripts/profile-ingest.sh): POST a 1,000-record batch, as a JSON array or
# as NDJSON.   python3 scripts/lib/ingest-batch.py KEY json|ndjson > x.lua
import json, os, sys
recs = [{"endpoint": "/api/chat", "method": "POST", "statusCode": 200 if i % 50 else 500, "responseTime": 100 + i % 900,
         "promptTokens": i % 700, "completionTokens": i % 300, "model": ["gpt-4o-mini", "gpt-4o"][i % 2],
         "userId": f"user-{i % 200}", "botId": f"bot-{i % 5}", "calls": 0} for i in range(1000)]
# IDS=1: every record gets an id; "@@" is replaced per request by the wrk
# script, so that each request's ids are new.
if os.environ.get("IDS") == "1":
    for i, r in enumerate(recs):
        r["id"] = f"@@-{i}"
ndjson = sys.argv[2] == "ndjson"
body = "\n".join(json.dumps(r) for r in recs) if ndjson else json.dumps(recs)
body = body.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
print("wrk.method = 'POST'")
print("wrk.body = '" + body + "'")
print("wrk.headers['Content-Type'] = '" + ("application/x-ndjson" if ndjson else "application/json") + "'")
print("wrk.headers['Authorization'] = 'Bearer " + sys.argv[1] + "'")
