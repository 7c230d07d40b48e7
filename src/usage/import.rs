//! History import: a tenant's usage read back from the export's own
//! formats (NDJSON, and CSV with its header row) and written with the
//! claims of reported usage ([`Store::write_claimed`]), so that importing
//! one file twice - or its CSV and its NDJSON - counts once. Each record
//! counts toward its own month. The whole file is checked first: a bad line
//! is reported by its number and nothing is written.
//!
//! A record's claim is a digest of what it holds (the tenant's id in the
//! file excepted: a file imports into any tenant), with the number of
//! identical records before it in the file, so two equal records of one
//! file are both kept and a second import of it adds none.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::clock::Nanos;
use crate::model::{CompactString, CostSplit, RecordExtra, TokenKinds, UsageRecord};
use crate::pricing::{PriceTable, Priced};
use crate::quota::TenantState;
use crate::store::{Claims, Store, StoreError, UsageBlock};

/// The file's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Ndjson,
    Csv,
}

/// A line that cannot be imported (1 = the file's first line).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct LineError {
    pub(crate) line: usize,
    pub(crate) error: String,
}

/// What an import did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Imported {
    /// Records written.
    pub(crate) imported: u64,
    /// Records left out: imported before.
    pub(crate) duplicates: u64,
}

/// At most this many line errors are listed.
pub(crate) const MAX_ERRORS: usize = 100;
/// Records a store write takes.
const WRITE: usize = 10_000;
/// The longest text field, in bytes.
const MAX_TEXT: usize = 2048;
/// The largest count a record may carry (as reported usage).
const MAX_COUNT: u64 = crate::model::MAX_COUNT;

/// One record as the export writes it (either format; `metadata` is an
/// object in NDJSON and its JSON text in CSV).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Line {
    timestamp: String,
    // `tenantId`, like any field not named here, is read past: a file
    // imports into any tenant.
    endpoint: String,
    #[serde(default)]
    method: String,
    #[serde(default)]
    status_code: u16,
    #[serde(default)]
    response_time: f64,
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    tokens_used: u64,
    #[serde(default)]
    model: String,
    #[serde(default)]
    user_id: String,
    #[serde(default)]
    bot_id: String,
    #[serde(default)]
    metadata: Option<serde_json::Value>,
    #[serde(default)]
    calls: u64,
    #[serde(default)]
    cost_usd: Option<f64>,
    #[serde(default)]
    rejected: bool,
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    country: String,
    #[serde(default)]
    integration: String,
    #[serde(default)]
    retried: bool,
    #[serde(default)]
    cached_prompt_tokens: u64,
    #[serde(default)]
    cache_write_tokens: u64,
    #[serde(default)]
    cache_write1h_tokens: u64,
    #[serde(default)]
    reasoning_tokens: u64,
    #[serde(default)]
    uncached_prompt_cost_usd: Option<f64>,
    #[serde(default)]
    cached_prompt_cost_usd: Option<f64>,
    #[serde(default)]
    cache_write_cost_usd: Option<f64>,
    #[serde(default)]
    completion_cost_usd: Option<f64>,
    #[serde(default)]
    reasoning_cost_usd: Option<f64>,
    #[serde(default)]
    key_id: String,
}

/// The records of `text` with their claims, each within `[oldest_ms,
/// newest_ms)`; or the lines that are not records, every one of them (up
/// to [`MAX_ERRORS`]).
pub(crate) fn parse(
    text: &str,
    format: Format,
    oldest_ms: i64,
    newest_ms: i64,
    prices: &PriceTable,
) -> Result<Vec<(UsageRecord, String)>, Vec<LineError>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut seen: HashMap<[u8; 16], u32> = HashMap::new();
    let mut take = |line: usize, parsed: Result<Line, String>| match parsed
        .and_then(|l| record(l, oldest_ms, newest_ms, prices))
    {
        Ok(r) => {
            let digest = digest(&r);
            let n = seen.entry(digest).or_default();
            let id = format!("\u{2}import:{}:{n}", hex(&digest));
            *n += 1;
            out.push((r, id));
        }
        Err(error) if errors.len() < MAX_ERRORS => errors.push(LineError { line, error }),
        Err(_) => {}
    };
    match format {
        Format::Ndjson => {
            for (i, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                take(
                    i + 1,
                    serde_json::from_str::<Line>(line).map_err(|e| e.to_string()),
                );
            }
        }
        Format::Csv => {
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(true)
                .from_reader(text.as_bytes());
            let headers = match reader.headers() {
                Ok(h) => h.clone(),
                Err(e) => {
                    return Err(vec![LineError {
                        line: 1,
                        error: format!("the header row: {e}"),
                    }])
                }
            };
            for row in reader.records() {
                let (line, parsed) = match row {
                    Ok(row) => {
                        let line = row.position().map_or(0, |p| p.line() as usize);
                        (line, csv_line(&row, &headers))
                    }
                    Err(e) => (
                        e.position().map_or(0, |p| p.line() as usize),
                        Err(e.to_string()),
                    ),
                };
                take(line, parsed);
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// A CSV row read through the header row's names, its `metadata` JSON text
/// read as JSON and a defused formula (`'=...`, as the export writes one)
/// given back as it was.
fn csv_line(row: &csv::StringRecord, headers: &csv::StringRecord) -> Result<Line, String> {
    let mut map = serde_json::Map::new();
    for (name, value) in headers.iter().zip(row.iter()) {
        let v = match name {
            "metadata" if value.is_empty() => serde_json::Value::Null,
            "metadata" => serde_json::from_str(value).map_err(|e| format!("metadata: {e}"))?,
            "statusCode"
            | "responseTime"
            | "promptTokens"
            | "completionTokens"
            | "tokensUsed"
            | "calls"
            | "costUsd"
            | "cachedPromptTokens"
            | "cacheWriteTokens"
            | "cacheWrite1hTokens"
            | "reasoningTokens"
            | "uncachedPromptCostUsd"
            | "cachedPromptCostUsd"
            | "cacheWriteCostUsd"
            | "completionCostUsd"
            | "reasoningCostUsd" => match value {
                "" => continue,
                v => serde_json::from_str(v).map_err(|_| format!("{name}: not a number: {v:?}"))?,
            },
            "rejected" | "retried" => match value {
                "true" => serde_json::Value::Bool(true),
                "false" | "" => serde_json::Value::Bool(false),
                v => return Err(format!("{name}: not true or false: {v:?}")),
            },
            _ => serde_json::Value::String(undefused(value).to_string()),
        };
        map.insert(name.to_string(), v);
    }
    serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| e.to_string())
}

/// A field the export defused (a `'` before a formula's sign).
fn undefused(v: &str) -> &str {
    match v.strip_prefix('\'') {
        Some(rest) if rest.starts_with(['=', '+', '-', '@']) => rest,
        _ => v,
    }
}

fn record(
    l: Line,
    oldest_ms: i64,
    newest_ms: i64,
    prices: &PriceTable,
) -> Result<UsageRecord, String> {
    let ts_ms = chrono::DateTime::parse_from_rfc3339(&l.timestamp)
        .map_err(|_| format!("timestamp must be RFC 3339, not {:?}", l.timestamp))?
        .timestamp_millis();
    if ts_ms < oldest_ms {
        return Err(format!(
            "timestamp {} is older than the raw-record retention ([retention] raw_days)",
            l.timestamp
        ));
    }
    if ts_ms >= newest_ms {
        return Err(format!("timestamp {} is in the future", l.timestamp));
    }
    if l.endpoint.is_empty() {
        return Err("endpoint is empty".into());
    }
    for (name, v) in [
        ("endpoint", &l.endpoint),
        ("method", &l.method),
        ("model", &l.model),
        ("userId", &l.user_id),
        ("botId", &l.bot_id),
        ("apiVersion", &l.api_version),
        ("country", &l.country),
        ("integration", &l.integration),
        ("keyId", &l.key_id),
    ] {
        if v.len() > MAX_TEXT || v.chars().any(char::is_control) {
            return Err(format!(
                "{name} must be at most {MAX_TEXT} bytes without control characters"
            ));
        }
    }
    for (name, v) in [
        ("promptTokens", l.prompt_tokens),
        ("completionTokens", l.completion_tokens),
        ("tokensUsed", l.tokens_used),
        ("calls", l.calls),
        ("cachedPromptTokens", l.cached_prompt_tokens),
        ("cacheWriteTokens", l.cache_write_tokens),
        ("cacheWrite1hTokens", l.cache_write1h_tokens),
        ("reasoningTokens", l.reasoning_tokens),
    ] {
        if v > MAX_COUNT {
            return Err(format!("{name} must be at most {MAX_COUNT}"));
        }
    }
    if l.cached_prompt_tokens + l.cache_write_tokens > l.prompt_tokens {
        return Err("cachedPromptTokens + cacheWriteTokens must be at most promptTokens".into());
    }
    if l.cache_write1h_tokens > l.cache_write_tokens {
        return Err("cacheWrite1hTokens must be at most cacheWriteTokens".into());
    }
    if l.reasoning_tokens > l.completion_tokens {
        return Err("reasoningTokens must be at most completionTokens".into());
    }
    let non_negative = |v: f64| v.is_finite() && v >= 0.0;
    let split = [
        l.uncached_prompt_cost_usd,
        l.cached_prompt_cost_usd,
        l.cache_write_cost_usd,
        l.completion_cost_usd,
        l.reasoning_cost_usd,
    ];
    if !(l.cost_usd.is_none_or(non_negative)
        && non_negative(l.response_time)
        && split.iter().flatten().all(|v| non_negative(*v)))
    {
        return Err(
            "costUsd, the costs by kind and responseTime must be numbers of at least 0".into(),
        );
    }
    let metadata = match l.metadata {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::Object(m)) => m
            .into_iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => Ok((k, s)),
                other => Ok((k, other.to_string())),
            })
            .collect::<Result<Vec<_>, String>>()?,
        Some(_) => return Err("metadata must be an object".into()),
    };
    let text = |s: String| CompactString::from(s);
    let kinds = TokenKinds {
        cached_prompt: l.cached_prompt_tokens,
        cache_write: l.cache_write_tokens,
        cache_write_1h: l.cache_write1h_tokens,
        reasoning: l.reasoning_tokens,
    };
    let mut r = UsageRecord {
        ts_ms,
        key_id: text(l.key_id),
        endpoint: text(l.endpoint),
        method: text(l.method),
        status: l.status_code,
        response_ms: l.response_time,
        prompt_tokens: l.prompt_tokens,
        completion_tokens: l.completion_tokens,
        tokens: l
            .tokens_used
            .max(l.prompt_tokens.saturating_add(l.completion_tokens)),
        model: text(l.model),
        calls: l.calls,
        cost_usd: 0.0,
        rejected: l.rejected,
        retried: l.retried,
        extra: RecordExtra {
            user_id: text(l.user_id),
            bot_id: text(l.bot_id),
            metadata,
            api_version: text(l.api_version),
            country: text(l.country),
            integration: text(l.integration),
            kinds,
            cost_split: CostSplit::NONE,
        }
        .boxed(),
    };
    // A record without its cost is priced at its own time; one with it
    // keeps it, split as the file says or else as the table would.
    let priced = || prices.cost(&r.model, &r.token_counts(), ts_ms).priced();
    let cost = match (l.cost_usd, split) {
        (None, _) => priced(),
        (Some(usd), [None, None, None, None, None]) => {
            let priced = priced();
            Priced {
                usd,
                split: if priced.usd > 0.0 {
                    priced.split.scaled(usd / priced.usd)
                } else {
                    CostSplit::NONE
                },
            }
        }
        (Some(usd), [u, c, w, o, reasoning]) => Priced {
            usd,
            split: CostSplit {
                uncached_prompt: u.unwrap_or(0.0),
                cached_prompt: c.unwrap_or(0.0),
                cache_write: w.unwrap_or(0.0),
                completion: o.unwrap_or(0.0),
                reasoning: reasoning.unwrap_or(0.0),
            },
        },
    };
    r.set_cost(cost);
    Ok(r)
}

/// What a record holds, digested: every field, in order, as text.
fn digest(r: &UsageRecord) -> [u8; 16] {
    let x = r.extra();
    let text = format!(
        "{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{:?}|{}|{}|{}|{}",
        r.ts_ms,
        r.endpoint,
        r.method,
        r.status,
        r.response_ms,
        r.prompt_tokens,
        r.completion_tokens,
        r.tokens,
        r.model,
        r.calls,
        r.cost_usd,
        r.rejected,
        r.retried,
        (&x.user_id, &x.bot_id, &x.metadata),
        x.api_version,
        x.country,
        x.integration,
        r.version(),
    );
    // Token kinds and keys came later: a record without them digests as
    // before.
    let text = if x.kinds.is_empty() && r.key_id.is_empty() {
        text
    } else {
        text + &format!("|{:?}|{}", x.kinds, r.key_id)
    };
    let full = Sha256::digest(text.as_bytes());
    let mut d = [0u8; 16];
    d.copy_from_slice(&full[..16]);
    d
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The span of time an import takes records from: raw records are kept
/// `raw_days` (retention), and none is from the future (a day of clock
/// skew allowed).
pub(crate) fn window(now: Nanos, raw_days: u32) -> (i64, i64) {
    const DAY: i64 = 86_400_000;
    let now_ms = now.millis().0;
    let today = now_ms.div_euclid(DAY);
    ((today - raw_days as i64 + 1) * DAY, now_ms + DAY)
}

/// Writes `records` for `tenant`, each once, in writes of [`WRITE`]
/// records; those of the current month count toward its live quota.
/// A write that fails leaves the ones before it in place: importing the
/// file again completes it (they are then duplicates).
pub(crate) fn write(
    store: &dyn Store,
    tenant: &Arc<TenantState>,
    records: Vec<(UsageRecord, String)>,
    now: Nanos,
) -> Result<Imported, StoreError> {
    let mut done = Imported::default();
    let mut records = records.into_iter().peekable();
    while records.peek().is_some() {
        let chunk: Vec<(UsageRecord, String)> = records.by_ref().take(WRITE).collect();
        let counts: Vec<(i64, u64, u64)> = chunk
            .iter()
            .map(|(r, _)| (r.ts_ms, r.calls, r.tokens))
            .collect();
        let (rs, ids): (Vec<UsageRecord>, Vec<String>) = chunk.into_iter().unzip();
        let block = UsageBlock {
            tenant: tenant.id.to_string(),
            records: rs,
            retired: Some(tenant.clone()),
        };
        let claims = Claims {
            key: String::new(),
            at_ms: now.millis().0,
            ids,
            key_held: false,
        };
        let held = store.write_claimed(block, claims)?;
        for ((ts_ms, calls, tokens), holder) in counts.into_iter().zip(held) {
            match holder {
                None => {
                    done.imported += 1;
                    tenant.add_usage(now, ts_ms, calls, tokens);
                }
                Some(_) => done.duplicates += 1,
            }
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "2026-11-03T10:00:00.000Z";

    fn parsed(text: &str, f: Format) -> Result<Vec<(UsageRecord, String)>, Vec<LineError>> {
        parse(text, f, 0, i64::MAX, &PriceTable::builtin())
    }

    #[test]
    fn both_formats_read_the_same_record_with_the_same_claim() {
        let nd = format!(
            "{{\"timestamp\":\"{T}\",\"tenantId\":\"old\",\"endpoint\":\"/v1/chat\",\"method\":\"POST\",\"statusCode\":200,\"responseTime\":12.5,\"promptTokens\":10,\"completionTokens\":5,\"tokensUsed\":15,\"model\":\"gpt-4o\",\"userId\":\"u\",\"botId\":\"b\",\"metadata\":{{\"plan\":\"x, y\"}},\"calls\":1,\"costUsd\":0.0001,\"rejected\":false,\"apiVersion\":\"v1\",\"country\":\"DE\",\"integration\":\"\",\"retried\":false}}\n"
        );
        let csv = format!(
            "timestamp,tenantId,endpoint,method,statusCode,responseTime,promptTokens,completionTokens,tokensUsed,model,userId,botId,calls,costUsd,rejected,metadata,apiVersion,country,integration,retried\n{T},old,/v1/chat,POST,200,12.5,10,5,15,gpt-4o,u,b,1,0.0001,false,\"{{\"\"plan\"\":\"\"x, y\"\"}}\",v1,DE,,false\n"
        );
        let a = parsed(&nd, Format::Ndjson).unwrap();
        let b = parsed(&csv, Format::Csv).unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a, b);
        assert_eq!(
            a[0].0.extra().metadata,
            [("plan".to_string(), "x, y".to_string())]
        );
        // Two equal records are two claims; the file again, the same two.
        let twice = parsed(&format!("{nd}{nd}"), Format::Ndjson).unwrap();
        assert_ne!(twice[0].1, twice[1].1);
        assert_eq!(parsed(&format!("{nd}{nd}"), Format::Ndjson).unwrap(), twice);
    }

    #[test]
    fn every_bad_line_is_named_and_nothing_is_taken() {
        let good = format!("{{\"timestamp\":\"{T}\",\"endpoint\":\"/a\"}}");
        let text = format!(
            "{good}\nnot json\n{{\"timestamp\":\"yesterday\",\"endpoint\":\"/a\"}}\n\n{{\"timestamp\":\"{T}\",\"endpoint\":\"\"}}\n{{\"timestamp\":\"{T}\",\"endpoint\":\"/a\",\"calls\":-1}}\n"
        );
        let errors = parsed(&text, Format::Ndjson).unwrap_err();
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 3, 5, 6], "{errors:?}");
        // Too old, and in the future.
        let e = parse(
            &good,
            Format::Ndjson,
            i64::MAX - 1,
            i64::MAX,
            &PriceTable::builtin(),
        )
        .unwrap_err();
        assert!(e[0].error.contains("retention"), "{e:?}");
        let e = parse(&good, Format::Ndjson, 0, 1, &PriceTable::builtin()).unwrap_err();
        assert!(e[0].error.contains("future"), "{e:?}");
        // CSV: a row with a bad number, by its line.
        let csv =
            "timestamp,endpoint,calls\n2026-11-03T10:00:00Z,/a,1\n2026-11-03T10:00:00Z,/a,lots\n";
        let e = parsed(csv, Format::Csv).unwrap_err();
        assert_eq!(e[0].line, 3, "{e:?}");
        assert!(e[0].error.contains("calls"), "{e:?}");
    }

    #[test]
    fn a_defused_formula_comes_back_as_it_was() {
        let csv = "timestamp,endpoint,userId\n2026-11-03T10:00:00Z,/a,\"'=SUM(A1)\"\n";
        let r = parsed(csv, Format::Csv).unwrap();
        assert_eq!(r[0].0.extra().user_id, "=SUM(A1)");
    }
}
