//! `GET /api/billing/api-usage/export?from=&to=&format=csv|ndjson`: a
//! tenant's raw records, streamed. A producer thread scans the store and
//! hands 64 KiB chunks through a channel of four, so a year of records is
//! never held in memory and a slow client slows the scan, not the server.
//!
//! Exports are bounded like every tenant request: each holds one of the
//! export [`Slots`](crate::http::wire::slots::Slots) (`[limits] exports` across the server, 503 past it;
//! `exports_per_tenant` per tenant, 429 past it) and the tenant's
//! in-flight place until its body ends, and a client that takes nothing
//! for [`STALL`] loses its export - so never-read exports cannot pile up
//! threads or memory.

use actix_web::http::header;
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::analytics::{parse_time, query};
use crate::clock::{fmt_ms, ms_to_utc};
use crate::http::wire::error::ApiError;
use crate::http::wire::extract::{Admin, TenantAuth};
use crate::http::wire::money::Money;
use crate::http::AppState;
use crate::model::UsageRecord;
use crate::quota::period::Period;

const CHUNK: usize = 64 * 1024;
/// An export whose client takes no chunk for this long is ended.
const STALL: std::time::Duration = std::time::Duration::from_secs(30);

/// Hands `chunk` to the client's side, waiting at most [`STALL`] for room:
/// false when the client went away or took nothing for that long.
fn send_within(tx: &tokio::sync::mpsc::Sender<Bytes>, chunk: Bytes) -> bool {
    let deadline = std::time::Instant::now() + STALL;
    let mut chunk = chunk;
    loop {
        match tx.try_send(chunk) {
            Ok(()) => return true,
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return false,
            Err(tokio::sync::mpsc::error::TrySendError::Full(back)) => {
                if std::time::Instant::now() >= deadline {
                    tracing::debug!("an export's client took nothing for 30 s; ending it");
                    return false;
                }
                chunk = back;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ExportParams {
    pub from: Option<String>,
    pub to: Option<String>,
    pub format: Option<String>,
    /// Only the records this API key made.
    #[serde(rename = "keyId")]
    #[param(rename = "keyId")]
    pub key_id: Option<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Csv,
    Ndjson,
}

pub(crate) const CSV_HEADER: &str = "timestamp,tenantId,endpoint,method,statusCode,responseTime,promptTokens,completionTokens,tokensUsed,model,userId,botId,calls,costUsd,rejected,metadata,apiVersion,country,integration,retried,cachedPromptTokens,cacheWriteTokens,cacheWrite1hTokens,reasoningTokens,uncachedPromptCostUsd,cachedPromptCostUsd,cacheWriteCostUsd,completionCostUsd,reasoningCostUsd,keyId\n";

/// Characters a spreadsheet skips or shows as nothing before a formula's
/// sign: spaces of every width, the byte order mark, zero-width and
/// bidirectional controls.
fn invisible(c: char) -> bool {
    c.is_whitespace()
        || matches!(c, '\u{feff}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}')
}

/// Whether a spreadsheet could read `v` as a formula: its first visible
/// character is a formula's sign, in ASCII or full width, or it starts with
/// a tab or CR.
fn formula(v: &str) -> bool {
    if v.starts_with(['\t', '\r']) {
        return true;
    }
    v.chars().find(|c| !invisible(*c)).is_some_and(|c| {
        matches!(
            c,
            '=' | '+' | '-' | '@' | '\u{ff1d}' | '\u{ff0b}' | '\u{ff0d}' | '\u{ff20}'
        )
    })
}

/// A CSV field: quoted when needed, and defused when a spreadsheet would
/// read it as a formula.
fn csv_field(out: &mut String, v: &str) {
    let formula = formula(v);
    if formula || v.contains([',', '"', '\n', '\r']) {
        out.push('"');
        if formula {
            out.push('\'');
        }
        out.push_str(&v.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(v);
    }
}

/// Costs to 1e-10 USD, so a CSV shows `0.0002528`, not float noise.
/// One record of the NDJSON export.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct RecordLine<'a> {
    timestamp: String,
    tenant_id: &'a str,
    endpoint: &'a str,
    method: &'a str,
    status_code: u16,
    response_time: f64,
    prompt_tokens: u64,
    completion_tokens: u64,
    tokens_used: u64,
    model: &'a str,
    user_id: &'a str,
    bot_id: &'a str,
    metadata: serde_json::Value,
    calls: u64,
    cost_usd: Money,
    rejected: bool,
    api_version: &'a str,
    country: &'a str,
    integration: &'a str,
    retried: bool,
    cached_prompt_tokens: u64,
    cache_write_tokens: u64,
    cache_write1h_tokens: u64,
    reasoning_tokens: u64,
    uncached_prompt_cost_usd: Money,
    cached_prompt_cost_usd: Money,
    cache_write_cost_usd: Money,
    completion_cost_usd: Money,
    reasoning_cost_usd: Money,
    key_id: &'a str,
}

fn metadata_json(r: &UsageRecord) -> serde_json::Value {
    serde_json::Value::Object(
        r.extra()
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect(),
    )
}

fn write_record(out: &mut String, tenant: &str, r: &UsageRecord, format: Format) {
    let x = r.extra();
    match format {
        Format::Csv => {
            use std::fmt::Write;
            let ts = fmt_ms(ms_to_utc(r.ts_ms));
            for f in [&*ts, tenant, &r.endpoint, &r.method] {
                csv_field(out, f);
                out.push(',');
            }
            let _ = write!(
                out,
                "{},{},{},{},{},",
                r.status, r.response_ms, r.prompt_tokens, r.completion_tokens, r.tokens
            );
            for f in [&r.model, &x.user_id, &x.bot_id] {
                csv_field(out, f);
                out.push(',');
            }
            let _ = write!(
                out,
                "{},{},{},",
                r.calls,
                crate::http::wire::money::decimal(r.cost_usd),
                r.rejected
            );
            let meta = if x.metadata.is_empty() {
                String::new()
            } else {
                metadata_json(r).to_string()
            };
            csv_field(out, &meta);
            for f in [r.version(), &x.country, &x.integration] {
                out.push(',');
                csv_field(out, f);
            }
            let _ = write!(out, ",{}", r.retried);
            let (k, c) = (x.kinds, x.cost_split);
            let _ = write!(
                out,
                ",{},{},{},{}",
                k.cached_prompt, k.cache_write, k.cache_write_1h, k.reasoning
            );
            for usd in [
                c.uncached_prompt,
                c.cached_prompt,
                c.cache_write,
                c.completion,
                c.reasoning,
            ] {
                let _ = write!(out, ",{}", crate::http::wire::money::decimal(usd));
            }
            out.push(',');
            csv_field(out, &r.key_id);
            out.push('\n');
        }
        Format::Ndjson => {
            let line = RecordLine {
                timestamp: fmt_ms(ms_to_utc(r.ts_ms)),
                tenant_id: tenant,
                endpoint: &r.endpoint,
                method: &r.method,
                status_code: r.status,
                response_time: r.response_ms,
                prompt_tokens: r.prompt_tokens,
                completion_tokens: r.completion_tokens,
                tokens_used: r.tokens,
                model: &r.model,
                user_id: &x.user_id,
                bot_id: &x.bot_id,
                metadata: metadata_json(r),
                calls: r.calls,
                cost_usd: Money(r.cost_usd),
                rejected: r.rejected,
                api_version: r.version(),
                country: &x.country,
                integration: &x.integration,
                retried: r.retried,
                cached_prompt_tokens: x.kinds.cached_prompt,
                cache_write_tokens: x.kinds.cache_write,
                cache_write1h_tokens: x.kinds.cache_write_1h,
                reasoning_tokens: x.kinds.reasoning,
                uncached_prompt_cost_usd: Money(x.cost_split.uncached_prompt),
                cached_prompt_cost_usd: Money(x.cost_split.cached_prompt),
                cache_write_cost_usd: Money(x.cost_split.cache_write),
                completion_cost_usd: Money(x.cost_split.completion),
                reasoning_cost_usd: Money(x.cost_split.reasoning),
                key_id: &r.key_id,
            };
            if let Ok(text) = serde_json::to_string(&line) {
                out.push_str(&text);
                out.push('\n');
            }
        }
    }
}

#[utoipa::path(
    get, path = "/api/billing/api-usage/export", tag = "analytics", security(("tenantKey" = []), ("tenantKeyHeader" = [])), params(ExportParams),
    responses((status = 200, description = "raw records, streamed (CSV with a header row, or NDJSON)", content_type = "text/csv"), (status = 401, description = "no or unknown key", body = crate::http::wire::error::ErrorBody), (status = 422, description = "bad parameters", body = crate::http::wire::error::ErrorBody))
)]
pub(crate) async fn export(
    st: web::Data<AppState>,
    auth: TenantAuth,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let id = auth.tenant().id.to_string();
    // The tenant's in-flight place stays taken until the body ends.
    stream_export(&st, id.clone(), &id, Some(auth.hold()), &req)
}

/// `GET /api/admin/tenants/{id}/api-usage/export`: the same, for the operator.
#[utoipa::path(
    get, path = "/api/admin/tenants/{id}/api-usage/export", tag = "analytics", security(("adminToken" = [])), params(("id" = String, Path, description = "tenant id"), ExportParams),
    responses((status = 200, description = "the tenant's raw records, streamed (CSV with a header row, or NDJSON)", content_type = "text/csv"), (status = 401, description = "no or wrong admin token", body = crate::http::wire::error::ErrorBody), (status = 404, description = "no such tenant", body = crate::http::wire::error::ErrorBody), (status = 422, description = "bad parameters", body = crate::http::wire::error::ErrorBody))
)]
pub(crate) async fn admin_export(
    st: web::Data<AppState>,
    _: Admin,
    id: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let tenant = super::analytics::tenant_named(&st, &id)?;
    stream_export(&st, tenant.id.to_string(), "(operator)", None, &req)
}

fn stream_export(
    st: &AppState,
    tenant: String,
    owner: &str,
    hold: Option<std::rc::Rc<crate::http::wire::extract::TenantCtx>>,
    req: &HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let p: ExportParams = query(req)?;
    let format = match p.format.as_deref().unwrap_or("csv") {
        "csv" => Format::Csv,
        "ndjson" => Format::Ndjson,
        other => {
            return Err(ApiError::invalid(format!(
                "format must be csv or ndjson, not {other:?}"
            )))
        }
    };
    let now_ms = st.metering.clock.now_nanos().millis().0;
    let from = match p.from.as_deref() {
        Some(v) => parse_time("from", v)?,
        None => Period::containing_secs(now_ms.div_euclid(1000)).start_secs() * 1000,
    };
    let to = match p.to.as_deref() {
        Some(v) => parse_time("to", v)?,
        None => now_ms + 1,
    };
    if from >= to {
        return Err(ApiError::invalid("from must be before to"));
    }
    let key = p.key_id;
    let slot = st.exports.take(owner)?;
    let store = st.metering.registry.store().clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let name = format!(
        "usage-{tenant}-{}.{}",
        fmt_ms(ms_to_utc(from)).get(..10).unwrap_or("range"),
        if format == Format::Csv {
            "csv"
        } else {
            "ndjson"
        }
    );
    std::thread::Builder::new()
        .name("tollgate-export".into())
        .spawn(move || {
            let _slot = slot;
            let mut buf = String::with_capacity(CHUNK + 1024);
            if format == Format::Csv {
                buf.push_str(CSV_HEADER);
            }
            let mut open = true;
            let result = store.scan_usage(&tenant, from, to, &mut |r| {
                if key.as_deref().is_some_and(|k| *k != *r.key_id) {
                    return true;
                }
                write_record(&mut buf, &tenant, r, format);
                if buf.len() >= CHUNK {
                    open = send_within(&tx, Bytes::from(std::mem::take(&mut buf)));
                    buf.reserve(CHUNK + 1024);
                }
                open
            });
            if let Err(e) = result {
                tracing::error!(error = %e, "export scan failed");
                return;
            }
            if open && !buf.is_empty() {
                send_within(&tx, Bytes::from(buf));
            }
        })
        .map_err(|_| ApiError::busy())?;
    let stream = futures_util::stream::unfold((rx, hold), |(mut rx, hold)| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, actix_web::Error>(b), (rx, hold)))
    });
    Ok(HttpResponse::Ok()
        .content_type(if format == Format::Csv {
            "text/csv; charset=utf-8"
        } else {
            "application/x-ndjson"
        })
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{name}\""),
        ))
        .streaming(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_and_defuses() {
        let mut s = String::new();
        csv_field(&mut s, "plain");
        s.push('|');
        csv_field(&mut s, "a,\"b\"");
        s.push('|');
        csv_field(&mut s, "=SUM(A1)");
        assert_eq!(s, "plain|\"a,\"\"b\"\"\"|\"'=SUM(A1)\"");
    }

    /// Issue 37, 8a: signs behind spaces, NBSP, U+3000, a BOM, ZWSP or RLO,
    /// and the full-width signs, passed undefused.
    #[test]
    fn hidden_and_full_width_formula_signs_are_defused() {
        for lead in [
            "",
            " ",
            "  ",
            "\u{a0}",
            "\u{3000}",
            "\u{feff}",
            "\u{200b}",
            "\u{202e}",
            " \u{feff}",
        ] {
            for sign in [
                "=", "+", "-", "@", "\u{ff1d}", "\u{ff0b}", "\u{ff0d}", "\u{ff20}",
            ] {
                let v = format!("{lead}{sign}HYPERLINK(\"x\")");
                let mut s = String::new();
                csv_field(&mut s, &v);
                assert!(s.starts_with("\"'"), "{v:?} -> {s:?}");
            }
        }
        for safe in ["plain", " plain", "a=b", "1-2"] {
            let mut s = String::new();
            csv_field(&mut s, safe);
            assert!(!s.contains('\''), "{safe:?} -> {s:?}");
        }
    }
}
