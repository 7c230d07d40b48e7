//! Gateway mode (SPEC §8 `[[proxy]]`): every request under a configured
//! prefix is authenticated with the tenant's key, decided like
//! `/api/v1/authorize`, forwarded to the upstream with the operator's
//! credential (never the tenant's), and streamed back with the rate-limit
//! headers added. While the response streams through, [`Metered`] picks the
//! token counts out of it - an OpenAI-style `usage` object in a JSON body,
//! or in an event of a `text/event-stream` body - and records the request
//! when the stream ends (or the client goes away).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::Stream;
use serde_json::Value;

use super::error::ApiError;
use super::extract::{CappedBody, TenantAuth};
use super::tenant::{enqueue, price, rejection, status_of};
use super::AppState;
use crate::config::ProxyConfig;
use crate::model::UsageRecord;
use crate::quota::TenantState;

/// How much of a JSON response is kept to read its `usage`.
const MAX_JSON_COPY: usize = 4 << 20;
/// Longest event-stream line looked at.
const MAX_LINE: usize = 1 << 20;

/// Headers about one connection, never passed on (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Request headers not forwarded besides those: the tenant's credentials,
/// and those the client library sets itself.
const DROP_REQUEST: &[&str] = &[
    "host",
    "authorization",
    "x-api-key",
    "content-length",
    "accept-encoding",
];

/// Response headers not passed back besides those: the length (the body is
/// streamed).
const DROP_RESPONSE: &[&str] = &["content-length"];

fn forwarded(name: &str, drop: &[&str]) -> bool {
    !HOP_BY_HOP.contains(&name) && !drop.contains(&name)
}

/// One fronted API.
pub struct ProxyTarget {
    /// Without a trailing `/`.
    pub prefix: String,
    upstream: String,
    credential: Option<String>,
    timeout: Duration,
    cost: u64,
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
        Ok(ProxyTarget {
            prefix: c.prefix.trim_end_matches('/').to_string(),
            upstream: c.upstream.trim_end_matches('/').to_string(),
            credential,
            timeout: Duration::from_millis(c.timeout_ms),
            cost: c.cost,
            client,
        })
    }

    /// The route: the prefix itself and everything below it.
    pub fn resource(target: Arc<ProxyTarget>) -> actix_web::Resource {
        web::resource(format!("{}{{tail:(/.*)?}}", target.prefix))
            .name(&format!("{}/*", target.prefix))
            .app_data(web::Data::from(target))
            .default_service(web::to(forward))
    }
}

/// The model a JSON request body names (until the response names one).
fn requested_model(body: &[u8]) -> String {
    if body.first() != Some(&b'{') {
        return String::new();
    }
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("model")?.as_str().map(str::to_string))
        .filter(|m| m.len() <= 128)
        .unwrap_or_default()
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
    let endpoint = if tail.is_empty() {
        "/".to_string()
    } else {
        tail
    };
    let model = requested_model(&body.0);
    let now = st.clock.now_nanos();
    let tenant = auth.tenant.clone();
    let d = auth.decide(&st, target.cost, now, true);
    let mut record = UsageRecord {
        ts_ms: now.div_euclid(1_000_000),
        endpoint: endpoint.chars().take(256).collect(),
        method: req.method().as_str().to_string(),
        status: status_of(&d),
        model,
        calls: if d.allowed() { target.cost } else { 0 },
        rejected: !d.allowed(),
        ..Default::default()
    };
    if !d.allowed() {
        record.response_ms = started.elapsed().as_secs_f64() * 1e3;
        enqueue(&st, &tenant, record);
        return Err(rejection(&d, &tenant.plan().plan.id));
    }

    let mut url = format!("{}{}", target.upstream, endpoint);
    if let Some(q) = req.uri().query() {
        url.push('?');
        url.push_str(q);
    }
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes())
        .map_err(|_| ApiError::invalid("unsupported method"))?;
    let mut upstream = target.client.request(method, &url);
    for (name, value) in req.headers() {
        if forwarded(name.as_str(), DROP_REQUEST) {
            upstream = upstream.header(name.as_str(), value.as_bytes());
        }
    }
    // Plain bodies, so that the usage can be read.
    upstream = upstream.header("accept-encoding", "identity");
    if let Some(c) = &target.credential {
        upstream = upstream.bearer_auth(c);
    }
    let sent = tokio::time::timeout(target.timeout, upstream.body(body.0).send()).await;
    let failure = match sent {
        Ok(Ok(resp)) => return Ok(stream_back(resp, st.clone(), tenant, record, started)),
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
    tenant.calls.refund(d.period, target.cost);
    auth.decided(tenant.snapshot(st.clock.now_nanos()));
    tracing::warn!(upstream = %target.upstream, status = failure.0.as_u16(), error = %failure.2, "proxy upstream failed");
    record.status = failure.0.as_u16();
    record.calls = 0;
    record.response_ms = started.elapsed().as_secs_f64() * 1e3;
    enqueue(&st, &tenant, record);
    Err(ApiError::new(failure.0, failure.1, failure.2))
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

fn stream_back(
    resp: reqwest::Response,
    st: web::Data<AppState>,
    tenant: Arc<TenantState>,
    mut record: UsageRecord,
    started: Instant,
) -> HttpResponse {
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    record.status = status.as_u16();
    let mut out = HttpResponse::build(status);
    for (name, value) in resp.headers() {
        if forwarded(name.as_str(), DROP_RESPONSE) {
            if let Ok(v) = actix_web::http::header::HeaderValue::from_bytes(value.as_bytes()) {
                out.append_header((name.as_str(), v));
            }
        }
    }
    let sse = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    out.streaming(Metered {
        inner: Box::pin(resp.bytes_stream()),
        sse,
        copy: Some(Vec::new()),
        line: Vec::new(),
        usage: None,
        pending: Some(Pending {
            st,
            tenant,
            record,
            started,
        }),
    })
}

/// Token counts read from a response.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Usage {
    pub prompt: u64,
    pub completion: u64,
    pub total: u64,
    pub model: Option<String>,
}

/// The `usage` of an OpenAI-style object (`prompt_tokens`/`completion_tokens`
/// or `input_tokens`/`output_tokens`), if it has one.
pub fn usage_of(v: &Value) -> Option<Usage> {
    let u = v.get("usage").filter(|u| u.is_object())?;
    let n = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| u.get(*k).and_then(Value::as_u64))
            .unwrap_or(0)
    };
    let prompt = n(&["prompt_tokens", "input_tokens"]);
    let completion = n(&["completion_tokens", "output_tokens"]);
    let total = n(&["total_tokens"]).max(prompt.saturating_add(completion));
    Some(Usage {
        prompt,
        completion,
        total,
        model: v
            .get("model")
            .and_then(Value::as_str)
            .filter(|m| m.len() <= 128)
            .map(str::to_string),
    })
}

/// What recording the request needs once the body is through.
struct Pending {
    st: web::Data<AppState>,
    tenant: Arc<TenantState>,
    record: UsageRecord,
    started: Instant,
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// The upstream's body on its way to the client, watched for `usage`.
struct Metered {
    inner: ByteStream,
    sse: bool,
    /// JSON bodies: a copy; `None` once over [`MAX_JSON_COPY`].
    copy: Option<Vec<u8>>,
    /// Event streams: the line not yet complete.
    line: Vec<u8>,
    usage: Option<Usage>,
    pending: Option<Pending>,
}

impl Metered {
    fn watch(&mut self, chunk: &[u8]) {
        if !self.sse {
            if let Some(copy) = &mut self.copy {
                if copy.len() + chunk.len() <= MAX_JSON_COPY {
                    copy.extend_from_slice(chunk);
                } else {
                    self.copy = None;
                }
            }
            return;
        }
        for &b in chunk {
            if b == b'\n' {
                self.event_line();
                self.line.clear();
            } else if self.line.len() < MAX_LINE {
                self.line.push(b);
            }
        }
    }

    /// One `data:` line of an event stream; the last one with a `usage`
    /// object wins (OpenAI sends it in the final chunk).
    fn event_line(&mut self) {
        let Some(data) = self.line.strip_prefix(b"data:") else {
            return;
        };
        if !data.windows(7).any(|w| w == b"\"usage\"") {
            return;
        }
        if let Ok(v) = serde_json::from_slice::<Value>(data.trim_ascii()) {
            if let Some(u) = usage_of(&v) {
                self.usage = Some(u);
            }
        }
    }

    /// Records the request (once): tokens, cost, latency to the last byte.
    fn finish(&mut self, broken: bool) {
        let Some(p) = self.pending.take() else { return };
        if self.sse && !self.line.is_empty() {
            self.event_line();
        }
        let usage = if self.sse {
            self.usage.take()
        } else {
            self.copy
                .as_deref()
                .and_then(|c| serde_json::from_slice::<Value>(c).ok())
                .and_then(|v| usage_of(&v))
        };
        let Pending {
            st,
            tenant,
            mut record,
            started,
        } = p;
        if let Some(u) = usage {
            if let Some(m) = u.model {
                record.model = m;
            }
            record.prompt_tokens = u.prompt;
            record.completion_tokens = u.completion;
            record.tokens = u.total;
            record.cost_usd = price(&st, &record.model, u.prompt, u.completion);
            tenant.add_usage(st.clock.now_nanos(), record.ts_ms, 0, u.total);
        }
        if broken {
            record
                .metadata
                .push(("proxy".into(), "stream interrupted".into()));
        }
        record.response_ms = started.elapsed().as_secs_f64() * 1e3;
        enqueue(&st, &tenant, record);
    }
}

impl Stream for Metered {
    type Item = reqwest::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match this.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.watch(&chunk);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.finish(true);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.finish(false);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Metered {
    /// The client went away before the end: record what was seen.
    fn drop(&mut self) {
        self.finish(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_in_both_spellings() {
        let openai = serde_json::json!({"model": "gpt-4o", "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}});
        assert_eq!(
            usage_of(&openai),
            Some(Usage {
                prompt: 3,
                completion: 5,
                total: 8,
                model: Some("gpt-4o".into())
            })
        );
        let anthropic = serde_json::json!({"usage": {"input_tokens": 2, "output_tokens": 7}});
        assert_eq!(usage_of(&anthropic).map(|u| u.total), Some(9));
        assert_eq!(usage_of(&serde_json::json!({"usage": null})), None);
        assert_eq!(usage_of(&serde_json::json!({"id": 1})), None);
    }

    #[test]
    fn requested_model_from_json_bodies_only() {
        assert_eq!(requested_model(br#"{"model":"m","stream":true}"#), "m");
        assert_eq!(requested_model(b"not json"), "");
    }
}
