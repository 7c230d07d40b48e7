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
export type TokenUsage = Pick<UsageRecord, "promptTokens" | "completionTokens" | "tokensUsed" | "model" | "cachedPromptTokens" | "cacheWriteTokens" | "cacheWriteTtl" | "cacheWrite1hTokens" | "reasoningTokens">;
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
export declare class TollgateError extends Error {
    readonly status: number;
    readonly code: string | null;
    constructor(message: string, status: number, code: string | null, options?: {
        cause?: unknown;
        records?: UsageRecord[];
        body?: Record<string, unknown>;
    });
    /** The records this failure dropped (none when they are kept to be sent again). */
    readonly records: UsageRecord[];
    /** Tollgate's JSON answer, when it sent one. */
    readonly body: Record<string, unknown> | null;
}
/** The plan a tenant is on, as `usage()` shows it. */
export interface Plan {
    id: string;
    name: string;
    monthlyCalls: number | null;
    monthlyTokens: number | null;
    rateLimit: {
        requests: number;
        perSeconds: number;
        burst: number;
    } | null;
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
    period: {
        start: string;
        end: string;
    };
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
    range: {
        from: string;
        to: string;
        bucket: "minute" | "hour" | "day";
    };
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
    series: {
        t: string;
        requests: number;
        errors: number;
        tokens: number;
        costUsd: number;
        avgResponseTimeMs: number | null;
    }[];
    endpoints: {
        endpoint: string;
        method: string;
        requests: number;
        errors: number;
        avgResponseTimeMs: number;
        p95ResponseTimeMs: number;
        tokens: number;
    }[];
    statusCodes: {
        status: number;
        count: number;
    }[];
    models: (Omit<Counted, "tokens"> & {
        model: string;
        promptTokens: number;
        completionTokens: number;
        tokensByKind: TokensByKind;
        costByKind: CostByKind;
        cacheHitRate: number | null;
        priced: boolean;
    })[];
    topUsers: (Counted & {
        userId: string;
    })[];
    topBots: (Counted & {
        botId: string;
    })[];
    topKeys: (Counted & {
        keyId: string;
        name: string;
    })[];
    peakHours: {
        hour: number;
        requests: number;
    }[];
    apiVersions: (Counted & {
        apiVersion: string;
        errors: number;
    })[];
    countries: (Counted & {
        country: string;
        errors: number;
    })[];
    integrations: (Counted & {
        integration: string;
        errors: number;
    })[];
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
    anomalies: {
        t: string;
        metric: "requests" | "tokens" | "errorRate" | "p95LatencyMs";
        observed: number;
        expected: number;
        score: number;
        direction: "up" | "down";
    }[];
    insights: Record<string, unknown>[];
}
export declare class Tollgate {
    private readonly base;
    private readonly key;
    private readonly maxBatch;
    private readonly maxQueued;
    private readonly onError;
    private readonly fetch;
    private queue;
    /** The batch being sent, kept with its key until Tollgate answers for it. */
    private inFlight;
    private timer;
    private sending;
    /** Not before this time (ms): Tollgate asked to wait, or could not be reached. */
    private holdUntil;
    /** Failed sends in a row (the wait before the next grows with them). */
    private failures;
    constructor(options: TollgateOptions);
    private call;
    private static error;
    /** The answer's JSON, typed: `T` on a 200, else a {@link TollgateError}. */
    private data;
    private decision;
    /** Whether a call of `cost` would pass now; takes nothing (`POST /api/v1/check`). */
    check(opts?: {
        cost?: number;
    } & AskFor): Promise<Decision>;
    /** The product description's `canMakeAPICall(tenantId)`: the tenant is the key's. */
    canMakeAPICall(opts?: {
        cost?: number;
    }): Promise<boolean>;
    /**
     * Decides and takes `cost` calls at once, recording the request (`POST /api/v1/authorize`);
     * with `estimateTokens`, reserves that many tokens of a token quota until a record naming the
     * answer's `reservationId` settles them.
     */
    authorize(opts?: {
        cost?: number;
        endpoint?: string;
        method?: string;
    } & AskFor): Promise<Decision>;
    /**
     * Queues records for `POST /api/v1/usage`; never blocks, never throws. A
     * record without an `endpoint` is dropped at once (Tollgate would refuse
     * it), and said; past `maxQueued` the oldest go, said too.
     */
    recordUsage(records: UsageRecord | UsageRecord[]): void;
    /** Records queued and not yet taken. */
    get pending(): number;
    /** Sends everything queued; resolves when Tollgate took it or refused it for now. */
    flush(): Promise<void>;
    private sendAll;
    /** Waits before the next send: what Tollgate asked, else 1 s doubling with each failure in a row, up to a minute. */
    private wait;
    /** The tenant's calls and tokens this period, and each limit's use (`GET /api/billing/usage`). */
    usage(): Promise<BillingUsage>;
    /** Usage analytics (`GET /api/billing/api-usage`, e.g. `{ range: "month" }`). */
    apiUsage(query?: ApiUsageQuery): Promise<ApiUsageReport>;
    /** Sends what is queued and stops the timer. */
    close(): Promise<void>;
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
export declare function keyOf(headers: {
    get(name: string): string | null;
}): string | null;
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
export declare function express(options: MiddlewareOptions): ((req: NodeRequest, res: NodeResponse, next: (e?: unknown) => void) => Promise<void>) & {
    close: () => Promise<void>;
};
/**
 * Wraps a Next.js route handler (`export const POST = withTollgate(handler, {...})`):
 * the same as {@link express}, on the web's `Request` and `Response`. The
 * handler reports tokens with its second argument's `tokens({...})`.
 */
export declare function withTollgate(handler: (req: Request, usage: Usage) => Promise<Response> | Response, options: MiddlewareOptions): ((req: Request) => Promise<Response>) & {
    close: () => Promise<void>;
};
/**
 * Next.js edge middleware (`middleware.ts`): answers a refusal itself and
 * returns `undefined` to let the request go on (Next then continues). It
 * checks only; record usage in the route handlers ({@link withTollgate}).
 */
export declare function nextMiddleware(options: MiddlewareOptions): ((req: Request) => Promise<Response | undefined>) & {
    close: () => Promise<void>;
};
export {};
