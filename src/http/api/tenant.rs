//! Tenant routes: enforcement (`/api/v1/authorize`, `/api/v1/check`),
//! ingestion (`/api/v1/usage`), billing reads and the chat bot.

use crate::quota::scoped::Ask;
use std::sync::Arc;
use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::{batch::Position, types::*};
use crate::clock::{fmt_ms, nanos_to_utc, MsText};
use crate::http::wire::error::ApiError;
use crate::http::wire::extract::{ApiJson, OptionalJson, TenantAuth};
use crate::http::wire::json::json_of;
use crate::http::AppState;
use crate::metering::request::check_method;
use crate::metering::{self, Refused};
use crate::model::{CompactString, RecordExtra, UsageRecord};

use crate::quota::TenantState;
use crate::usage::queue::Refusal;
use crate::usage::Queued;

fn opt_text<S: Default + std::ops::Deref<Target = str>>(
    field: &str,
    v: Option<S>,
    max: usize,
) -> Result<S, ApiError> {
    let v = v.unwrap_or_default();
    check_text(field, &v, max).map_err(ApiError::invalid)?;
    Ok(v)
}

/// `POST /api/v1/authorize`: atomic check-and-consume.
#[utoipa::path(
    post, path = "/api/v1/authorize", tag = "enforcement", security(("tenantKey" = []), ("tenantKeyHeader" = [])),
    request_body(content = AuthorizeRequest, description = "optional; every field has a default"),
    responses((status = 200, description = "allowed: the calls are consumed", body = AuthorizeResponse, headers(("X-RateLimit-Limit" = u64), ("X-RateLimit-Remaining" = u64), ("X-RateLimit-Reset" = String), ("RateLimit" = String), ("RateLimit-Policy" = String))),
        (status = 401, description = "no or unknown key", body = crate::http::wire::error::ErrorBody), (status = 403, description = "tenant suspended", body = crate::http::wire::error::ErrorBody), (status = 429, description = "rate_limited, quota_exceeded or token_quota_exceeded; Retry-After set", body = crate::http::wire::error::ErrorBody), (status = 422, description = "invalid field", body = crate::http::wire::error::ErrorBody))
)]
pub(crate) async fn authorize(
    auth: TenantAuth,
    body: OptionalJson<AuthorizeRequest>,
    http: actix_web::HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    // Borrowed from the request: a `web::Data` extracted would count the
    // state's `Arc` up and down on a cache line every worker shares.
    let st: &AppState = crate::http::wire::extract::state(&http)?;
    let req = body.0;
    let cost = check_count("cost", req.cost.unwrap_or(1)).map_err(ApiError::invalid)?;
    if cost == 0 {
        return Err(ApiError::invalid("cost must be at least 1"));
    }
    let tokens = tokens_to_reserve(auth.tenant(), req.estimate_tokens)?;
    let spend = spend_of(auth.tenant(), req.estimate_usd)?;
    let model = req.model.unwrap_or_default();
    check_text("model", &model, 128).map_err(ApiError::invalid)?;
    let endpoint = req
        .endpoint
        .unwrap_or_else(|| CompactString::const_new("/api/v1/authorize"));
    check_text("endpoint", &endpoint, 256).map_err(ApiError::invalid)?;
    let method =
        check_method(req.method.as_deref().unwrap_or("POST")).map_err(ApiError::invalid)?;
    let user_id = opt_text("userId", req.user_id, 128)?;
    let bot_id = opt_text("botId", req.bot_id, 128)?;
    let api_version = opt_version(req.api_version).map_err(ApiError::invalid)?;
    let mut country = opt_country(req.country.as_deref()).map_err(ApiError::invalid)?;
    let client_ip = opt_ip(req.client_ip.as_deref()).map_err(ApiError::invalid)?;
    if country.is_empty() && st.metering.geo.is_some() {
        country = match client_ip {
            Some(ip) => st.metering.country_of_ip(ip),
            None => st.country_of(&http),
        };
    }

    let mut reservation = None;
    let d = if req.dry_run {
        let ask = Ask {
            user: &user_id,
            bot: &bot_id,
            model: &model,
            spend,
            ..Ask::default()
        };
        let d = auth.check(&st.metering, cost, tokens, ask).await;
        if !d.allowed() {
            if let Some(refused) = Refused::of(&d, &auth.tenant().plan_now().plan.id) {
                return Err(refused.into());
            }
        }
        d
    } else {
        let record = UsageRecord {
            endpoint,
            method,
            model,
            extra: RecordExtra {
                user_id,
                bot_id,
                api_version,
                country,
                ..Default::default()
            }
            .boxed(),
            ..Default::default()
        };
        let mut meter = auth
            .meter_spending(&*st.metering, cost, tokens, spend, record, started)
            .await
            .allowed()?;
        let d = *meter.decision();
        // Kept until a record settles it, or its time to live ends.
        if let Some(r) = meter.take_reservation() {
            let ttl_ms = auth.tenant().plan_now().plan.reservation_ttl_s() * 1000;
            let n = (r.tokens(), r.spend());
            let expires = d.now.millis().0.saturating_add(ttl_ms as i64);
            reservation = Some((st.metering.reservations.keep(r, expires), n));
        }
        meter.served(200, None);
        d
    };
    // The plan as it is now, without counting its `Arc` (shared by
    // every worker) up and down.
    let plan = auth.tenant().plan_now();
    Ok(json_of(
        HttpResponse::Ok(),
        &AuthorizeResponse {
            allowed: true,
            limit: d.calls_limit,
            used: d.calls_used,
            remaining: d.calls_remaining(),
            reset_at: MsText::of(d.period.end()),
            plan: &plan.plan.id,
            reservation_id: reservation.as_ref().map(|(id, _)| id.as_str()),
            reserved_tokens: reservation.as_ref().map(|(_, n)| n.0),
            reserved_usd: reservation.as_ref().map(|(_, n)| n.1),
        },
    ))
}

/// The micro-dollars an authorize reserves of the tenant's spend limits:
/// its `estimateUsd`, else the plan's `reserveUsd` (when the tenant has
/// limits of SPEC §12).
fn spend_of(tenant: &TenantState, usd: Option<f64>) -> Result<u64, ApiError> {
    match usd {
        Some(usd) if !usd.is_finite() || !(0.0..=1e6).contains(&usd) => Err(ApiError::invalid(
            "estimateUsd must be a number from 0 to 1000000 (US dollars)",
        )),
        Some(usd) => Ok(crate::quota::scoped::micro_usd(usd)),
        None if tenant.scoped().is_some() => Ok(tenant.plan_now().plan.reserve_usd.unwrap_or(0)),
        None => Ok(0),
    }
}

/// The tokens an authorize reserves: its `estimateTokens`, else the
/// plan's `reserveTokens` - when the plan has a token quota.
fn tokens_to_reserve(tenant: &TenantState, estimate: Option<u64>) -> Result<u64, ApiError> {
    if let Some(n) = estimate {
        check_count("estimateTokens", n).map_err(ApiError::invalid)?;
    }
    let plan = tenant.plan_now();
    if plan.plan.monthly_tokens.is_none() && tenant.scoped().is_none() {
        return Ok(0);
    }
    Ok(estimate.or(plan.plan.reserve_tokens).unwrap_or(0))
}

/// `POST /api/v1/check`: would a request of `cost` pass? Consumes nothing.
#[utoipa::path(
    post, path = "/api/v1/check", tag = "enforcement", security(("tenantKey" = []), ("tenantKeyHeader" = [])),
    request_body(content = AuthorizeRequest, description = "optional"),
    responses((status = 200, description = "whether `cost` calls would be allowed; nothing consumed", body = CheckResponse, headers(("X-RateLimit-Limit" = u64), ("X-RateLimit-Remaining" = u64), ("X-RateLimit-Reset" = String), ("RateLimit" = String), ("RateLimit-Policy" = String))), (status = 401, description = "no or unknown key", body = crate::http::wire::error::ErrorBody))
)]
pub(crate) async fn check(
    auth: TenantAuth,
    body: OptionalJson<AuthorizeRequest>,
    http: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    // Borrowed, as `authorize` borrows it.
    let st: &AppState = crate::http::wire::extract::state(&http)?;
    let req = body.0;
    let cost = check_count("cost", req.cost.unwrap_or(1)).map_err(ApiError::invalid)?;
    if cost == 0 {
        return Err(ApiError::invalid("cost must be at least 1"));
    }
    let tokens = tokens_to_reserve(auth.tenant(), req.estimate_tokens)?;
    let spend = spend_of(auth.tenant(), req.estimate_usd)?;
    let user = opt_text("userId", req.user_id, 128)?;
    let bot = opt_text("botId", req.bot_id, 128)?;
    let model = req.model.unwrap_or_default();
    check_text("model", &model, 128).map_err(ApiError::invalid)?;
    let ask = Ask {
        user: &user,
        bot: &bot,
        model: &model,
        spend,
        ..Ask::default()
    };
    let d = auth.check(&st.metering, cost, tokens, ask).await;
    let reason = metering::Refusal::of(d.outcome).map(metering::Refusal::code);
    let plan = auth.tenant().plan_now();
    Ok(json_of(
        HttpResponse::Ok(),
        &CheckResponse {
            is_allowed: d.allowed(),
            allowed: d.allowed(),
            limit: d.calls_limit,
            used: d.calls_used,
            remaining: d.calls_remaining(),
            reset_at: MsText::of(d.period.end()),
            plan: &plan.plan.id,
            reason,
        },
    ))
}

/// `POST /api/v1/usage`: one record or an array of up to 10,000, as JSON,
/// or NDJSON (a record per line, parsed as it arrives). Parsed in one pass
/// ([`super::batch`]); the whole
/// body is checked before any record is taken, and the batch is taken whole
/// or refused whole: a 202 means every record will be persisted; a 429
/// (the plan's ingest rate) or 503 (no room, or the store failing) means
/// none was taken and the client should retry after `Retry-After`.
#[utoipa::path(
    post, path = "/api/v1/usage", tag = "enforcement", security(("tenantKey" = []), ("tenantKeyHeader" = [])),
    request_body(content((crate::http::api::types::UsageBody = "application/json"), (String = "application/x-ndjson")), description = "one record or an array of up to 10,000 (JSON), or up to 10,000 records one per line (NDJSON)"),
    responses((status = 202, description = "every record taken; each will be persisted", body = crate::http::api::types::Accepted), (status = 401, description = "no or unknown key", body = crate::http::wire::error::ErrorBody), (status = 403, description = "tenant suspended, or a record names another tenant", body = crate::http::wire::error::ErrorBody), (status = 413, description = "body over the cap", body = crate::http::wire::error::ErrorBody), (status = 415, description = "neither JSON nor NDJSON", body = crate::http::wire::error::ErrorBody), (status = 422, description = "invalid record", body = crate::http::wire::error::ErrorBody), (status = 429, description = "ingest_rate_limited: over the plan's records per second; nothing taken; Retry-After set", body = crate::http::wire::error::ErrorBody), (status = 503, description = "ingest_queue_full or store_unavailable: nothing taken; Retry-After set", body = crate::http::wire::error::ErrorBody))
)]
pub(crate) async fn ingest(
    st: web::Data<AppState>,
    auth: TenantAuth,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let ndjson = match body_format(&req) {
        Some(f) => f,
        None => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as Content-Type: application/json (a record or an array of them) or application/x-ndjson (a record per line)",
            ))
        }
    };
    let tenant = auth.tenant();
    if tenant.is_suspended() {
        return Err(Refused::suspended().into());
    }
    let key = super::claimed::idempotency_key(&req)?;
    let now_ns = st.metering.clock.now_nanos();
    let now = nanos_to_utc(now_ns);
    // Room for the batch as its size suggests (about 130 bytes a record in
    // the body), so that the records are not moved as the vector grows.
    let declared = crate::http::wire::extract::declared_length(&req);
    let mut records = Vec::with_capacity(declared.map_or(16, |n| {
        (n / 128).min(crate::model::MAX_BATCH_RECORDS as usize)
    }));
    // The reservations the records settle: (record, id), taken up once
    // the batch is taken.
    let mut settles: Vec<(usize, String)> = Vec::new();
    // Each record's id, empty for none (all empty: no record has one).
    let mut ids: Vec<String> = Vec::new();
    let mut each = |at: Option<Position>, mut input: UsageInput<'_>| -> Result<(), ApiError> {
        let at = |m: String| match at {
            Some(p) => ApiError::invalid(format!("{p}: {m}")),
            None => ApiError::invalid(m),
        };
        if let Some(id) = input.id.take() {
            super::claimed::check_id(&id).map_err(at)?;
            ids.resize(records.len(), String::new());
            ids.push(id.to_string());
        }
        if let Some(id) = input.reservation_id.take() {
            if id.is_empty() || id.len() > 64 {
                return Err(at("reservationId must be 1 to 64 bytes".into()));
            }
            settles.push((records.len(), id.to_string()));
        }
        if input.tenant_id.as_deref().is_some_and(|t| t != &*tenant.id) {
            return Err(ApiError::forbidden(
                "tenant_mismatch",
                "a key can report usage for its own tenant only",
            ));
        }
        let client_ip = opt_ip(input.client_ip.as_deref()).map_err(at)?;
        let mut r = usage_record(input, now).map_err(at)?;
        // Made by the key that reports it.
        r.key_id = auth.key_id().clone();
        if let (true, Some(ip)) = (r.extra().country.is_empty(), client_ip) {
            let country = st.metering.country_of_ip(ip);
            if !country.is_empty() {
                r.extra_mut().country = country;
            }
        }
        let priced = st.metering.price(&r.model, &r.token_counts(), r.ts_ms);
        r.set_cost(priced);
        // Queued as it is parsed: the vector is handed to the flusher as
        // it is, with no second copy of the batch.
        records.push(Queued {
            tenant: tenant.clone(),
            record: r,
        });
        Ok(())
    };
    // A batch that finds the queue full may wait this long for room, from
    // when its body has arrived.
    let deadline = if ndjson {
        super::batch::ndjson(
            payload.into_inner(),
            declared,
            st.max_body_bytes,
            st.body_timeout,
            &mut each,
        )
        .await?;
        tokio::time::Instant::now() + st.ingest_wait
    } else {
        let body = crate::http::wire::extract::read_body(
            payload.into_inner(),
            declared,
            st.max_body_bytes,
            st.body_timeout,
        )
        .await?;
        let deadline = tokio::time::Instant::now() + st.ingest_wait;
        // Near a full queue, a batch is counted (a scan, no records
        // built) and waits for room before its parse, leaving the CPU to
        // the flusher that makes it.
        if st.metering.queue.room() < crate::model::MAX_BATCH_RECORDS as usize {
            if let Some(n) = super::batch::count(&body) {
                room_for_batch(&st, n, deadline).await?;
            }
        }
        super::batch::json(&body, &mut each)?;
        deadline
    };
    if !key.is_empty() || !ids.is_empty() {
        ids.resize(records.len(), String::new());
        let batch = super::claimed::Batch {
            records,
            ids,
            key,
            settles,
        };
        return super::claimed::ingest(&st, tenant, batch, now_ns).await;
    }
    let total = records.len();
    room_for_batch(&st, total, deadline).await?;
    admit_batch(&st, tenant, total, now_ns)?;
    let admission = st
        .metering
        .queue
        .admit_by(total, deadline)
        .await
        .map_err(|refusal| {
            tenant.refund_records(total as u64);
            refusal_error(refusal)
        })?;
    // A record naming its authorize's reservation settles it: its tokens
    // replace the ones reserved (spent from them, only what passes them
    // counted past the quota). An id unknown here - expired, another
    // instance's - settles nothing: the record counts as reported usage.
    let mut settles = settles.into_iter().peekable();
    for (i, q) in records.iter().enumerate() {
        let r = &q.record;
        let reservation = match settles.next_if(|(at, _)| *at == i) {
            Some((_, id)) => st.metering.reservations.take(&tenant.id, &id),
            None => None,
        };
        tenant.count_record(now_ns, r, reservation);
    }
    if !admission.send(records) {
        // Only when the flusher is gone: the server is stopping.
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is stopping; retry against another instance",
        )
        .retry_after(1));
    }
    // `dropped` is always 0 (a batch is taken whole); kept for older clients.
    Ok(HttpResponse::Accepted().json(serde_json::json!({
        "accepted": total,
        "dropped": 0,
        "duplicates": 0,
    })))
}

/// `Some(true)` for NDJSON (`application/x-ndjson`, `application/jsonl`),
/// `Some(false)` for JSON, `None` for anything else.
fn body_format(req: &HttpRequest) -> Option<bool> {
    let m = crate::http::wire::extract::mime(req)?;
    let ndjson = [
        "application/x-ndjson",
        "application/jsonl",
        "application/x-jsonlines",
    ];
    if ndjson.iter().any(|t| m.eq_ignore_ascii_case(t)) {
        return Some(true);
    }
    crate::http::wire::extract::is_json_mime(m).then_some(false)
}

/// The answer to a batch the queue did not admit.
fn refusal_error(refusal: Refusal) -> ApiError {
    match refusal {
        Refusal::Full => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ingest_queue_full",
            "the usage queue has no room for this batch right now; nothing was taken - retry it",
        )
        .retry_after(1),
        Refusal::TooLarge { capacity } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "this server takes at most {capacity} records per request ([flush] queue_capacity / 2)"
            ),
        ),
    }
}

/// Waits until the queue has room for a batch of `n`, until `deadline`;
/// then 503 `ingest_queue_full` (counted). A failing store does not wait:
/// [`admit_batch`] answers for it.
async fn room_for_batch(
    st: &AppState,
    n: usize,
    deadline: tokio::time::Instant,
) -> Result<(), ApiError> {
    if st.metering.stats.store_failure().is_some() || st.metering.queue.room_by(n, deadline).await {
        return Ok(());
    }
    st.metering.queue.refuse_if_full(n).map_err(refusal_error)
}

/// The checks a batch passes before it may take queue room: a working
/// store, and the plan's ingest rate.
pub(super) fn admit_batch(
    st: &AppState,
    tenant: &TenantState,
    n: usize,
    now: crate::clock::Nanos,
) -> Result<(), ApiError> {
    use std::sync::atomic::Ordering::Relaxed;
    if let Some(why) = st.metering.stats.store_failure() {
        st.metering
            .stats
            .refused_store_failing
            .fetch_add(n as u64, Relaxed);
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            format!("usage cannot be persisted right now ({why}); nothing was taken - retry it"),
        )
        .retry_after(5));
    }
    if let Err(wait_ns) = tenant.admit_records(n as u64, now) {
        st.metering
            .stats
            .refused_rate_limited
            .fetch_add(n as u64, Relaxed);
        let secs = wait_ns.div_ceil(1_000_000_000).max(1);
        let rate = tenant.plan().plan.effective_ingest_rate();
        let (records, per) = rate.map_or((0, 0), |r| (r.records, r.per_seconds));
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "ingest_rate_limited",
            format!(
                "over the plan's ingest rate of {records} records per {per} s; nothing was taken"
            ),
        )
        .retry_after(secs));
    }
    Ok(())
}

/// `GET /api/billing/usage`: the period's calls and tokens against the plan.
#[utoipa::path(
    get, path = "/api/billing/usage", tag = "billing", security(("tenantKey" = []), ("tenantKeyHeader" = [])),
    responses((status = 200, description = "this period's calls and tokens against the plan", body = BillingUsage), (status = 401, description = "no or unknown key", body = crate::http::wire::error::ErrorBody))
)]
pub(crate) async fn billing_usage(
    st: web::Data<AppState>,
    auth: TenantAuth,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(usage_view(&st, auth.tenant()).await))
}

/// The period's calls and tokens against the plan: with `[cluster]`, the
/// fleet's figures as Redis has them (the same on every instance), else
/// (or while Redis cannot answer) this instance's counters.
pub(crate) async fn usage_view(st: &AppState, tenant: &Arc<TenantState>) -> BillingUsage {
    let mut decision = tenant.snapshot(st.metering.clock.now_nanos());
    if let Some(cluster) = &st.metering.cluster {
        if let Some((calls, tokens)) = cluster.fleet_usage(tenant).await {
            decision.calls_used = calls;
            decision.tokens_used = tokens;
        }
    }
    let mut view = BillingUsage::new(tenant.plan().plan.clone(), &decision);
    if let Some(scoped) = tenant.scoped() {
        use crate::http::api::types::LimitStanding;
        let now_ms = decision.now.millis().0;
        let mut standing = scoped.standing(now_ms);
        // Shared by a fleet: the figures are the fleet's (read, not taken).
        if let Some(cluster) = st.metering.cluster.as_deref().filter(|_| scoped.shared()) {
            LimitStanding::nearest(&mut standing);
            let mut fleet = standing.clone();
            let asked = scoped.counted_standing(&mut fleet, now_ms);
            if !asked.items.is_empty() {
                if let Some(a) = cluster.decide_limits(&asked, false).await {
                    crate::quota::scoped::fleet_standing(&asked, &a.counts, now_ms, &mut fleet);
                    standing = fleet;
                }
            }
        }
        view.limits.extend(LimitStanding::all(standing, now_ms));
    }
    view
}

/// `GET /api/billing/subscription`.
#[utoipa::path(
    get, path = "/api/billing/subscription", tag = "billing", security(("tenantKey" = []), ("tenantKeyHeader" = [])),
    responses((status = 200, body = SubscriptionView), (status = 401, description = "no or unknown key", body = crate::http::wire::error::ErrorBody))
)]
pub(crate) async fn billing_subscription(
    st: web::Data<AppState>,
    auth: TenantAuth,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(subscription_view(&st, &auth.tenant().id)?))
}

pub(crate) fn subscription_view(
    st: &AppState,
    tenant_id: &str,
) -> Result<SubscriptionView, ApiError> {
    let tenant = st
        .metering
        .registry
        .tenant(tenant_id)?
        .ok_or_else(|| ApiError::not_found("tenant not found"))?;
    let plan = st
        .metering
        .registry
        .plan(&tenant.plan_id)
        .ok_or_else(|| ApiError::not_found("plan not found"))?;
    let period = crate::quota::period::Period::containing(st.metering.clock.now());
    Ok(SubscriptionView {
        tenant_name: tenant.name,
        tenant_created_at: fmt_ms(tenant.created_at),
        tenant_id: tenant.id,
        plan: (&plan).into(),
        status: tenant.status.into(),
        current_period_start: fmt_ms(period.start()),
        current_period_end: fmt_ms(period.end()),
    })
}

/// `POST /api/chat`: enforced like every protected route, answered by the
/// configured upstream or the echo bot, tracked with its tokens and cost.
/// An upstream failure does not count against the quota.
#[utoipa::path(
    post, path = "/api/chat", tag = "chat", security(("tenantKey" = []), ("tenantKeyHeader" = [])),
    request_body = ChatRequest,
    responses((status = 200, description = "the bot's reply, metered", body = ChatResponse), (status = 401, description = "no or unknown key", body = crate::http::wire::error::ErrorBody), (status = 429, description = "over a limit", body = crate::http::wire::error::ErrorBody), (status = 502, description = "upstream failed", body = crate::http::wire::error::ErrorBody), (status = 504, description = "upstream timed out", body = crate::http::wire::error::ErrorBody))
)]
pub(crate) async fn chat(
    st: web::Data<AppState>,
    auth: TenantAuth,
    body: ApiJson<ChatRequest>,
    http: actix_web::HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let req = body.0;
    let message = req
        .message
        .ok_or_else(|| ApiError::invalid("message is required"))?;
    if message.trim().is_empty() {
        return Err(ApiError::invalid("message must not be empty"));
    }
    if message.len() > 32 * 1024 {
        return Err(ApiError::invalid("message must be at most 32 KiB"));
    }
    let bot_id = req
        .bot_id
        .ok_or_else(|| ApiError::invalid("botId is required"))?;
    check_text("botId", &bot_id, 128).map_err(ApiError::invalid)?;
    let user_id = opt_text("userId", req.user_id, 128)?;
    let model = req.model.unwrap_or_else(|| st.default_model.clone());
    check_text("model", &model, 128).map_err(ApiError::invalid)?;

    let record = UsageRecord {
        endpoint: "/api/chat".into(),
        method: "POST".into(),
        model: model.as_str().into(),
        retried: crate::http::wire::extract::retried(&http),
        extra: RecordExtra {
            user_id: user_id.into(),
            bot_id: bot_id.into(),
            country: st.country_of(&http),
            ..Default::default()
        }
        .boxed(),
        ..Default::default()
    };
    // The message's tokens and the plan's `reserveTokens` for the reply,
    // reserved until the answer says what was used.
    let prompt = crate::metering::tokens::count_tokens(&message);
    let output = auth.tenant().plan_now().plan.reserve_tokens.unwrap_or(0);
    let reserve = prompt.saturating_add(output);
    let spend = st
        .metering
        .spend_estimate(auth.tenant(), &model, prompt, output);
    let meter = auth
        .meter_spending(&*st.metering, 1, reserve, spend, record, started)
        .await
        .allowed()?;
    match st.chat.complete(&message, &model).await {
        Ok(reply) => {
            let counts = reply.counts;
            let cost = meter.served(200, Some((counts, Some(reply.model.clone()))));
            auth.shows_now(&st.metering);
            Ok(HttpResponse::Ok().json(ChatResponse {
                reply: reply.reply,
                model: reply.model,
                usage: ChatUsage {
                    prompt_tokens: counts.prompt,
                    completion_tokens: counts.completion,
                    total_tokens: counts.total,
                },
                cost_usd: crate::http::wire::money::Money(cost),
            }))
        }
        Err(e) => {
            let (status, code) = match e {
                crate::http::api::chat::ChatError::Timeout => {
                    (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout")
                }
                crate::http::api::chat::ChatError::Upstream(_) => {
                    (StatusCode::BAD_GATEWAY, "upstream_error")
                }
            };
            tracing::warn!(error = %e, tenant = %auth.tenant().id, "chat upstream failed");
            meter.failed(status.as_u16());
            auth.shows_now(&st.metering);
            Err(ApiError::new(status, code, e.to_string()))
        }
    }
}
