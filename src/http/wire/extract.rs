//! Extractors that turn what a client sends into typed values or a JSON error:
//! [`ApiJson`] (bodies), [`TenantAuth`] (tenant keys), [`Admin`] (the admin token).

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::http::AppState;
use crate::metering::{Meter, Metering, Refusal};
use crate::quota::{Decision, TenantState};

/// A JSON body, read up to the configured cap and parsed. Errors: 413 over
/// the cap, 415 for another content type, 400 for malformed JSON, 422 for
/// JSON of the wrong shape. An empty body reads as `T::default()` when
/// `OPTIONAL` (routes whose every field has a default).
pub(crate) struct ApiJson<T, const OPTIONAL: bool = false>(pub T);

/// A body that may be left out entirely.
pub(crate) type OptionalJson<T> = ApiJson<T, true>;

/// The application's state, borrowed from the request.
pub(crate) fn state(req: &HttpRequest) -> Result<&web::Data<AppState>, ApiError> {
    req.app_data::<web::Data<AppState>>().ok_or_else(|| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "state missing",
        )
    })
}

/// The request's media type, without parameters, as sent (media types
/// compare case-insensitively: no lower-cased copy is made for it).
pub(crate) fn mime(req: &HttpRequest) -> Option<&str> {
    let ct = req.headers().get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(ct.split(';').next()?.trim())
}

/// `application/json` or an `application/...+json` type, in any case.
pub(crate) fn is_json_mime(mime: &str) -> bool {
    let m = mime.as_bytes();
    let starts = |p: &[u8]| m.len() >= p.len() && m[..p.len()].eq_ignore_ascii_case(p);
    let ends = |p: &[u8]| m.len() >= p.len() && m[m.len() - p.len()..].eq_ignore_ascii_case(p);
    mime.eq_ignore_ascii_case("application/json") || (starts(b"application/") && ends(b"+json"))
}

fn is_json(req: &HttpRequest) -> bool {
    mime(req).is_some_and(is_json_mime)
}

/// Reads the whole body, up to `limit` bytes and within `timeout`: a body
/// that stops arriving (one byte of a declared hundred, say) is answered
/// 408 instead of holding the connection forever.
pub(crate) async fn read_body(
    payload: Payload,
    declared: Option<usize>,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::with_capacity(declared.unwrap_or(0).min(limit));
    stream_body(payload, declared, limit, timeout, |chunk| {
        body.extend_from_slice(chunk);
        Ok(())
    })
    .await?;
    Ok(body)
}

/// The whole body as [`read_body`] reads it, as `Bytes`: a body that
/// arrives in one chunk (a small one usually does) is that chunk, not
/// copied.
pub(crate) async fn read_bytes(
    payload: Payload,
    declared: Option<usize>,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<Bytes, ApiError> {
    let mut first = Bytes::new();
    let mut more: Option<Vec<u8>> = None;
    let read = read_chunks(payload, declared, limit, |chunk| {
        match &mut more {
            Some(body) => body.extend_from_slice(&chunk),
            None if first.is_empty() => first = chunk,
            None => {
                let mut body = Vec::with_capacity(declared.unwrap_or(0).min(limit));
                body.extend_from_slice(&first);
                body.extend_from_slice(&chunk);
                more = Some(body);
            }
        }
        Ok(())
    });
    within(timeout, read).await?;
    Ok(more.map_or(first, Bytes::from))
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the request body is over the {limit}-byte cap"),
    )
}

fn unreadable(e: impl std::fmt::Display) -> ApiError {
    ApiError::bad_json(format!("could not read the body: {e}"))
}

/// Hands the body to `sink` chunk by chunk as it arrives, with the caps of
/// [`read_body`]: 413 over `limit` bytes (declared or received), 408 when
/// it does not arrive within `timeout`.
pub(crate) async fn stream_body(
    payload: Payload,
    declared: Option<usize>,
    limit: usize,
    timeout: std::time::Duration,
    mut sink: impl FnMut(&[u8]) -> Result<(), ApiError>,
) -> Result<(), ApiError> {
    within(
        timeout,
        read_chunks(payload, declared, limit, |chunk| sink(&chunk)),
    )
    .await
}

/// `read`, or 408 when the body has not arrived within `timeout`.
///
/// A body already on its way in costs no timer: actix-web calls the
/// handler before it hands over the body it read with the head, so the
/// first read waits once, then finds the body when polled again in the
/// same turn of the connection. Only a body still missing after that
/// starts the clock (a timer armed and cleared per request cost more
/// than the rest of reading the body: 1.5 % of the server's CPU).
async fn within(
    timeout: std::time::Duration,
    read: impl Future<Output = Result<(), ApiError>>,
) -> Result<(), ApiError> {
    let mut read = std::pin::pin!(read);
    let mut waited = false;
    let early = std::future::poll_fn(|cx| match read.as_mut().poll(cx) {
        Poll::Ready(done) => Poll::Ready(Some(done)),
        Poll::Pending if !waited => {
            waited = true;
            // Polled again at once, body or not: a body that never comes
            // still meets the timer below.
            cx.waker().wake_by_ref();
            Poll::Pending
        }
        Poll::Pending => Poll::Ready(None),
    })
    .await;
    if let Some(done) = early {
        return done;
    }
    match tokio::time::timeout(timeout, read).await {
        Ok(done) => done,
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "the request body did not arrive within {} ms",
                timeout.as_millis()
            ),
        )),
    }
}

async fn read_chunks(
    mut payload: Payload,
    declared: Option<usize>,
    limit: usize,
    mut sink: impl FnMut(Bytes) -> Result<(), ApiError>,
) -> Result<(), ApiError> {
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    let mut received = 0;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(unreadable)?;
        received += chunk.len();
        if received > limit {
            return Err(too_large(limit));
        }
        sink(chunk)?;
    }
    Ok(())
}

/// A body of any type, read up to the configured cap (413 over it).
pub(crate) struct CappedBody(pub Vec<u8>);

impl FromRequest for CappedBody {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limits = state(req).map(|s| (s.max_body_bytes, s.body_timeout));
        let declared = declared_length(req);
        let payload = payload.take();
        Box::pin(async move {
            let (limit, timeout) = limits?;
            Ok(CappedBody(
                read_body(payload, declared, limit, timeout).await?,
            ))
        })
    }
}

/// The body's `Content-Length`, when given.
pub(crate) fn declared_length(req: &HttpRequest) -> Option<usize> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Parses JSON, telling malformed input (400) from the wrong shape (422,
/// naming the field in words: [`super::said`]).
pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    // Read plainly (no allocation beyond the value's); only a body of the
    // wrong shape is read again to say where.
    serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            ApiError::invalid(super::said::words_of::<T>(body, &e))
        }
        _ => ApiError::bad_json(format!("malformed JSON: {e}")),
    })
}

impl<T: DeserializeOwned + Default + 'static, const OPTIONAL: bool> FromRequest
    for ApiJson<T, OPTIONAL>
{
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limits = state(req).map(|s| (s.max_body_bytes, s.body_timeout));
        let declared = declared_length(req);
        let json = is_json(req);
        let has_type = req.headers().contains_key(header::CONTENT_TYPE);
        let payload = payload.take();
        Box::pin(async move {
            let (limit, timeout) = limits?;
            if OPTIONAL && declared == Some(0) && !has_type {
                return Ok(ApiJson(T::default()));
            }
            let body = read_bytes(payload, declared, limit, timeout).await?;
            if OPTIONAL && body.is_empty() && !has_type {
                return Ok(ApiJson(T::default()));
            }
            if !json {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "send the body as Content-Type: application/json",
                ));
            }
            if OPTIONAL && body.iter().all(u8::is_ascii_whitespace) {
                return Ok(ApiJson(T::default()));
            }
            Ok(ApiJson(parse_json(&body)?))
        })
    }
}

/// What the response middleware needs to add the rate-limit headers. It
/// exists only while the request holds one of its tenant's places in
/// flight, and gives the place back when the last holder - the request, or
/// a gateway response still streaming - lets go.
pub(crate) struct TenantCtx {
    pub tenant: Arc<TenantState>,
    /// The id of the key the request presented.
    pub key_id: crate::model::CompactString,
    decision: Cell<Option<Decision>>,
    /// The tenant's other limits (SPEC §12) the decision met.
    views: std::cell::RefCell<crate::quota::scoped::Views>,
}

impl TenantCtx {
    pub(crate) fn decision(&self) -> Option<Decision> {
        self.decision.get()
    }

    /// The other limits the decision met (empty for most tenants).
    pub(crate) fn views(&self) -> std::cell::Ref<'_, crate::quota::scoped::Views> {
        self.views.borrow()
    }
}

impl Drop for TenantCtx {
    fn drop(&mut self) {
        self.tenant.leave();
    }
}

/// An authenticated tenant (`Authorization: Bearer <key>` or `X-API-Key`).
pub(crate) struct TenantAuth {
    ctx: Rc<TenantCtx>,
}

impl TenantAuth {
    /// The tenant (held once, by the request's context).
    pub(crate) fn tenant(&self) -> &Arc<TenantState> {
        &self.ctx.tenant
    }

    /// The id of the key the request presented.
    pub(crate) fn key_id(&self) -> &crate::model::CompactString {
        &self.ctx.key_id
    }

    /// Whether `cost` calls (and `tokens` reserved) would pass now; takes
    /// nothing (a dry run, `/api/v1/check`).
    /// `ask`: the request's end user, bot and model and the spend it
    /// would reserve, for the tenant's other limits (SPEC §12).
    pub(crate) async fn check(
        &self,
        m: &Metering,
        cost: u64,
        tokens: u64,
        ask: crate::quota::scoped::Ask<'_>,
    ) -> Decision {
        let now = m.clock.now_nanos();
        let mut d = m.check(self.tenant(), cost, tokens, now);
        if let (true, Some(scoped)) = (d.allowed(), self.tenant().scoped()) {
            let ask = crate::quota::scoped::Ask {
                key_id: &self.ctx.key_id,
                calls: cost,
                tokens,
                ..ask
            };
            let now_ms = now.millis().0;
            let mut checked = scoped.check(&ask, now_ms).map_err(Some);
            // A fleet's limits are checked where they are counted.
            if let (Ok(_), Some(cluster)) = (&checked, m.cluster.as_deref()) {
                let asked = scoped.counted(&ask, now_ms);
                if !asked.items.is_empty() {
                    checked = match cluster.decide_limits(&asked, false).await {
                        Some(a) => {
                            crate::quota::scoped::judge(&asked, &a.counts, &a.refused, &ask, now_ms)
                                .map_err(Some)
                        }
                        None => Err(None),
                    };
                }
            }
            match checked {
                Ok(views) => *self.ctx.views.borrow_mut() = views,
                Err(Some(b)) => {
                    d.outcome = b.outcome();
                    d.retry_after_ns = (b.retry_ms.max(1) as u64).saturating_mul(1_000_000);
                }
                Err(None) => {
                    d.outcome = crate::quota::Outcome::ClusterUnavailable;
                    d.retry_after_ns = crate::metering::CLUSTER_RETRY_NS;
                }
            }
        }
        self.decided(d);
        d
    }

    /// Makes the response's headers describe `d` (a state, not a decision).
    pub(crate) fn decided(&self, d: Decision) {
        self.ctx.decision.set(Some(d));
    }

    /// Decides `cost` calls (reserving `tokens`) of this tenant now, as
    /// [`Meter::decide`] does, and makes the response's headers describe
    /// the decision.
    pub(crate) async fn meter<S: std::ops::Deref<Target = Metering>>(
        &self,
        m: S,
        cost: u64,
        tokens: u64,
        mut record: crate::model::UsageRecord,
        started: std::time::Instant,
    ) -> Meter<S> {
        record.key_id = self.ctx.key_id.clone();
        self.meter_spending(m, cost, tokens, 0, record, started)
            .await
    }

    /// [`meter`](Self::meter), reserving `spend` micro-dollars of the
    /// tenant's spend limits.
    pub(crate) async fn meter_spending<S: std::ops::Deref<Target = Metering>>(
        &self,
        m: S,
        cost: u64,
        tokens: u64,
        spend: u64,
        mut record: crate::model::UsageRecord,
        started: std::time::Instant,
    ) -> Meter<S> {
        record.key_id = self.ctx.key_id.clone();
        let meter =
            Meter::decide_spending(m, self.tenant(), cost, tokens, spend, record, started).await;
        self.decided(*meter.decision());
        if !meter.views().is_empty() {
            *self.ctx.views.borrow_mut() = meter.views().clone();
        }
        meter
    }

    /// Makes the response's headers describe the tenant's limits as they
    /// stand now (once the answer has changed them).
    pub(crate) fn shows_now(&self, m: &Metering) {
        self.decided(self.tenant().snapshot(m.clock.now_nanos()));
    }

    /// Keeps the request's in-flight place for as long as the returned
    /// handle lives (a gateway response streams past the handler).
    pub(crate) fn hold(&self) -> Rc<TenantCtx> {
        self.ctx.clone()
    }
}

impl FromRequest for TenantAuth {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready((|| {
            let m = &state(req)?.metering;
            let header = |name| {
                req.headers().get(name).map(|v| {
                    v.to_str().map_err(|_| {
                        m.unauthorized(
                            Refusal::MalformedCredentials,
                            "the credentials are not readable",
                        )
                    })
                })
            };
            let authorization = header(header::AUTHORIZATION.as_str()).transpose()?;
            let api_key = match authorization {
                Some(_) => None,
                None => header("x-api-key").transpose()?,
            };
            let (tenant, key_id) = m.tenant_of(authorization, api_key)?;
            m.enter(&tenant)?;
            // Holds the place from here on: its drop gives it back.
            let ctx = Rc::new(TenantCtx {
                tenant,
                key_id,
                decision: Cell::new(None),
                views: Default::default(),
            });
            req.extensions_mut().insert(ctx.clone());
            Ok(TenantAuth { ctx })
        })())
    }
}

/// Whether the client says this is a retry: the OpenAI and Anthropic
/// SDKs send `x-stainless-retry-count` (0 on the first attempt).
pub(crate) fn retried(req: &HttpRequest) -> bool {
    req.headers()
        .get("x-stainless-retry-count")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u32>().ok())
        .is_some_and(|n| n > 0)
}

/// A request carrying the admin token, exactly as `Authorization: Bearer
/// <token>`: not in `X-API-Key`, not with another spelling of the scheme.
pub(crate) struct Admin;

/// The admin token a request presents, if any, in the one accepted form.
fn presented_admin(req: &HttpRequest) -> Result<Option<&str>, ApiError> {
    let Some(v) = req.headers().get(header::AUTHORIZATION) else {
        if req.headers().contains_key("x-api-key") {
            return Err(ApiError::unauthorized(
                "invalid_credentials",
                "admin routes take the admin token only as Authorization: Bearer <token>",
            ));
        }
        return Ok(None);
    };
    let token = v
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|t| !t.is_empty() && !t.starts_with(' ') && !t.ends_with(' '))
        .ok_or_else(|| {
            ApiError::unauthorized(
                "invalid_credentials",
                "send the admin token as Authorization: Bearer <token>",
            )
        })?;
    Ok(Some(token))
}

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready((|| {
            let st = state(req)?;
            let token = presented_admin(req)?.ok_or_else(|| {
                ApiError::unauthorized(
                    "missing_admin_token",
                    "send Authorization: Bearer <admin token>",
                )
            })?;
            if st.admin.matches(token) {
                return Ok(Admin);
            }
            let now_ms = st.metering.clock.now_nanos().millis().0;
            if !matches!(
                st.metering.registry.key_of(token, now_ms),
                Err(crate::registry::KeyProblem::Unknown)
            ) {
                return Err(ApiError::forbidden(
                    "admin_only",
                    "admin routes do not accept tenant keys",
                ));
            }
            Err(ApiError::unauthorized(
                "invalid_admin_token",
                "the admin token is wrong",
            ))
        })())
    }
}
