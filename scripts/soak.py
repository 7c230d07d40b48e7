#!/usr/bin/env python3
"""Soak: mixed load against a release Tollgate for DURATION seconds (default
600), sampling the server's RSS and open files every 10 s. Exits 1 if either
grows more than 25 % (RSS) or by more than 16 (files) between the first
sample after warm-up and the last. Loopback only; bounded in time.

    cargo build --release && python3 scripts/soak.py [DURATION]

SOAK_BIN picks the binary and SOAK_CMD a tool to run it under (heaptrack).
SOAK_MIX=reads runs a mix that stores nothing (check, billing and analytics
reads, health, metrics, unknown keys): RSS then shows what the request path
itself keeps, apart from the data the default mix writes.
"""
import http.client, json, os, random, subprocess, sys, tempfile, threading, time

DURATION = int(sys.argv[1]) if len(sys.argv) > 1 else 600
READS_ONLY = os.environ.get("SOAK_MIX") == "reads"
ADMIN = "soak-admin-token"
data = tempfile.mkdtemp(prefix="tollgate-soak-")
env = dict(os.environ, TOLLGATE_ADMIN_TOKEN=ADMIN, TOLLGATE_LOG="warn")
# SOAK_CMD runs the server under a tool, e.g. "heaptrack -o /tmp/soak" (with
# a build that has symbols, SOAK_BIN=target/prof/release/tollgate).
cmd = os.environ.get("SOAK_CMD", "").split() + [os.environ.get("SOAK_BIN", "target/release/tollgate")]
srv = subprocess.Popen(cmd + ["serve", "--bind", "127.0.0.1:0", "--data-dir", data],
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
port = None
for line in srv.stdout:
    if line.startswith("Tollgate listening on "):
        port = int(line.rsplit(":", 1)[1])
        break
threading.Thread(target=lambda: [None for _ in srv.stdout], daemon=True).start()

def call(conn, method, path, body=None, key=ADMIN):
    headers = {"Authorization": "Bearer " + key}
    if body is not None:
        headers["Content-Type"] = "application/json"
        body = json.dumps(body)
    conn.request(method, path, body=body, headers=headers)
    r = conn.getresponse()
    return r.status, r.read()

c = http.client.HTTPConnection("127.0.0.1", port)
keys = []
for i in range(20):
    call(c, "POST", "/api/admin/tenants", {"id": f"soak-{i}", "planId": "enterprise"})
    keys.append(json.loads(call(c, "POST", f"/api/admin/tenants/soak-{i}/keys", {})[1])["key"])

stop = time.time() + DURATION
counts = {"requests": 0, "errors": 0}
lock = threading.Lock()

def worker(seed):
    rnd = random.Random(seed)
    conn = http.client.HTTPConnection("127.0.0.1", port)
    while time.time() < stop:
        key = rnd.choice(keys)
        roll = rnd.random()
        try:
            if READS_ONLY:
                if roll < 0.5:
                    st, _ = call(conn, "POST", "/api/v1/check", {"endpoint": "/soak", "userId": f"u{rnd.randrange(500)}"}, key)
                elif roll < 0.7:
                    st, _ = call(conn, "GET", "/api/billing/usage", None, key)
                elif roll < 0.8:
                    st, _ = call(conn, "POST", "/api/v1/authorize", {}, "tg_" + "x" * 32)
                elif roll < 0.9:
                    st, _ = call(conn, "GET", "/healthz", None, key)
                elif roll < 0.98:
                    st, _ = call(conn, "GET", "/api/billing/api-usage?range=day", None, key)
                else:
                    st, _ = call(conn, "GET", "/metrics", None, key)
            elif roll < 0.6:
                st, _ = call(conn, "POST", "/api/v1/authorize", {"endpoint": "/soak", "userId": f"u{rnd.randrange(500)}"}, key)
            elif roll < 0.9:
                batch = [{"endpoint": "/soak/ingest", "promptTokens": rnd.randrange(900), "completionTokens": rnd.randrange(300),
                          "model": "gpt-4o-mini", "userId": f"u{rnd.randrange(500)}", "botId": f"b{rnd.randrange(8)}"} for _ in range(20)]
                st, _ = call(conn, "POST", "/api/v1/usage", batch, key)
            elif roll < 0.98:
                st, _ = call(conn, "GET", "/api/billing/api-usage?range=day", None, key)
            else:
                st, _ = call(conn, "GET", "/api/billing/api-usage/export?format=csv&from=" + time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime()), None, key)
            with lock:
                counts["requests"] += 1
                counts["errors"] += st >= 500
        except Exception:
            conn = http.client.HTTPConnection("127.0.0.1", port)

def sample():
    rss = int(open(f"/proc/{srv.pid}/status").read().split("VmRSS:")[1].split()[0])
    files = len(os.listdir(f"/proc/{srv.pid}/fd"))
    return rss, files

threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
for t in threads:
    t.start()
samples = []
start = time.time()
print(f"{'t (s)':>6} {'RSS (MiB)':>10} {'files':>6} {'requests':>10}")
while time.time() < stop:
    time.sleep(10)
    rss, files = sample()
    samples.append((time.time() - start, rss, files))
    print(f"{samples[-1][0]:6.0f} {rss / 1024:10.1f} {files:6d} {counts['requests']:10d}", flush=True)
for t in threads:
    t.join()
srv.terminate()
srv.wait(timeout=30)
warm = samples[min(3, len(samples) - 1)]
last = samples[-1]
print(f"requests {counts['requests']}, 5xx {counts['errors']}; RSS {warm[1]/1024:.1f} -> {last[1]/1024:.1f} MiB after warm-up; files {warm[2]} -> {last[2]}")
ok = counts["errors"] == 0 and last[1] <= warm[1] * 1.25 and last[2] <= warm[2] + 16
print("flat" if ok else "GREW")
sys.exit(0 if ok else 1)
