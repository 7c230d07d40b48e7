// Tollgate's client for Node.js (18+), Express and Next.js: no runtime
// dependency beyond `fetch`.
//
//   const tg = new Tollgate({ baseUrl: "http://127.0.0.1:8080", apiKey });
//   if (await tg.canMakeAPICall()) { ...; tg.recordUsage({ endpoint: "/chat", tokensUsed: 42 }); }
//
// `recordUsage` never blocks: records are batched and sent on an interval,
// when a batch is full, on `flush()`, and before the process exits.

/** One usage record, as `POST /api/v1/usage` takes it. */
export interface UsageRecord {
  timestamp?: string;
  /** The API route it was (required: Tollgate refuses a record without one). */
  endpoint: string;
  method?: string;
  statusCode?: number;
  responseTime?: number;
  promptTokens?: number;
  completionTokens?: number;
  tokensUsed?: number;
  model?: string;
  userId?: string;
  botId?: string;
  calls?: number;
  metadata?: Record<string, string | number | boolean>;
  /** The API version (`v1`, `2024-06-01`); by default the endpoint's first segment when it names one. */
  apiVersion?: string;
  /** The caller's ISO 3166-1 alpha-2 country. */
  country?: string;
  /** The caller's address, looked up in the server's `[geoip]` database (never stored). */
  clientIp?: string;
  /** 0 for a first attempt; above 0 for a retry. */
  retryAttempt?: number;
  /** The `reservationId` of the authorize this record reports on: its tokens replace the ones reserved (send `calls: 0`). */
  reservationId?: string;
  /** Of `promptTokens` (the whole prompt), those read from the provider's cache. */
  cachedPromptTokens?: number;
  /** Of `promptTokens`, those written to the provider's cache. */
  cacheWriteTokens?: number;
  /** How long the cache writes are kept: `5m` (default) or `1h`. */
  cacheWriteTtl?: "5m" | "1h";
  /** Of `cacheWriteTokens`, those kept an hour (instead of `cacheWriteTtl`, when one answer wrote both). */
  cacheWrite1hTokens?: number;
  /** Of `completionTokens`, those spent reasoning. */
  reasoningTokens?: number;
}

/** The tokens an answer used, by kind (each kind is part of its figure). */
export type TokenUsage = Pick<
  UsageRecord,
  | "promptTokens"
  | "completionTokens"
  | "tokensUsed"
  | "model"
  | "cachedPromptTokens"
  | "cacheWriteTokens"
  | "cacheWriteTtl"
  | "cacheWrite1hTokens"
  | "reasoningTokens"
>;

export interface TollgateOptions {
  /** Where Tollgate listens, e.g. `http://127.0.0.1:8080`. */
  baseUrl: string;
  /** The tenant's key. */
  apiKey: string;
  /** How often queued records are sent (ms; default 1000). */
  flushIntervalMs?: number;
  /** Records per batch (default 1000; Tollgate takes up to 10,000). */
  maxBatch?: number;
  /** Records kept while Tollgate cannot take them (default 100,000); the oldest go first. */
  maxQueued?: number;
  /**
   * Told of every failure, as a {@link TollgateError} (default: a
   * `console.warn`). Records are kept and sent again unless Tollgate can
   * never take them: a record it names as invalid (422) is dropped alone,
   * and so is one without an `endpoint`.
   */
  onError?: (error: TollgateError) => void;
  fetch?: typeof fetch;
}

/** Who a call is for and what it may use: the limits of its end user, bot and model apply. */
export interface AskFor {
  /** Tokens to reserve until the record naming `reservationId` settles them. */
  estimateTokens?: number;
  /** US dollars to reserve of spend limits, settled the same way. */
  estimateUsd?: number;
  model?: string;
  userId?: string;
  botId?: string;
}

/** A limit of SPEC §12 (the admin API sets them on plans, tenants and keys). */
export interface Limit {
  /** `^[a-z0-9][a-z0-9_-]{0,23}$`; `month`, `tokens` and `burst` are the plan's own fields. */
  name: string;
  scope: "tenant" | "key" | "user" | "bot" | "model";
  measure: "calls" | "tokens" | "spendUsd" | "inFlight";
  window: "burst" | "minute" | "hour" | "day" | "month" | "billingMonth" | "none";
  /** Calls, tokens or requests; US dollars for `spendUsd`; null = unlimited. */
  amount: number | null;
  /** The burst window's seconds and how many may pass at once. */
  perSeconds?: number;
  burst?: number;
}

/** One limit's use now, as `usage()` lists it. */
export interface LimitStanding {
  name: string;
  scope: Limit["scope"];
  measure: Limit["measure"];
  window: Limit["window"];
  /** The key id, end user, bot or model it counts (absent for the tenant). */
  subject?: string;
  used: number;
  amount: number;
  remaining: number;
  resetAt: string | null;
}

/** The limit a refusal met (SPEC §12). */
export interface LimitMet {
  limitName: string;
  scope: Limit["scope"];
  measure: Limit["measure"];
  window: Limit["window"];
  subject: string | null;
}

/** A decision and the limit's state. */
export interface Decision {
  allowed: boolean;
  /** The HTTP status Tollgate answered. */
  status: number;
  limit: number | null;
  used: number | null;
  remaining: number | null;
  resetAt: string | null;
  /** Why not (`quota_exceeded`, `rate_limited`, `tenant_suspended`, ...). */
  reason: string | null;
  /** Tollgate's words for a refusal. */
  message: string | null;
  retryAfterSeconds: number | null;
  /** Tokens reserved by an authorize (its `estimateTokens`, or the plan's `reserveTokens`), to settle with `recordUsage({ reservationId, ... })`. */
  reservationId: string | null;
  reservedTokens: number | null;
  /** US dollars reserved of spend limits (its `estimateUsd`). */
  reservedUsd: number | null;
  /** On a refusal: the limit it met. */
  limitMet: LimitMet | null;
  /** The rate-limit headers to pass on to the caller. */
  headers: Record<string, string>;
}

/**
 * Every failure the client meets: an answer that is neither a decision nor
 * data (401, 422, 5xx, ...: `status` and Tollgate's `code`), Tollgate out of
 * reach (`status` 0, `code` `unreachable`, the network error as `cause`),
 * options it cannot work with (`status` 0, `code` `invalid_options`), and
 * records it drops (`records`: the ones dropped).
 */
export class TollgateError extends Error {
  constructor(
    message: string,
    public readonly status: number,
    public readonly code: string | null,
    options: { cause?: unknown; records?: UsageRecord[]; body?: Record<string, unknown> } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "TollgateError";
    this.records = options.records ?? [];
    this.body = options.body ?? null;
  }
  /** The records this failure dropped (none when they are kept to be sent again). */
  public readonly records: UsageRecord[];
  /** Tollgate's JSON answer, when it sent one. */
  public readonly body: Record<string, unknown> | null;
}

/** The plan a tenant is on, as `usage()` shows it. */
export interface Plan {
  id: string;
  name: string;
  monthlyCalls: number | null;
  monthlyTokens: number | null;
  rateLimit: { requests: number; perSeconds: number; burst: number } | null;
  priceUsdMonthly: number;
  ingestRate: number | null;
  reserveTokens: number | null;
  reservationTtlSeconds: number | null;
  reserveUsd: number | null;
  limits: Limit[];
}

/** A quota's use this period. */
export interface QuotaUse {
  used: number;
  limit: number | null;
  remaining: number | null;
  /** Two decimals; null when unlimited. */
  percent: number | null;
}

/** `GET /api/billing/usage`: the tenant's period, plan, quotas and limits. */
export interface BillingUsage {
  period: { start: string; end: string };
  plan: Plan;
  calls: QuotaUse;
  tokens: QuotaUse;
  resetAt: string;
  limits: LimitStanding[];
}

/** Tokens by kind (each kind is part of promptTokens or completionTokens). */
export interface TokensByKind {
  uncachedPrompt: number;
  cachedPrompt: number;
  cacheWrite: number;
  cacheWrite1h: number;
  completion: number;
  reasoning: number;
}

/** Cost in US dollars by kind (`unsplit`: records whose cost came whole). */
export interface CostByKind {
  uncachedPrompt: number;
  cachedPrompt: number;
  cacheWrite: number;
  completion: number;
  reasoning: number;
  unsplit: number;
}

/** What a breakdown's row counts. */
interface Counted {
  requests: number;
  tokens: number;
  costUsd: number;
}

/** `GET /api/billing/api-usage`: the usage analytics of a range. */
export interface ApiUsageReport {
  tenantId: string;
  range: { from: string; to: string; bucket: "minute" | "hour" | "day" };
  summary: {
    totalRequests: number;
    successfulRequests: number;
    failedRequests: number;
    rejectedRequests: number;
    successRate: number;
    totalTokens: number;
    promptTokens: number;
    completionTokens: number;
    avgResponseTimeMs: number;
    p50ResponseTimeMs: number;
    p95ResponseTimeMs: number;
    p99ResponseTimeMs: number;
    estimatedCostUsd: number;
    requestsPerMinute: number;
    tokensByKind: TokensByKind;
    costByKind: CostByKind;
    cacheHitRate: number | null;
  };
  series: { t: string; requests: number; errors: number; tokens: number; costUsd: number; avgResponseTimeMs: number | null }[];
  endpoints: { endpoint: string; method: string; requests: number; errors: number; avgResponseTimeMs: number; p95ResponseTimeMs: number; tokens: number }[];
  statusCodes: { status: number; count: number }[];
  models: (Omit<Counted, "tokens"> & {
    model: string;
    promptTokens: number;
    completionTokens: number;
    tokensByKind: TokensByKind;
    costByKind: CostByKind;
    cacheHitRate: number | null;
    priced: boolean;
  })[];
  topUsers: (Counted & { userId: string })[];
  topBots: (Counted & { botId: string })[];
  topKeys: (Counted & { keyId: string; name: string })[];
  peakHours: { hour: number; requests: number }[];
  apiVersions: (Counted & { apiVersion: string; errors: number })[];
  countries: (Counted & { country: string; errors: number })[];
  integrations: (Counted & { integration: string; errors: number })[];
  forecast: {
    periodEnd: string;
    dailyCalls: number;
    dailyTokens: number;
    dailyCostUsd: number;
    projectedCalls: number;
    projectedTokens: number;
    projectedCostUsd: number;
    quotaExhaustedAt: string | null;
    tokenQuotaExhaustedAt: string | null;
    method: string;
  };
  recommendation: Record<string, unknown> | null;
  anomalies: { t: string; metric: "requests" | "tokens" | "errorRate" | "p95LatencyMs"; observed: number; expected: number; score: number; direction: "up" | "down" }[];
  insights: Record<string, unknown>[];
}

const LIMIT_HEADERS = [
  "x-ratelimit-limit",
  "x-ratelimit-remaining",
  "x-ratelimit-reset",
  "ratelimit",
  "ratelimit-policy",
  "retry-after",
];

function limitHeaders(h: Headers): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of LIMIT_HEADERS) {
    const v = h.get(name);
    if (v !== null) out[name] = v;
  }
  return out;
}

// Node's process, where there is one (not in an edge runtime).
declare const process: { once(event: "beforeExit", listener: () => void): unknown } | undefined;

const live = new Set<Tollgate>();
let exitHooked = false;

/** Sends what is queued before the process exits (Node only). */
function hookExit(): void {
  if (exitHooked || typeof process === "undefined" || typeof process?.once !== "function") return;
  exitHooked = true;
  process.once("beforeExit", () => {
    for (const tg of live) void tg.flush();
  });
}

export class Tollgate {
  private readonly base: string;
  private readonly key: string;
  private readonly maxBatch: number;
  private readonly maxQueued: number;
  private readonly onError: (e: TollgateError) => void;
  private readonly fetch: typeof fetch;
  private queue: UsageRecord[] = [];
  /** The batch being sent, kept with its key until Tollgate answers for it. */
  private inFlight: { key: string; records: UsageRecord[] } | null = null;
  private timer: ReturnType<typeof setInterval> | null = null;
  private sending: Promise<void> | null = null;
  /** Not before this time (ms): Tollgate asked to wait, or could not be reached. */
  private holdUntil = 0;
  /** Failed sends in a row (the wait before the next grows with them). */
  private failures = 0;

  constructor(options: TollgateOptions) {
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
    (this.timer as { unref?: () => void }).unref?.();
    live.add(this);
    hookExit();
  }

  private async call(
    method: string,
    path: string,
    body?: unknown,
    extra: Record<string, string> = {},
  ): Promise<Response> {
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
    } catch (cause) {
      const why = cause instanceof Error ? cause.message : String(cause);
      throw new TollgateError(`Tollgate at ${this.base} cannot be reached (${why})`, 0, "unreachable", { cause });
    }
  }

  private static async error(res: Response, records: UsageRecord[] = []): Promise<TollgateError> {
    let body: Record<string, unknown> = {};
    try {
      body = (await res.json()) as typeof body;
    } catch {
      /* not JSON */
    }
    const message = typeof body.error === "string" ? body.error : `Tollgate answered ${res.status}`;
    const code = typeof body.code === "string" ? body.code : null;
    return new TollgateError(message, res.status, code, { records, body });
  }

  /** The answer's JSON, typed: `T` on a 200, else a {@link TollgateError}. */
  private async data<T>(res: Response): Promise<T> {
    if (res.status !== 200) throw await Tollgate.error(res);
    return (await res.json()) as T;
  }

  private async decision(res: Response, allowedField: "allowed" | "isAllowed"): Promise<Decision> {
    if (res.status !== 200 && res.status !== 429 && res.status !== 403) throw await Tollgate.error(res);
    const b = (await res.json()) as Record<string, unknown>;
    const num = (v: unknown) => (typeof v === "number" ? v : null);
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
      limitMet:
        typeof b.limitName === "string"
          ? {
              limitName: b.limitName,
              scope: b.scope as Limit["scope"],
              measure: b.measure as Limit["measure"],
              window: b.window as Limit["window"],
              subject: typeof b.subject === "string" ? b.subject : null,
            }
          : null,
      headers: limitHeaders(res.headers),
    };
  }

  /** Whether a call of `cost` would pass now; takes nothing (`POST /api/v1/check`). */
  async check(opts: { cost?: number } & AskFor = {}): Promise<Decision> {
    return this.decision(await this.call("POST", "/api/v1/check", { ...opts, cost: opts.cost ?? 1 }), "isAllowed");
  }

  /** The product description's `canMakeAPICall(tenantId)`: the tenant is the key's. */
  async canMakeAPICall(opts: { cost?: number } = {}): Promise<boolean> {
    return (await this.check(opts)).allowed;
  }

  /**
   * Decides and takes `cost` calls at once, recording the request (`POST /api/v1/authorize`);
   * with `estimateTokens`, reserves that many tokens of a token quota until a record naming the
   * answer's `reservationId` settles them.
   */
  async authorize(
    opts: {
      cost?: number;
      endpoint?: string;
      method?: string;
    } & AskFor = {},
  ): Promise<Decision> {
    return this.decision(await this.call("POST", "/api/v1/authorize", opts), "allowed");
  }

  /**
   * Queues records for `POST /api/v1/usage`; never blocks, never throws. A
   * record without an `endpoint` is dropped at once (Tollgate would refuse
   * it), and said; past `maxQueued` the oldest go, said too.
   */
  recordUsage(records: UsageRecord | UsageRecord[]): void {
    const list = Array.isArray(records) ? records : [records];
    const stamped = new Date().toISOString();
    const bad: UsageRecord[] = [];
    for (const r of list) {
      if (typeof r?.endpoint !== "string" || r.endpoint === "") bad.push(r);
      else this.queue.push({ timestamp: stamped, ...r });
    }
    if (bad.length > 0) {
      this.onError(
        new TollgateError(`${bad.length} usage record(s) without an endpoint dropped`, 0, "invalid_record", { records: bad }),
      );
    }
    if (this.queue.length > this.maxQueued) {
      const gone = this.queue.splice(0, this.queue.length - this.maxQueued);
      this.onError(
        new TollgateError(
          `${gone.length} usage record(s) dropped: more than maxQueued (${this.maxQueued}) wait for Tollgate`,
          0,
          "queue_full",
          { records: gone },
        ),
      );
    }
    if (this.queue.length >= this.maxBatch) void this.flush();
  }

  /** Records queued and not yet taken. */
  get pending(): number {
    return this.queue.length + (this.inFlight?.records.length ?? 0);
  }

  /** Sends everything queued; resolves when Tollgate took it or refused it for now. */
  async flush(): Promise<void> {
    while (this.sending) await this.sending;
    if (this.queue.length === 0 || Date.now() < this.holdUntil) return;
    this.sending = this.sendAll().finally(() => {
      this.sending = null;
    });
    return this.sending;
  }

  private async sendAll(): Promise<void> {
    while (this.inFlight || this.queue.length > 0) {
      // A batch is cut once, with an Idempotency-Key of its own, and sent
      // as it is until Tollgate answers for it: a retry after a lost
      // answer (a network error) is then counted once.
      const batch = (this.inFlight ??= {
        key: randomKey(),
        records: this.queue.splice(0, this.maxBatch),
      });
      let res: Response;
      try {
        res = await this.call("POST", "/api/v1/usage", batch.records, {
          "idempotency-key": batch.key,
        });
      } catch (e) {
        // Out of reach (or the answer lost): the same batch goes again at
        // the next flush.
        this.onError(e as TollgateError);
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
  private wait(retryAfter: string | null): void {
    this.failures += 1;
    const asked = Number(retryAfter);
    const secs = retryAfter !== null && Number.isFinite(asked) ? asked : Math.min(60, 2 ** (this.failures - 1));
    this.holdUntil = Date.now() + secs * 1000;
  }

  /** The tenant's calls and tokens this period, and each limit's use (`GET /api/billing/usage`). */
  async usage(): Promise<BillingUsage> {
    return this.data<BillingUsage>(await this.call("GET", "/api/billing/usage"));
  }

  /** Usage analytics (`GET /api/billing/api-usage`, e.g. `{ range: "month" }`). */
  async apiUsage(query: ApiUsageQuery = {}): Promise<ApiUsageReport> {
    const qs = new URLSearchParams(query as Record<string, string>).toString();
    return this.data<ApiUsageReport>(await this.call("GET", "/api/billing/api-usage" + (qs ? `?${qs}` : "")));
  }

  /** Sends what is queued and stops the timer. */
  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.holdUntil = 0;
    await this.flush();
    live.delete(this);
  }
}

/** What `apiUsage()` asks for: a named range, or `from`/`to` (ISO 8601); one API key's usage alone with `keyId`. */
export interface ApiUsageQuery {
  /** `day` (last 24 h), `week` (last 7 days), `month` (the current period, the default), `custom` (with `from`). */
  range?: "day" | "week" | "month" | "custom";
  /** RFC 3339. */
  from?: string;
  to?: string;
  bucket?: "minute" | "hour" | "day";
  /** Rows in each top-N list, 1-100 (default 10), as a string. */
  limit?: string;
  keyId?: string;
}

// ---- middleware -------------------------------------------------------

export interface MiddlewareOptions {
  baseUrl: string;
  /** Calls each request costs (default 1). */
  cost?: number;
  /** The record's endpoint (default: the request's path). */
  endpoint?: (path: string) => string;
  /** Client options for each tenant's client. */
  client?: Omit<TollgateOptions, "baseUrl" | "apiKey">;
}

/** The tenant key a request presents (`Authorization: Bearer` or `X-API-Key`). */
export function keyOf(headers: { get(name: string): string | null }): string | null {
  const auth = headers.get("authorization");
  if (auth && /^bearer /i.test(auth)) return auth.slice(7).trim() || null;
  return headers.get("x-api-key")?.trim() || null;
}

/** One client per tenant key, made on first use. */
class Clients {
  private readonly byKey = new Map<string, Tollgate>();
  constructor(private readonly options: MiddlewareOptions) {}
  get(key: string): Tollgate {
    let tg = this.byKey.get(key);
    if (!tg) {
      tg = new Tollgate({ ...this.options.client, baseUrl: this.options.baseUrl, apiKey: key });
      this.byKey.set(key, tg);
    }
    return tg;
  }
  async close(): Promise<void> {
    await Promise.all([...this.byKey.values()].map((t) => t.close()));
  }
}

function refusal(
  status: number,
  code: string,
  message: string,
  headers: Record<string, string> = {},
  fields: Record<string, unknown> = {},
) {
  return { status, body: JSON.stringify({ error: message, code, status, ...fields }), headers };
}

/** What Tollgate's own 429 says beside its message: the limit's state and the limit met. */
function limitFields(d: Decision, retryAfterSeconds: number): Record<string, unknown> {
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
function retryAfter(d: Decision): number {
  if (d.retryAfterSeconds && d.retryAfterSeconds > 0) return d.retryAfterSeconds;
  if (d.reason === "rate_limited") {
    const burst = /"burst";r=\d+;t=(\d+)/.exec(d.headers["ratelimit"] ?? "");
    return Math.max(1, Number(burst?.[1] ?? 1));
  }
  if (d.resetAt) return Math.max(1, Math.ceil((Date.parse(d.resetAt) - Date.now()) / 1000));
  return 1;
}

/** Asks before the request; what to do with it. */
async function decide(clients: Clients, key: string | null, cost: number) {
  if (!key) return { refused: refusal(401, "missing_api_key", "send your API key as Authorization: Bearer <key> or X-API-Key") };
  const tg = clients.get(key);
  let d: Decision;
  try {
    d = await tg.check({ cost });
  } catch (e) {
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

/** Node's (and Express's) request and response, as far as the middleware uses them. */
interface NodeRequest {
  method?: string;
  url?: string;
  originalUrl?: string;
  headers: Record<string, string | string[] | undefined>;
}
interface NodeResponse {
  statusCode: number;
  setHeader(name: string, value: string): unknown;
  end(body?: string): unknown;
  once(event: "finish", listener: () => void): unknown;
  locals?: Record<string, unknown>;
}

/** Reports tokens for the request being served (Express: `res.locals.tollgate`). */
export interface Usage {
  tokens(t: TokenUsage): void;
}

/**
 * Express (or plain `node:http`) middleware: refuses a request over its
 * tenant's limits (401/403/429 with the rate-limit headers), sets the
 * headers on the others, and records endpoint, method, status, latency
 * and the tokens reported with `res.locals.tollgate.tokens({...})`.
 */
export function express(options: MiddlewareOptions) {
  const clients = new Clients(options);
  const mw = async (req: NodeRequest, res: NodeResponse, next: (e?: unknown) => void) => {
    const started = performance.now();
    const header = (n: string) => {
      const v = req.headers[n];
      return (Array.isArray(v) ? v[0] : v) ?? null;
    };
    const d = await decide(clients, keyOf({ get: header }), options.cost ?? 1);
    if ("refused" in d && d.refused) {
      res.statusCode = d.refused.status;
      res.setHeader("content-type", "application/json");
      for (const [k, v] of Object.entries(d.refused.headers)) res.setHeader(k, v);
      res.end(d.refused.body);
      return;
    }
    const { tg, headers } = d as { tg: Tollgate; headers: Record<string, string> };
    for (const [k, v] of Object.entries(headers)) res.setHeader(k, v);
    const path = (req.originalUrl ?? req.url ?? "/").split("?")[0];
    const record: UsageRecord = {
      endpoint: options.endpoint ? options.endpoint(path) : path,
      method: req.method ?? "GET",
      calls: options.cost ?? 1,
    };
    const usage: Usage = { tokens: (t) => Object.assign(record, t) };
    if (res.locals) res.locals.tollgate = usage;
    else (res as unknown as { tollgate: Usage }).tollgate = usage;
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
export function withTollgate(
  handler: (req: Request, usage: Usage) => Promise<Response> | Response,
  options: MiddlewareOptions,
) {
  const clients = new Clients(options);
  const wrapped = async (req: Request): Promise<Response> => {
    const started = performance.now();
    const d = await decide(clients, keyOf(req.headers), options.cost ?? 1);
    if ("refused" in d && d.refused) {
      return new Response(d.refused.body, {
        status: d.refused.status,
        headers: { "content-type": "application/json", ...d.refused.headers },
      });
    }
    const { tg, headers } = d as { tg: Tollgate; headers: Record<string, string> };
    const path = new URL(req.url).pathname;
    const record: UsageRecord = {
      endpoint: options.endpoint ? options.endpoint(path) : path,
      method: req.method,
      calls: options.cost ?? 1,
    };
    let res: Response;
    try {
      res = await handler(req, { tokens: (t) => Object.assign(record, t) });
    } catch (e) {
      tg.recordUsage({ ...record, statusCode: 500, responseTime: performance.now() - started });
      throw e;
    }
    tg.recordUsage({ ...record, statusCode: res.status, responseTime: performance.now() - started });
    const out = new Headers(res.headers);
    for (const [k, v] of Object.entries(headers)) out.set(k, v);
    return new Response(res.body, { status: res.status, statusText: res.statusText, headers: out });
  };
  return Object.assign(wrapped, { close: () => clients.close() });
}

/**
 * Next.js edge middleware (`middleware.ts`): answers a refusal itself and
 * returns `undefined` to let the request go on (Next then continues). It
 * checks only; record usage in the route handlers ({@link withTollgate}).
 */
export function nextMiddleware(options: MiddlewareOptions) {
  const clients = new Clients(options);
  const mw = async (req: Request): Promise<Response | undefined> => {
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
function randomKey(): string {
  const c = (globalThis as { crypto?: { randomUUID?: () => string } }).crypto;
  if (c?.randomUUID) return c.randomUUID();
  return Array.from({ length: 4 }, () => Math.floor(Math.random() * 2 ** 32).toString(16).padStart(8, "0")).join("-");
}
