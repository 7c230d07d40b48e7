// The client against a real Tollgate: the binary in TOLLGATE_BIN (set by
// tests/typescript_client.rs; `cargo build` puts it in target/debug),
// started on 127.0.0.1:0 with a temporary data directory.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import expressApp from "express";
import { createServer } from "node:net";
import { Tollgate, TollgateError, express, withTollgate, nextMiddleware } from "../dist/esm/index.js";

const ADMIN = "typescript-client-admin-token-0123456789";
let server;
let base;
let dir;

async function admin(method, path, body) {
  const res = await fetch(base + path, {
    method,
    headers: { authorization: `Bearer ${ADMIN}`, "content-type": "application/json" },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  assert.ok(res.status < 300, `${method} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** A tenant on a plan of `calls` a month; its key. */
async function tenant(id, calls) {
  await admin("POST", "/api/admin/plans", { id: `p-${id}`, name: id, monthlyCalls: calls });
  await admin("POST", "/api/admin/tenants", { id, planId: `p-${id}` });
  return (await admin("POST", `/api/admin/tenants/${id}/keys`, {})).key;
}

async function until(f, what) {
  const deadline = Date.now() + 10_000;
  while (!(await f())) {
    assert.ok(Date.now() < deadline, `never: ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function requests(tg) {
  const r = await tg.apiUsage({ range: "day" });
  return r.summary.totalRequests;
}

before(async () => {
  const bin = process.env.TOLLGATE_BIN;
  assert.ok(bin, "set TOLLGATE_BIN to the tollgate binary (tests/typescript_client.rs does)");
  dir = mkdtempSync(join(tmpdir(), "tollgate-ts-"));
  server = spawn(bin, ["serve", "--bind", "127.0.0.1:0", "--data-dir", dir], {
    env: { ...process.env, TOLLGATE_ADMIN_TOKEN: ADMIN, TOLLGATE_FLUSH_INTERVAL_MS: "20", TOLLGATE_LOG: "warn" },
    stdio: ["ignore", "pipe", "inherit"],
  });
  base = await new Promise((resolve, reject) => {
    let seen = "";
    server.stdout.on("data", (d) => {
      seen += d;
      const m = seen.match(/Tollgate listening on (http:\/\/\S+)/);
      if (m) resolve(m[1]);
    });
    server.once("exit", (code) => reject(new Error(`tollgate exited (${code}): ${seen}`)));
  });
  server.stdout.resume();
});

after(() => {
  server?.kill("SIGTERM");
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test("checks, authorizes and refuses with the limit's state", async () => {
  const key = await tenant("ts-one", 2);
  const tg = new Tollgate({ baseUrl: base, apiKey: key });
  assert.equal(await tg.canMakeAPICall(), true);
  const d = await tg.authorize({ endpoint: "/v1/chat" });
  assert.equal(d.allowed, true);
  assert.equal(d.remaining, 1);
  assert.equal(d.headers["x-ratelimit-remaining"], "1");
  assert.equal((await tg.authorize()).allowed, true);
  const refused = await tg.authorize();
  assert.equal(refused.allowed, false);
  assert.equal(refused.status, 429);
  assert.equal(refused.reason, "quota_exceeded");
  assert.ok(refused.retryAfterSeconds > 0);
  assert.equal(await tg.canMakeAPICall(), false);
  const usage = await tg.usage();
  assert.equal(usage.calls.used, 2);
  await tg.close();
  const unknown = new Tollgate({ baseUrl: base, apiKey: "tg_unknown" });
  await assert.rejects(unknown.check(), (e) => e instanceof TollgateError && e.status === 401);
  await unknown.close();
});

test("recordUsage batches, never blocks, and flush sends everything once", async () => {
  const key = await tenant("ts-batch", 1_000_000);
  const tg = new Tollgate({ baseUrl: base, apiKey: key, maxBatch: 50, flushIntervalMs: 60_000 });
  for (let i = 0; i < 120; i++) tg.recordUsage({ endpoint: "/v1/embed", tokensUsed: 3, calls: 1 });
  tg.recordUsage([{ endpoint: "/v1/chat", model: "gpt-4o-mini", promptTokens: 10, completionTokens: 5 }]);
  await tg.flush();
  assert.equal(tg.pending, 0);
  await until(async () => (await requests(tg)) === 121, "121 records in the analytics");
  await tg.close();
});

test("a batch whose answer is lost is sent again with its key and counted once", async () => {
  const key = await tenant("ts-lost", 1_000_000);
  let lose = 2;
  const keys = [];
  // The answer never arrives (the request went through: the server took it).
  const lossy = async (url, init) => {
    const res = await fetch(url, init);
    if (url.endsWith("/api/v1/usage")) {
      keys.push(init.headers["idempotency-key"]);
      if (lose-- > 0) {
        await res.body?.cancel();
        throw new TypeError("fetch failed");
      }
    }
    return res;
  };
  const errors = [];
  const tg = new Tollgate({
    baseUrl: base,
    apiKey: key,
    maxBatch: 10,
    flushIntervalMs: 60_000,
    fetch: lossy,
    onError: (e) => errors.push(e),
  });
  for (let i = 0; i < 15; i++) tg.recordUsage({ endpoint: "/v1/lost", calls: 1 });
  await tg.flush();
  await tg.flush();
  await tg.flush();
  assert.equal(tg.pending, 0);
  assert.equal(errors.length, 2);
  assert.ok(keys[0] && keys[0] === keys[1] && keys[1] === keys[2], "one key for one batch, sent three times");
  assert.notEqual(keys[3], keys[0], "the next batch has its own");
  const billed = await (await fetch(base + "/api/billing/usage", { headers: { authorization: `Bearer ${key}` } })).json();
  assert.equal(billed.calls.used, 15, "counted once");
  await tg.close();
});

test("authorize reserves tokens and a record naming the reservation settles them", async () => {
  await admin("POST", "/api/admin/plans", { id: "p-ts-tok", name: "tok", monthlyTokens: 1000 });
  await admin("POST", "/api/admin/tenants", { id: "ts-tok", planId: "p-ts-tok" });
  const key = (await admin("POST", "/api/admin/tenants/ts-tok/keys", {})).key;
  const tg = new Tollgate({ baseUrl: base, apiKey: key, flushIntervalMs: 60_000 });
  const d = await tg.authorize({ estimateTokens: 800 });
  assert.equal(d.allowed, true);
  assert.equal(d.reservedTokens, 800);
  assert.match(d.reservationId, /^rsv_[0-9a-f]{16}$/);
  const refused = await tg.authorize({ estimateTokens: 300 });
  assert.equal(refused.allowed, false);
  assert.equal(refused.reason, "token_quota_exceeded");
  assert.equal(refused.reservationId, null);
  tg.recordUsage({ endpoint: "/v1/chat", calls: 0, tokensUsed: 120, reservationId: d.reservationId });
  await tg.flush();
  await until(async () => (await tg.usage()).tokens.used === 120, "the reservation settled at 120 tokens");
  await tg.close();
});

test("the Express middleware enforces, sets the headers and records each request", async () => {
  const key = await tenant("ts-express", 3);
  const mw = express({ baseUrl: base, client: { flushIntervalMs: 20 } });
  // A real Express application, the middleware in front of its routes.
  const app = expressApp();
  app.use(mw);
  app.all("/v1/things", (req, res) => {
    res.locals.tollgate.tokens({ promptTokens: 4, completionTokens: 2, model: "gpt-4o-mini" });
    res.status(201).send("made");
  });
  const server = await new Promise((r) => {
    const s = app.listen(0, "127.0.0.1", () => r(s));
  });
  const url = `http://127.0.0.1:${server.address().port}/v1/things?x=1`;
  for (let i = 0; i < 3; i++) {
    const r = await fetch(url, { method: "POST", headers: { authorization: `Bearer ${key}` } });
    assert.equal(r.status, 201);
    assert.equal(await r.text(), "made");
    assert.ok(r.headers.get("ratelimit-policy"));
  }
  // The records went in: the quota is spent, the next request is refused.
  const tg = new Tollgate({ baseUrl: base, apiKey: key });
  await until(async () => (await requests(tg)) === 3, "3 records");
  const over = await fetch(url, { headers: { "x-api-key": key } });
  assert.equal(over.status, 429);
  assert.ok(Number(over.headers.get("retry-after")) > 0);
  // Tollgate's refusal passes through: the limit's state beside the code.
  const body = await over.json();
  assert.equal(body.code, "quota_exceeded");
  assert.equal(body.status, 429);
  assert.equal(body.limit, 3);
  assert.equal(body.used, 3);
  assert.equal(body.remaining, 0);
  assert.ok(Date.parse(body.resetAt) > Date.now(), body.resetAt);
  assert.ok(body.retryAfterSeconds > 0);
  const none = await fetch(url);
  assert.equal(none.status, 401);
  const report = await tg.apiUsage({ range: "day" });
  assert.ok(JSON.stringify(report.endpoints).includes("/v1/things"), JSON.stringify(report.endpoints));
  assert.equal(report.summary.totalTokens, 18);
  server.close();
  await mw.close();
  await tg.close();
});

test("the Next.js route handler wrapper and edge middleware", async () => {
  const key = await tenant("ts-next", 2);
  const handler = withTollgate(
    async (req, usage) => {
      usage.tokens({ tokensUsed: 7 });
      return Response.json({ ok: true, method: req.method });
    },
    { baseUrl: base, client: { flushIntervalMs: 20 } },
  );
  const req = () => new Request("http://app.local/api/chat", { method: "POST", headers: { authorization: `Bearer ${key}` } });
  const r = await handler(req());
  assert.equal(r.status, 200);
  assert.deepEqual(await r.json(), { ok: true, method: "POST" });
  assert.ok(r.headers.get("ratelimit"));
  await handler(req());
  const tg = new Tollgate({ baseUrl: base, apiKey: key });
  await until(async () => (await requests(tg)) === 2, "2 records");
  const over = await handler(req());
  assert.equal(over.status, 429);
  const body = await over.json();
  assert.equal(body.code, "quota_exceeded");
  assert.equal(body.limit, 2);
  assert.equal(body.used, 2);
  assert.ok(Date.parse(body.resetAt) > Date.now(), body.resetAt);
  const edge = nextMiddleware({ baseUrl: base });
  const refused = await edge(req());
  assert.equal(refused.status, 429);
  assert.equal(await edge(new Request("http://app.local/api/chat")).then((r) => r.status), 401);
  const other = await tenant("ts-next-ok", 10);
  assert.equal(await edge(new Request("http://app.local/x", { headers: { "x-api-key": other } })), undefined);
  await handler.close();
  await edge.close();
  await tg.close();
});

test("the CommonJS build loads with require", () => {
  const require = createRequire(import.meta.url);
  const cjs = require("../dist/cjs/index.cjs");
  assert.equal(typeof cjs.Tollgate, "function");
  assert.equal(typeof cjs.express, "function");
});

test("every failure is a TollgateError, told by default, and no record is lost", async () => {
  // Options it cannot work with.
  assert.throws(() => new Tollgate({ baseUrl: base }), (e) => e instanceof TollgateError && e.code === "invalid_options");
  // Tollgate out of reach: a TollgateError, not fetch's bare TypeError.
  const closed = await new Promise((r) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const port = s.address().port;
      s.close(() => r(port));
    });
  });
  const down = new Tollgate({ baseUrl: `http://127.0.0.1:${closed}`, apiKey: "tg_x", onError: () => {} });
  await assert.rejects(down.check(), (e) => e instanceof TollgateError && e.status === 0 && e.code === "unreachable" && !!e.cause);
  await down.close();

  // A wrong key: warned (console.warn by default), the records kept.
  const warned = [];
  const warn = console.warn;
  console.warn = (m) => warned.push(String(m));
  const wrong = new Tollgate({ baseUrl: base, apiKey: "tg_wrong", flushIntervalMs: 60_000 });
  try {
    wrong.recordUsage([{ endpoint: "/a" }, { endpoint: "/b" }, { endpoint: "/c" }]);
    await wrong.flush();
  } finally {
    console.warn = warn;
  }
  assert.equal(wrong.pending, 3, "kept to be sent again");
  assert.equal(warned.length, 1, JSON.stringify(warned));
  assert.match(warned[0], /^\[tollgate\] /);
  await wrong.close().catch(() => {});

  // One bad record: only it is dropped, and named; the others are counted.
  const key = await tenant("ts-bad", 1_000_000);
  const errors = [];
  const tg = new Tollgate({ baseUrl: base, apiKey: key, flushIntervalMs: 60_000, onError: (e) => errors.push(e) });
  tg.recordUsage([
    { endpoint: "/ok", calls: 1 },
    { endpoint: "/bad", calls: 1, cacheWriteTtl: "2h" },
    { endpoint: "/ok", calls: 1 },
    { tokensUsed: 5 },
  ]);
  assert.equal(errors.length, 1, "the record without an endpoint, at once");
  assert.equal(errors[0].code, "invalid_record");
  assert.deepEqual(errors[0].records, [{ tokensUsed: 5 }]);
  await tg.flush();
  assert.equal(tg.pending, 0);
  assert.equal(errors.length, 2, errors.map((e) => e.message).join("; "));
  assert.ok(errors[1] instanceof TollgateError && errors[1].status === 422, errors[1].message);
  assert.equal(errors[1].records.length, 1);
  assert.equal(errors[1].records[0].endpoint, "/bad");
  await until(async () => (await tg.usage()).calls.used === 2, "the two good records counted");
  await tg.close();
});

test("typed answers: usage() and apiUsage()", async () => {
  const key = await tenant("ts-typed", 100);
  const tg = new Tollgate({ baseUrl: base, apiKey: key, flushIntervalMs: 60_000 });
  tg.recordUsage({ endpoint: "/v1/chat", model: "gpt-4o", promptTokens: 10, completionTokens: 5, userId: "u1" });
  await tg.flush();
  await until(async () => (await tg.usage()).calls.used === 1, "the record counted");
  const u = await tg.usage();
  assert.equal(u.plan.id, "p-ts-typed");
  assert.equal(u.calls.limit, 100);
  assert.ok(Array.isArray(u.limits));
  const r = await tg.apiUsage({ range: "day" });
  assert.equal(r.summary.totalTokens, 15);
  assert.equal(r.models[0].model, "gpt-4o");
  assert.equal(r.topUsers[0].userId, "u1");
  assert.equal(r.range.bucket, "hour");
  await tg.close();
});

const here = dirname(dirname(fileURLToPath(import.meta.url)));

test("npm pack ships the built files, their types and the licence", () => {
  const [packed] = JSON.parse(execFileSync("npm", ["pack", "--dry-run", "--json"], { cwd: here, encoding: "utf8" }));
  const files = packed.files.map((f) => f.path).sort();
  for (const f of ["LICENSE", "README.md", "package.json", "dist/esm/index.js", "dist/esm/index.d.ts", "dist/cjs/index.cjs", "dist/cjs/index.d.cts"]) {
    assert.ok(files.includes(f), `${f} in ${files}`);
  }
});

test("installed from its folder as the README says, it works from ESM and CommonJS, in JavaScript and TypeScript", () => {
  const app = mkdtempSync(join(tmpdir(), "tollgate-app-"));
  try {
    writeFileSync(join(app, "package.json"), JSON.stringify({ name: "app", private: true }));
    // The README's command (npm links the folder: the built files must be in it).
    execFileSync("npm", ["install", "--offline", "--no-audit", "--no-fund", here], { cwd: app, stdio: "pipe" });
    const run = (args) => execFileSync("node", args, { cwd: app, encoding: "utf8" }).trim();
    assert.equal(run(["-e", "const t = require('tollgate'); console.log(typeof t.Tollgate, typeof t.express)"]), "function function");
    assert.equal(
      run(["--input-type=module", "-e", "import { Tollgate, withTollgate } from 'tollgate'; console.log(typeof Tollgate, typeof withTollgate)"]),
      "function function",
    );
    // TypeScript: a CommonJS project (TS1479 without the .d.cts) and an ES module one.
    writeFileSync(
      join(app, "app.ts"),
      `import { Tollgate, TollgateError, type BillingUsage, type UsageRecord } from "tollgate";
const tg = new Tollgate({ baseUrl: "http://127.0.0.1:1", apiKey: "k", onError: (e: TollgateError) => void e.records });
const r: UsageRecord = { endpoint: "/v1/chat", tokensUsed: 1 };
tg.recordUsage(r);
export async function used(): Promise<number> { const u: BillingUsage = await tg.usage(); return u.calls.used; }
`,
    );
    writeFileSync(
      join(app, "needs-endpoint.ts"),
      `import { Tollgate } from "tollgate";
new Tollgate({ baseUrl: "x", apiKey: "k" }).recordUsage({ tokensUsed: 1 });
`,
    );
    const tsc = join(here, "node_modules", "typescript", "bin", "tsc");
    const check = (file, module) =>
      execFileSync("node", [tsc, "--noEmit", "--strict", "--module", module, "--moduleResolution", module, "--target", "ES2022", "--lib", "es2022,dom", file], {
        cwd: app,
        encoding: "utf8",
        stdio: "pipe",
      });
    check("app.ts", "node16");
    writeFileSync(
      join(app, "app.mts"),
      "import { Tollgate, type ApiUsageReport } from 'tollgate';\nexport const t: typeof Tollgate = Tollgate;\nexport type R = ApiUsageReport['summary'];\n",
    );
    check("app.mts", "node16");
    // `endpoint` is required by the types.
    assert.throws(() => check("needs-endpoint.ts", "node16"), (e) => /endpoint/.test(String(e.stdout)));
  } finally {
    rmSync(app, { recursive: true, force: true });
  }
});
