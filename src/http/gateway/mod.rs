//! Gateway mode (SPEC §8 `[[proxy]]`): every request under a configured
//! prefix is authenticated with the tenant's key, decided like
//! `/api/v1/authorize`, forwarded to the upstream with the operator's
//! credential (never the tenant's), and streamed back with the rate-limit
//! headers added. While the response streams through, [`Metered`] reads
//! the token counts out of it ([`usage`]) and records the request when the
//! stream ends (or the client goes away, or the upstream stalls).
//!
//! The tenant steers none of the operator's credentials: the path stays
//! under the upstream's base ([`path`]), headers that would choose the
//! operator's organisation or project, or claim a client address, are
//! dropped, and upgrades (WebSocket) are refused.

mod path;
pub(crate) mod provider;
mod unasked;
pub(crate) mod usage;

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::Stream;

use self::usage::{EventScan, JsonScan, LlmRequest, Usage};
use self::{provider::Provider, unasked::UnaskedUsage};
use crate::config::ProxyConfig;
use crate::http::wire::error::ApiError;
use crate::http::wire::extract::retried;
use crate::http::wire::extract::{CappedBody, TenantAuth, TenantCtx};
use crate::http::AppState;
use crate::metering::{Meter, Metering};
use crate::model::{CompactString, RecordExtra, UsageRecord};

/// Headers about one connection, never passed on (RFC 9110 §7.6.1); so are
/// the headers a `Connection` header names.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Request headers not forwarded besides those: the tenant's credentials,
/// those the client library sets itself and the client-address claims
/// (the gateway sets its own `X-Forwarded-For`); the provider adds those
/// that would steer the operator's account ([`Provider::steering`]).
const DROP_REQUEST: &[&str] = &[
    "host",
    "authorization",
    "x-api-key",
    "content-length",
    "accept-encoding",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
];

/// Response headers not passed back besides those: the length (the body is
/// streamed).
const DROP_RESPONSE: &[&str] = &["content-length"];

/// The header names a `Connection` header lists (lower-cased).
fn connection_named(headers: impl Iterator<Item = String>) -> Vec<String> {
    headers
        .flat_map(|v| {
            v.split(',')
                .map(|n| n.trim().to_ascii_lowercase())
                .filter(|n| !n.is_empty())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn forwarded(name: &str, drop: &[&[&str]], named: &[String]) -> bool {
    !HOP_BY_HOP.contains(&name)
        && !drop.iter().any(|d| d.contains(&name))
        && !named.iter().any(|n| n == name)
}

/// One fronted API.
pub struct ProxyTarget {
    /// Without a trailing `/`.
    pub prefix: String,
    /// Its name in the analytics.
    pub name: String,
    upstream: String,
    credential: Option<String>,
    timeout: Duration,
    idle_timeout: Duration,
    cost: u64,
    provider: &'static dyn Provider,
    client: reqwest::Client,
}

impl ProxyTarget {
    pub fn new(c: &ProxyConfig, env: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let credential = if c.upstream_auth_env.is_empty() {
            None
        } else {
            Some(env(&c.upstream_auth_env).filter(|v| !v.is_empty()).ok_or_else(|| {
                format!(
                    "proxy {}: set {} to the upstream's credential (or leave upstream_auth_env out)",
                    c.prefix, c.upstream_auth_env
                )
            })?)
        };
        let client = reqwest::Client::builder()
            .user_agent(concat!("tollgate/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_millis(c.timeout_ms))
            .build()
            .map_err(|e| format!("proxy {}: {e}", c.prefix))?;
        let name = match c.name.as_str() {
            "" => c.prefix.trim_matches('/').to_string(),
            n => n.to_string(),
        };
        if name.is_empty() || !crate::model::recordable_version(&name) {
            return Err(format!(
                "proxy {}: name must be 1 to 64 bytes without control characters",
                c.prefix
            ));
        }
        Ok(ProxyTarget {
            prefix: c.prefix.trim_end_matches('/').to_string(),
            name,
            upstream: c.upstream.as_str().trim_end_matches('/').to_string(),
            credential,
            timeout: Duration::from_millis(c.timeout_ms),
            idle_timeout: Duration::from_millis(c.idle_timeout_ms),
            cost: c.cost,
            provider: provider::of(c.dialect),
            client,
        })
    }

    /// The route: the prefix itself and everything below it.
    /// Upgrades are refused before anything reads the body: actix hands
    /// an upgraded connection's bytes to the body, which never ends.
    pub fn resource(target: Arc<ProxyTarget>) -> impl actix_web::dev::HttpServiceFactory {
        let upgrade =
            actix_web::guard::fn_guard(|ctx| ctx.head().headers().contains_key("upgrade"));
        let speaking = target.provider;
        web::resource(format!("{}{{tail:(/.*)?}}", target.prefix))
            .name(&format!("{}/*", target.prefix))
            .wrap_fn(move |req, srv| {
                use actix_web::dev::Service;
                let answer = srv.call(req);
                async move { Ok(provider::speak(speaking, answer.await?)) }
            })
            .app_data(web::Data::from(target))
            .route(web::route().guard(upgrade).to(refuse_upgrade))
            .route(
                web::route()
                    .guard(
                        actix_web::guard::Any(actix_web::guard::Trace())
                            .or(actix_web::guard::Connect()),
                    )
                    .to(refuse_trace),
            )
            .default_service(web::to(forward))
    }
}

/// TRACE echoes the request (its headers, the operator's credential
/// among them once the gateway adds it) and CONNECT opens a tunnel: the
/// gateway forwards neither (issue 37, 8l).
async fn refuse_trace() -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "the gateway does not forward TRACE or CONNECT",
    ))
}

async fn refuse_upgrade() -> Result<HttpResponse, ApiError> {
    Err(ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "upgrade_not_supported",
        "the gateway does not forward protocol upgrades (WebSocket)",
    ))
}

fn bad_path(why: path::PathError) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_path", why)
}

/// The request headers for the upstream.
fn request_headers(req: &HttpRequest, provider: &dyn Provider) -> Vec<(String, Vec<u8>)> {
    let headers = req.headers();
    let named = connection_named(
        headers
            .get_all("connection")
            .filter_map(|v| v.to_str().ok().map(str::to_string)),
    );
    let mut out: Vec<(String, Vec<u8>)> = headers
        .iter()
        .filter(|(name, _)| forwarded(name.as_str(), &[DROP_REQUEST, provider.steering()], &named))
        .map(|(name, value)| (name.as_str().to_string(), value.as_bytes().to_vec()))
        .collect();
    if let Some(peer) = req.peer_addr() {
        out.push(("x-forwarded-for".into(), peer.ip().to_string().into_bytes()));
    }
    let scheme = req.connection_info().scheme().to_string();
    out.push(("x-forwarded-proto".into(), scheme.into_bytes()));
    out
}

async fn forward(
    auth: TenantAuth,
    req: HttpRequest,
    target: web::Data<ProxyTarget>,
    st: web::Data<AppState>,
    body: CappedBody,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let tail = req
        .path()
        .strip_prefix(target.prefix.as_str())
        .unwrap_or("")
        .to_string();
    let url = path::upstream_url(&target.upstream, &tail, req.uri().query()).map_err(bad_path)?;
    let endpoint = if tail.is_empty() {
        "/".to_string()
    } else {
        tail
    };
    let (llm, rewritten) = usage::inspect_request(&endpoint, &body.0, target.provider);
    // Rewritten: asked for its usage on the client's behalf.
    let unasked_usage = rewritten.is_some();
    let body = rewritten.unwrap_or(body.0);
    let record = UsageRecord {
        endpoint: endpoint.chars().take(256).collect(),
        method: req.method().as_str().into(),
        model: llm
            .as_ref()
            .map(|l| l.model.as_str().into())
            .unwrap_or_default(),
        retried: retried(&req),
        extra: RecordExtra {
            api_version: api_version(&req),
            integration: target.name.as_str().into(),
            country: st.country_of(&req),
            ..Default::default()
        }
        .boxed(),
        ..Default::default()
    };
    // A model call reserves its prompt and the most its answer may hold
    // (or the plan's `reserveTokens`) before it runs; the answer's usage
    // settles it, and every other ending gives it back.
    let default_output = auth.tenant().plan_now().plan.reserve_tokens.unwrap_or(0);
    let reserve = llm.as_ref().map_or(0, |l| l.reserve(default_output));
    // And, against the tenant's spend limits, what those tokens cost (a
    // call that names no model: the plan's `reserveUsd`).
    let spend = match &llm {
        Some(l) => st.metering.spend_estimate(
            auth.tenant(),
            &l.model,
            l.prompt_tokens,
            l.max_output.unwrap_or(default_output),
        ),
        None => st.metering.spend_estimate(auth.tenant(), "", 0, 0),
    };
    let meter = auth
        .meter_spending(
            st.metering.clone(),
            target.cost,
            reserve,
            spend,
            record,
            started,
        )
        .await
        .allowed()?;

    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes())
        .map_err(|_| ApiError::invalid("unsupported method"))?;
    let mut upstream = target.client.request(method, &url);
    for (name, value) in request_headers(&req, target.provider) {
        upstream = upstream.header(name, value);
    }
    // Plain bodies, so that the usage can be read.
    upstream = upstream.header("accept-encoding", "identity");
    if let Some(c) = &target.credential {
        upstream = target.provider.credential(upstream, c);
    }
    let sent = tokio::time::timeout(target.timeout, upstream.body(body).send()).await;
    let failure = match sent {
        Ok(Ok(resp)) => {
            let watch = Watch {
                meter,
                llm,
                idle_timeout: target.idle_timeout,
                _hold: auth.hold(),
            };
            return Ok(stream_back(resp, watch, unasked_usage, target.provider));
        }
        Err(_) => (
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            format!(
                "the upstream did not answer within {} ms",
                target.timeout.as_millis()
            ),
        ),
        Ok(Err(e)) if e.is_timeout() => (
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            "the upstream timed out".to_string(),
        ),
        Ok(Err(e)) => (
            StatusCode::BAD_GATEWAY,
            "upstream_unavailable",
            format!("the upstream could not be reached: {}", root_cause(&e)),
        ),
    };
    // Tollgate could not get an answer: the call is not charged.
    tracing::warn!(upstream = %target.upstream, status = failure.0.as_u16(), error = %failure.2, "proxy upstream failed");
    meter.failed(failure.0.as_u16());
    auth.shows_now(&st.metering);
    Err(ApiError::new(failure.0, failure.1, failure.2))
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// The response headers for the client.
fn response_headers(from: &reqwest::header::HeaderMap, to: &mut actix_web::HttpResponseBuilder) {
    let named = connection_named(
        from.get_all("connection")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string)),
    );
    for (name, value) in from {
        if forwarded(name.as_str(), &[DROP_RESPONSE], &named) {
            if let Ok(v) = actix_web::http::header::HeaderValue::from_bytes(value.as_bytes()) {
                to.append_header((name.as_str(), v));
            }
        }
    }
}

/// The upstream's answer on its way to the client; `unasked_usage`: the
/// request was made to ask for its usage on the client's behalf.
fn stream_back(
    resp: reqwest::Response,
    mut watch: Watch,
    unasked_usage: bool,
    provider: &'static dyn Provider,
) -> HttpResponse {
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    watch.meter.record_mut().status = status.as_u16();
    let mut out = HttpResponse::build(status);
    response_headers(resp.headers(), &mut out);
    let sse = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let idle = watch.idle_timeout;
    let unasked = (sse && unasked_usage).then(UnaskedUsage::default);
    out.streaming(Metered {
        inner: Box::pin(resp.bytes_stream()),
        unasked,
        ended: false,
        scan: if sse {
            Scan::Events(EventScan::reading(provider))
        } else {
            Scan::Json(JsonScan::reading(provider))
        },
        idle: Box::pin(tokio::time::sleep(idle)),
        idle_timeout: idle,
        done: false,
        pending: Some(watch),
    })
}

/// What recording the request needs once the body is through.
struct Watch {
    meter: Meter<Arc<Metering>>,
    /// The request, when it was an OpenAI-style call (for an estimate).
    llm: Option<LlmRequest>,
    idle_timeout: Duration,
    /// The request's in-flight place, kept while the response streams.
    _hold: Rc<TenantCtx>,
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

enum Scan {
    Json(JsonScan),
    Events(EventScan),
}

/// How a metered stream ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    Complete,
    Interrupted,
    Stalled,
    /// The tenant's token quota was spent while this answer, past its
    /// reservation, streamed.
    QuotaSpent,
}

/// The upstream's body on its way to the client, watched for `usage`, and
/// cut off when the upstream goes quiet for longer than the idle timeout.
struct Metered {
    inner: ByteStream,
    /// Keeps the usage event the client did not ask for from it.
    unasked: Option<UnaskedUsage>,
    /// The upstream's body has ended (what `unasked` held is being sent).
    ended: bool,
    scan: Scan,
    idle: Pin<Box<tokio::time::Sleep>>,
    idle_timeout: Duration,
    done: bool,
    pending: Option<Watch>,
}

impl Metered {
    fn watch(&mut self, chunk: &[u8]) {
        match &mut self.scan {
            Scan::Json(s) => s.feed(chunk),
            Scan::Events(s) => s.feed(chunk),
        }
    }

    /// Charges a streamed model call's tokens as they pass (the prompt's
    /// estimate and the text streamed so far): true when the tenant's token
    /// quota is spent and this answer is past its reservation - it is cut.
    fn charge_so_far(&mut self) -> bool {
        let Some(w) = self.pending.as_mut() else {
            return false;
        };
        let Some(llm) = w.llm.as_ref() else {
            return false;
        };
        if w.meter.record_mut().status >= 400 {
            return false;
        }
        // Event streams only: a JSON body ends with its answer, and its
        // size says little of its tokens.
        let Scan::Events(events) = &self.scan else {
            return false;
        };
        let streamed = events.streamed();
        let estimate = llm.prompt_tokens.saturating_add(streamed);
        w.meter.charge_so_far(estimate)
    }

    /// The counts the response reported, or an estimate for an
    /// OpenAI-style call that reported none.
    fn usage(&mut self, llm: Option<&LlmRequest>, success: bool) -> Option<Usage> {
        let (counts, model, completion_estimate) = match &mut self.scan {
            Scan::Json(s) => {
                let (c, m) = s.finish();
                (c, m, s.bytes_seen() / 4)
            }
            Scan::Events(s) => s.finish(),
        };
        match counts {
            Some(counts) => Some(Usage {
                counts,
                model,
                estimated: false,
            }),
            None if success => llm.map(|l| usage::estimate(l, completion_estimate)),
            None => None,
        }
    }

    /// Records the request (once): tokens, cost, latency to the last byte.
    fn finish(&mut self, end: End) {
        let Some(w) = self.pending.take() else { return };
        self.done = true;
        let Watch { mut meter, llm, .. } = w;
        let status = meter.record_mut().status;
        let usage = self.usage(llm.as_ref(), status < 400);
        let notes = &mut meter.record_mut().extra_mut().metadata;
        if let Some(u) = &usage {
            if u.estimated {
                notes.push(("tokens".into(), "estimated (no usage in the answer)".into()));
            }
            if u.counts.capped {
                notes.push((
                    "tokens".into(),
                    format!("capped at {} per figure", crate::model::MAX_UPSTREAM_TOKENS),
                ));
            }
        }
        match end {
            End::Complete => {}
            End::Interrupted => notes.push(("proxy".into(), "stream interrupted".into())),
            End::Stalled => {
                notes.push(("proxy".into(), "upstream stalled; response cut off".into()))
            }
            End::QuotaSpent => notes.push((
                "proxy".into(),
                "token quota spent while streaming; response cut off".into(),
            )),
        }
        meter.served(status, usage.map(|u| (u.counts, u.model)));
    }
}

impl Stream for Metered {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if this.ended {
            this.finish(End::Complete);
            return Poll::Ready(None);
        }
        loop {
            let polled = this.inner.as_mut().poll_next(cx);
            return match polled {
                Poll::Ready(Some(Ok(chunk))) => {
                    this.watch(&chunk);
                    if this.charge_so_far() {
                        // The quota is spent and this answer is past what it
                        // reserved: it ends here (the client sees a cut body).
                        this.finish(End::QuotaSpent);
                        return Poll::Ready(Some(Err(std::io::Error::other(
                            "the tenant's token quota is spent",
                        ))));
                    }
                    let next = tokio::time::Instant::now() + this.idle_timeout;
                    this.idle.as_mut().reset(next);
                    let chunk = match this.unasked.as_mut() {
                        Some(f) => Bytes::from(f.pass(&chunk)),
                        None => chunk,
                    };
                    if chunk.is_empty() {
                        continue;
                    }
                    Poll::Ready(Some(Ok(chunk)))
                }
                Poll::Ready(Some(Err(e))) => {
                    this.finish(End::Interrupted);
                    Poll::Ready(Some(Err(std::io::Error::other(e))))
                }
                Poll::Ready(None) => {
                    let rest = this.unasked.as_mut().map(UnaskedUsage::rest);
                    match rest.filter(|r| !r.is_empty()) {
                        Some(rest) => {
                            this.ended = true;
                            Poll::Ready(Some(Ok(Bytes::from(rest))))
                        }
                        None => {
                            this.finish(End::Complete);
                            Poll::Ready(None)
                        }
                    }
                }
                Poll::Pending => match this.idle.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        tracing::warn!(
                            idle_ms = this.idle_timeout.as_millis() as u64,
                            "gateway upstream stalled mid-response; cutting it off"
                        );
                        this.finish(End::Stalled);
                        Poll::Ready(Some(Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "the upstream stalled",
                        ))))
                    }
                    Poll::Pending => Poll::Pending,
                },
            };
        }
    }
}

impl Drop for Metered {
    /// The client went away before the end: record what was seen.
    fn drop(&mut self) {
        self.finish(End::Interrupted);
    }
}

/// A gateway request's API version: its `API-Version` header, else the
/// request path's first segment when it names one (the prefix is often
/// the version: `/v1`).
fn api_version(req: &HttpRequest) -> CompactString {
    let header = req
        .headers()
        .get("api-version")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| crate::model::recordable_version(v));
    header
        .unwrap_or_else(|| crate::model::version_segment(req.path()))
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_a_connection_header_names_are_hop_by_hop() {
        let named = connection_named(["close, X-Secret ,keep-alive".to_string()].into_iter());
        assert_eq!(named, ["close", "x-secret", "keep-alive"]);
        assert!(!forwarded("x-secret", &[DROP_REQUEST], &named));
        assert!(forwarded("x-other", &[DROP_REQUEST], &named));
        let openai = provider::of(provider::Dialect::Openai).steering();
        for steer in [
            "openai-organization",
            "openai-project",
            "x-forwarded-for",
            "forwarded",
        ] {
            assert!(!forwarded(steer, &[DROP_REQUEST, openai], &[]), "{steer}");
        }
    }
}
