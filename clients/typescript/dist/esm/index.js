// Tollgate's client for Node.js (18+), Express and Next.js: no runtime
// dependency beyond `fetch`.
//
//   const tg = new Tollgate({ baseUrl: "http://127.0.0.1:8080", apiKey });
//   if (await tg.canMakeAPICall()) { ...; tg.recordUsage({ endpoint: "/chat", tokensUsed: 42 }); }
//
// `recordUsage` never blocks: records are batched and sent on an interval,
// when a batch is full, on `flush()`, and before the process exits.
/**
 * Every failure the client meets: an answer that is neither a decision nor
 * data (401, 422, 5xx, ...: `status` and Tollgate's `code`), Tollgate out of
 * reach (`status` 0, `code` `unreachable`, the network error as `cause`),
 * options it cannot work with (`status` 0, `code` `invalid_options`), and
 * records it drops (`records`: the ones dropped).
 */
export class TollgateError extends Error {
    status;
    code;
    constructor(message, status, code, options = {}) {
        super(message, options.cause === undefined ? undefined : { cause: options.cause });
        this.status = status;
        this.code = code;
        this.name = "TollgateError";
        this.records = options.records ?? [];
        this.body = options.body ?? null;
    }
    /** The records this failure dropped (none when they are kept to be sent again). */
    records;
    /** Tollgate's JSON answer, when it sent one. */
    body;
}
const LIMIT_HEADERS = [
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "ratelimit",
    "ratelimit-policy",
    "retry-after",
];
function limitHeaders(h) {
    const out = {};
    for (const name of LIMIT_HEADERS) {
        const v = h.get(name);
        if (v !== null)
            out[name] = v;
    }
    return out;
}
const live = new Set();
let exitHooked = false;
/** Sends what is queued before the process exits (Node only). */
function hookExit() {
    if (exitHooked || typeof process === "undefined" || typeof process?.once !== "function")
        return;
    exitHooked = true;
    process.once("beforeExit", () => {
        for (const tg of live)
            void tg.flush();
    });
}
export class Tollgate {
    base;
    key;
    maxBatch;
    maxQueued;
    onError;
    fetch;
    queue = [];
    /** The batch being sent, kept with its key until Tollgate answers for it. */
    inFlight = null;
    timer = null;
    sending = null;
    /** Not before this time (ms): Tollgate asked to wait, or could not be reached. */
    holdUntil = 0;
    /** Failed sends in a row (the wait before the next grows with them). */
    failures = 0;
    constructor(options) {
        if (!options?.baseUrl || !options?.apiKey) {
            throw new TollgateError("Tollgate needs baseUrl and apiKey", 0, "invalid_options");
        }
        this.base = options.baseUrl.replace(/\/+$/, "");
        this.key = options.apiKey;
        this.maxBatch = Math.min(Math.max(options.maxBatch ?? 1000, 1), 10_000);
        this.maxQueued = Math.max(options.maxQueued ?? 100_000, this.maxBatch);
        this.onError = options.onError ?? ((e) => console.warn(`[tollgate] ${e.message}`));
        this.fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
        const every = options.flushIntervalMs ?? 1000;
        this.timer = setInterval(() => void this.flush(), every);
        // A timer must not keep a process alive on its own.
        this.timer.unref?.();
        live.add(this);
        hookExit();
    }
    async call(method, path, body, extra = {}) {
        try {
            return await this.fetch(this.base + path, {
                method,
                headers: {
                    authorization: `Bearer ${this.key}`,
                    ...(body === undefined ? {} : { "content-type": "application/json" }),
                    ...extra,
                },
                body: body === undefined ? undefined : JSON.stringify(body),
            });
        }
        catch (cause) {
            const why = cause instanceof Error ? cause.message : String(cause);
            throw new TollgateError(`Tollgate at ${this.base} cannot be reached (${why})`, 0, "unreachable", { cause });
        }
    }
    static async error(res, records = []) {
        let body = {};
        try {
            body = (await res.json());
        }
        catch {
            /* not JSON */
        }
        const message = typeof body.error === "string" ? body.error : `Tollgate answered ${res.status}`;
        const code = typeof body.code === "string" ? body.code : null;
        return new TollgateError(message, res.status, code, { records, body });
    }
    /** The answer's JSON, typed: `T` on a 200, else a {@link TollgateError}. */
    async data(res) {
        if (res.status !== 200)
            throw await Tollgate.error(res);
        return (await res.json());
    }
    async decision(res, allowedField) {
        if (res.status !== 200 && res.status !== 429 && res.status !== 403)
            throw await Tollgate.error(res);
        const b = (await res.json());
        const num = (v) => (typeof v === "number" ? v : null);
        const allowed = res.status === 200 && b[allowedField] === true;
        return {
            allowed,
            status: res.status,
            limit: num(b.limit),
            used: num(b.used),
            remaining: num(b.remaining),
            resetAt: typeof b.resetAt === "string" ? b.resetAt : null,
            reason: typeof b.reason === "string" ? b.reason : typeof b.code === "string" ? b.code : null,
            message: allowed ? null : typeof b.error === "string" ? b.error : typeof b.message === "string" ? b.message : null,
            retryAfterSeconds: num(b.retryAfterSeconds),
            reservationId: typeof b.reservationId === "string" ? b.reservationId : null,
            reservedTokens: num(b.reservedTokens),
            reservedUsd: num(b.reservedUsd),
            limitMet: typeof b.limitName === "string"
                ? {
                    limitName: b.limitName,
                    scope: b.scope,
                    measure: b.measure,
                    window: b.window,
                    subject: typeof b.subject === "string" ? b.subject : null,
                }
                : null,
            headers: limitHeaders(res.headers),
        };
    }
    /** Whether a call of `cost` would pass now; takes nothing (`POST /api/v1/check`). */
    async check(opts = {}) {
        return this.decision(await this.call("POST", "/api/v1/check", { ...opts, cost: opts.cost ?? 1 }), "isAllowed");
    }
    /** The product description's `canMakeAPICall(tenantId)`: the tenant is the key's. */
    async canMakeAPICall(opts = {}) {
        return (await this.check(opts)).allowed;
    }
    /**
     * Decides and takes `cost` calls at once, recording the request (`POST /api/v1/authorize`);
     * with `estimateTokens`, reserves that many tokens of a token quota until a record naming the
     * answer's `reservationId` settles them.
     */
    async authorize(opts = {}) {
        return this.decision(await this.call("POST", "/api/v1/authorize", opts), "allowed");
    }
    /**
     * Queues records for `POST /api/v1/usage`; never blocks, never throws. A
     * record without an `endpoint` is dropped at once (Tollgate would refuse
     * it), and said; past `maxQueued` the oldest go, said too.
     */
    recordUsage(records) {
        const list = Array.isArray(records) ? records : [records];
        const stamped = new Date().toISOString();
        const bad = [];
        for (const r of list) {
            if (typeof r?.endpoint !== "string" || r.endpoint === "")
                bad.push(r);
            else
                this.queue.push({ timestamp: stamped, ...r });
        }
        if (bad.length > 0) {
            this.onError(new TollgateError(`${bad.length} usage record(s) without an endpoint dropped`, 0, "invalid_record", { records: bad }));
        }
        if (this.queue.length > this.maxQueued) {
            const gone = this.queue.splice(0, this.queue.length - this.maxQueued);
            this.onError(new TollgateError(`${gone.length} usage record(s) dropped: more than maxQueued (${this.maxQueued}) wait for Tollgate`, 0, "queue_full", { records: gone }));
        }
        if (this.queue.length >= this.maxBatch)
            void this.flush();
    }
    /** Records queued and not yet taken. */
    get pending() {
        return this.queue.length + (this.inFlight?.records.length ?? 0);
    }
    /** Sends everything queued; resolves when Tollgate took it or refused it for now. */
    async flush() {
        while (this.sending)
            await this.sending;
        if (this.queue.length === 0 || Date.now() < this.holdUntil)
            return;
        this.sending = this.sendAll().finally(() => {
            this.sending = null;
        });
        return this.sending;
    }
    async sendAll() {
        while (this.inFlight || this.queue.length > 0) {
            // A batch is cut once, with an Idempotency-Key of its own, and sent
            // as it is until Tollgate answers for it: a retry after a lost
            // answer (a network error) is then counted once.
            const batch = (this.inFlight ??= {
                key: randomKey(),
                records: this.queue.splice(0, this.maxBatch),
            });
            let res;
            try {
                res = await this.call("POST", "/api/v1/usage", batch.records, {
                    "idempotency-key": batch.key,
                });
            }
            catch (e) {
                // Out of reach (or the answer lost): the same batch goes again at
                // the next flush.
                this.onError(e);
                return;
            }
            if (res.status === 202) {
                await res.body?.cancel();
                this.inFlight = null;
                this.failures = 0;
                continue;
            }
            if (res.status === 422) {
                // Tollgate took nothing and names the record it refuses
                // (`records[3]: ...`): that one is dropped, the rest go again as
                // a batch of their own.
                const refused = await Tollgate.error(res);
                const named = /^records\[(\d+)\]/.exec(refused.message);
                const at = named ? Number(named[1]) : -1;
                if (at >= 0 && at < batch.records.length) {
                    const [gone] = batch.records.splice(at, 1);
                    this.inFlight = batch.records.length > 0 ? { key: randomKey(), records: batch.records } : null;
                    this.onError(new TollgateError(`usage record dropped: ${refused.message}`, 422, refused.code, { records: [gone], body: refused.body ?? {} }));
                    continue;
                }
                // Refused as a whole, with no record named: it can never be taken.
                this.inFlight = null;
                this.onError(new TollgateError(`usage batch dropped: ${refused.message}`, 422, refused.code, { records: batch.records, body: refused.body ?? {} }));
                continue;
            }
            if (res.status === 400 || res.status === 413 || res.status === 415) {
                // A body Tollgate can never read: the batch would fail forever.
                const refused = await Tollgate.error(res, batch.records);
                this.inFlight = null;
                this.onError(refused);
                continue;
            }
            // Anything else (429, 503, a wrong key, a suspended tenant, 5xx):
            // nothing was taken; the same batch goes again after a wait.
            this.wait(res.headers.get("retry-after"));
            this.onError(await Tollgate.error(res));
            return;
        }
    }
    /** Waits before the next send: what Tollgate asked, else 1 s doubling with each failure in a row, up to a minute. */
    wait(retryAfter) {
        this.failures += 1;
        const asked = Number(retryAfter);
        const secs = retryAfter !== null && Number.isFinite(asked) ? asked : Math.min(60, 2 ** (this.failures - 1));
        this.holdUntil = Date.now() + secs * 1000;
    }
    /** The tenant's calls and tokens this period, and each limit's use (`GET /api/billing/usage`). */
    async usage() {
        return this.data(await this.call("GET", "/api/billing/usage"));
    }
    /** Usage analytics (`GET /api/billing/api-usage`, e.g. `{ range: "month" }`). */
    async apiUsage(query = {}) {
        const qs = new URLSearchParams(query).toString();
        return this.data(await this.call("GET", "/api/billing/api-usage" + (qs ? `?${qs}` : "")));
    }
    /** Sends what is queued and stops the timer. */
    async close() {
        if (this.timer)
            clearInterval(this.timer);
        this.timer = null;
        this.holdUntil = 0;
        await this.flush();
        live.delete(this);
    }
}
/** The tenant key a request presents (`Authorization: Bearer` or `X-API-Key`). */
export function keyOf(headers) {
    const auth = headers.get("authorization");
    if (auth && /^bearer /i.test(auth))
        return auth.slice(7).trim() || null;
    return headers.get("x-api-key")?.trim() || null;
}
/** One client per tenant key, made on first use. */
class Clients {
    options;
    byKey = new Map();
    constructor(options) {
        this.options = options;
    }
    get(key) {
        let tg = this.byKey.get(key);
        if (!tg) {
            tg = new Tollgate({ ...this.options.client, baseUrl: this.options.baseUrl, apiKey: key });
            this.byKey.set(key, tg);
        }
        return tg;
    }
    async close() {
        await Promise.all([...this.byKey.values()].map((t) => t.close()));
    }
}
function refusal(status, code, message, headers = {}, fields = {}) {
    return { status, body: JSON.stringify({ error: message, code, status, ...fields }), headers };
}
/** What Tollgate's own 429 says beside its message: the limit's state and the limit met. */
function limitFields(d, retryAfterSeconds) {
    return {
        limit: d.limit,
        used: d.used,
        remaining: d.remaining,
        resetAt: d.resetAt,
        retryAfterSeconds,
        ...(d.limitMet ?? {}),
    };
}
/** Seconds until a refused call may pass: the burst window's reset for
 * the burst limit, the period's end for a quota. */
function retryAfter(d) {
    if (d.retryAfterSeconds && d.retryAfterSeconds > 0)
        return d.retryAfterSeconds;
    if (d.reason === "rate_limited") {
        const burst = /"burst";r=\d+;t=(\d+)/.exec(d.headers["ratelimit"] ?? "");
        return Math.max(1, Number(burst?.[1] ?? 1));
    }
    if (d.resetAt)
        return Math.max(1, Math.ceil((Date.parse(d.resetAt) - Date.now()) / 1000));
    return 1;
}
/** Asks before the request; what to do with it. */
async function decide(clients, key, cost) {
    if (!key)
        return { refused: refusal(401, "missing_api_key", "send your API key as Authorization: Bearer <key> or X-API-Key") };
    const tg = clients.get(key);
    let d;
    try {
        d = await tg.check({ cost });
    }
    catch (e) {
        // Tollgate out of reach is a 503 of the application's (status 0).
        const status = e instanceof TollgateError && e.status > 0 ? e.status : 503;
        const code = e instanceof TollgateError && e.code && e.status > 0 ? e.code : "tollgate_unavailable";
        return { refused: refusal(status, code, e instanceof Error ? e.message : String(e)) };
    }
    if (!d.allowed) {
        if (d.reason === "tenant_suspended") {
            return { refused: refusal(403, "tenant_suspended", "the tenant is suspended", d.headers), tg };
        }
        // A check is a 200, which carries no Retry-After: work it out. The
        // body says what Tollgate's own 429 would.
        const wait = retryAfter(d);
        const headers = { ...d.headers, "retry-after": String(wait) };
        const message = d.message ?? `refused: ${d.reason ?? "limit reached"}`;
        return { refused: refusal(429, d.reason ?? "refused", message, headers, limitFields(d, wait)), tg };
    }
    return { tg, headers: d.headers };
}
/**
 * Express (or plain `node:http`) middleware: refuses a request over its
 * tenant's limits (401/403/429 with the rate-limit headers), sets the
 * headers on the others, and records endpoint, method, status, latency
 * and the tokens reported with `res.locals.tollgate.tokens({...})`.
 */
export function express(options) {
    const clients = new Clients(options);
    const mw = async (req, res, next) => {
        const started = performance.now();
        const header = (n) => {
            const v = req.headers[n];
            return (Array.isArray(v) ? v[0] : v) ?? null;
        };
        const d = await decide(clients, keyOf({ get: header }), options.cost ?? 1);
        if ("refused" in d && d.refused) {
            res.statusCode = d.refused.status;
            res.setHeader("content-type", "application/json");
            for (const [k, v] of Object.entries(d.refused.headers))
                res.setHeader(k, v);
            res.end(d.refused.body);
            return;
        }
        const { tg, headers } = d;
        for (const [k, v] of Object.entries(headers))
            res.setHeader(k, v);
        const path = (req.originalUrl ?? req.url ?? "/").split("?")[0];
        const record = {
            endpoint: options.endpoint ? options.endpoint(path) : path,
            method: req.method ?? "GET",
            calls: options.cost ?? 1,
        };
        const usage = { tokens: (t) => Object.assign(record, t) };
        if (res.locals)
            res.locals.tollgate = usage;
        else
            res.tollgate = usage;
        res.once("finish", () => {
            tg.recordUsage({ ...record, statusCode: res.statusCode, responseTime: performance.now() - started });
        });
        next();
    };
    return Object.assign(mw, { close: () => clients.close() });
}
/**
 * Wraps a Next.js route handler (`export const POST = withTollgate(handler, {...})`):
 * the same as {@link express}, on the web's `Request` and `Response`. The
 * handler reports tokens with its second argument's `tokens({...})`.
 */
export function withTollgate(handler, options) {
    const clients = new Clients(options);
    const wrapped = async (req) => {
        const started = performance.now();
        const d = await decide(clients, keyOf(req.headers), options.cost ?? 1);
        if ("refused" in d && d.refused) {
            return new Response(d.refused.body, {
                status: d.refused.status,
                headers: { "content-type": "application/json", ...d.refused.headers },
            });
        }
        const { tg, headers } = d;
        const path = new URL(req.url).pathname;
        const record = {
            endpoint: options.endpoint ? options.endpoint(path) : path,
            method: req.method,
            calls: options.cost ?? 1,
        };
        let res;
        try {
            res = await handler(req, { tokens: (t) => Object.assign(record, t) });
        }
        catch (e) {
            tg.recordUsage({ ...record, statusCode: 500, responseTime: performance.now() - started });
            throw e;
        }
        tg.recordUsage({ ...record, statusCode: res.status, responseTime: performance.now() - started });
        const out = new Headers(res.headers);
        for (const [k, v] of Object.entries(headers))
            out.set(k, v);
        return new Response(res.body, { status: res.status, statusText: res.statusText, headers: out });
    };
    return Object.assign(wrapped, { close: () => clients.close() });
}
/**
 * Next.js edge middleware (`middleware.ts`): answers a refusal itself and
 * returns `undefined` to let the request go on (Next then continues). It
 * checks only; record usage in the route handlers ({@link withTollgate}).
 */
export function nextMiddleware(options) {
    const clients = new Clients(options);
    const mw = async (req) => {
        const d = await decide(clients, keyOf(req.headers), options.cost ?? 1);
        if ("refused" in d && d.refused) {
            return new Response(d.refused.body, {
                status: d.refused.status,
                headers: { "content-type": "application/json", ...d.refused.headers },
            });
        }
        return undefined;
    };
    return Object.assign(mw, { close: () => clients.close() });
}
/** A batch's Idempotency-Key: random, 128 bits. */
function randomKey() {
    const c = globalThis.crypto;
    if (c?.randomUUID)
        return c.randomUUID();
    return Array.from({ length: 4 }, () => Math.floor(Math.random() * 2 ** 32).toString(16).padStart(8, "0")).join("-");
}
