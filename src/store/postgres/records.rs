//! Usage records in PostgreSQL: the binary `COPY` a batch is written with,
//! the day partitions it needs, reading them back and dropping old days.
//!
//! The `COPY` stream is encoded here, on the flusher's thread, straight
//! from the records (PostgreSQL's binary format: a header, then per row its
//! field count and each field's length and big-endian bytes): no value is
//! boxed per field on its way to the socket.

use chrono::{Datelike, TimeZone, Utc};
use tokio_postgres::Row;

use crate::model::{CompactString, CostSplit, RecordExtra, TokenKinds, UsageRecord};
use crate::store::UsageBlock;

pub(super) const MS_PER_DAY: i64 = 86_400_000;

/// The columns the `COPY` writes, in its order (`id` takes its default).
pub(super) const COPY_RECORDS: &str = "COPY usage_records (day, tenant_id, ts, endpoint, method, \
     status, response_ms, prompt_tokens, completion_tokens, tokens, model, user_id, bot_id, \
     metadata, calls, cost_usd, rejected, api_version, country, integration, retried, \
     cached_prompt_tokens, cache_write_tokens, cache_write_1h_tokens, reasoning_tokens, \
     cost_uncached_prompt_usd, cost_cached_prompt_usd, cost_cache_write_usd, cost_completion_usd, \
     cost_reasoning_usd, key_id) FROM STDIN (FORMAT binary)";

/// The columns of a `COPY` stream of each layout: a write still in a
/// spool from an older version leaves the newer columns to their defaults.
pub(super) fn copy_columns(layout: u32) -> &'static str {
    match layout {
        0 | 1 => COPY_RECORDS_V1,
        2 => COPY_RECORDS_V2,
        _ => COPY_RECORDS,
    }
}

/// Layout 1: before schema version 2.
const COPY_RECORDS_V1: &str = "COPY usage_records (day, tenant_id, ts, endpoint, method, \
     status, response_ms, prompt_tokens, completion_tokens, tokens, model, user_id, bot_id, \
     metadata, calls, cost_usd, rejected) FROM STDIN (FORMAT binary)";

/// Layout 2: before token kinds (schema version 8).
const COPY_RECORDS_V2: &str = "COPY usage_records (day, tenant_id, ts, endpoint, method, \
     status, response_ms, prompt_tokens, completion_tokens, tokens, model, user_id, bot_id, \
     metadata, calls, cost_usd, rejected, api_version, country, integration, retried) \
     FROM STDIN (FORMAT binary)";

/// The `COPY` layout [`encode_copy`] writes (a spooled write records it).
pub(super) const COPY_LAYOUT: u32 = 3;

/// The columns a read takes, in [`record`]'s order.
pub(super) const RECORD_COLUMNS: &str = "day, id, ts, endpoint, method, status, response_ms, \
     prompt_tokens, completion_tokens, tokens, model, user_id, bot_id, metadata, calls, \
     cost_usd, rejected, api_version, country, integration, retried, cached_prompt_tokens, \
     cache_write_tokens, cache_write_1h_tokens, reasoning_tokens, cost_uncached_prompt_usd, \
     cost_cached_prompt_usd, cost_cache_write_usd, cost_completion_usd, cost_reasoning_usd, key_id";

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_US: i64 = 946_684_800_000_000;

pub(super) fn day_of(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(MS_PER_DAY)
}

/// The partition holding day `day`: `usage_records_20261201`.
pub(super) fn partition(day: i64) -> String {
    match Utc.timestamp_millis_opt(day * MS_PER_DAY).single() {
        Some(t) if (1..=9999).contains(&t.year()) => {
            format!("usage_records_{}", t.format("%Y%m%d"))
        }
        _ if day < 0 => format!("usage_records_m{}", -day),
        _ => format!("usage_records_n{day}"),
    }
}

/// The `CREATE TABLE` of day `day`'s partition.
pub(super) fn create_partition(day: i64) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} PARTITION OF usage_records FOR VALUES FROM ({day}) TO ({})",
        partition(day),
        day + 1
    )
}

/// The blocks' records as one binary `COPY` stream.
pub(super) fn encode_copy(blocks: &[&UsageBlock]) -> Vec<u8> {
    let records: usize = blocks.iter().map(|b| b.records.len()).sum();
    let mut out = Vec::with_capacity(19 + records * 200);
    out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    out.extend_from_slice(&0i32.to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes());
    for block in blocks {
        for r in &block.records {
            row(&mut out, &block.tenant, r);
        }
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    out
}

/// Binary `COPY` streams of one layout joined into one: the first's
/// header, every stream's rows, one trailer.
pub(super) fn join_copies<'a>(streams: impl Iterator<Item = &'a [u8]> + Clone) -> Vec<u8> {
    let rows: usize = streams
        .clone()
        .map(|s| s.len().saturating_sub(COPY_HEADER + COPY_TRAILER))
        .sum();
    let mut out = Vec::with_capacity(COPY_HEADER + rows + COPY_TRAILER);
    let mut first = true;
    for s in streams {
        if s.len() < COPY_HEADER + COPY_TRAILER {
            continue;
        }
        if first {
            out.extend_from_slice(&s[..COPY_HEADER]);
            first = false;
        }
        out.extend_from_slice(&s[COPY_HEADER..s.len() - COPY_TRAILER]);
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    out
}

/// The bytes of [`encode_copy`]'s header (signature, flags, extension
/// length) and trailer.
const COPY_HEADER: usize = 19;
const COPY_TRAILER: usize = 2;

fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn int8(out: &mut Vec<u8>, v: u64) {
    field(out, &(v.min(i64::MAX as u64) as i64).to_be_bytes());
}

fn float8(out: &mut Vec<u8>, v: f64) {
    field(out, &v.to_be_bytes());
}

fn row(out: &mut Vec<u8>, tenant: &str, r: &UsageRecord) {
    out.extend_from_slice(&31i16.to_be_bytes());
    field(out, &(day_of(r.ts_ms) as i32).to_be_bytes());
    field(out, tenant.as_bytes());
    let us = r.ts_ms.saturating_mul(1000).saturating_sub(PG_EPOCH_US);
    field(out, &us.to_be_bytes());
    field(out, r.endpoint.as_bytes());
    field(out, r.method.as_bytes());
    field(out, &(r.status.min(i16::MAX as u16) as i16).to_be_bytes());
    float8(out, r.response_ms);
    int8(out, r.prompt_tokens);
    int8(out, r.completion_tokens);
    int8(out, r.tokens);
    field(out, r.model.as_bytes());
    let x = r.extra();
    field(out, x.user_id.as_bytes());
    field(out, x.bot_id.as_bytes());
    // jsonb: a version byte, then the text. An object, so that a BI tool
    // reads `metadata->>'plan'`; the keys are unique (they come from one).
    let mut json = vec![1u8, b'{'];
    for (i, (k, v)) in x.metadata.iter().enumerate() {
        if i > 0 {
            json.push(b',');
        }
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut json, k);
        json.push(b':');
        let _ = serde_json::to_writer(&mut json, v);
    }
    json.push(b'}');
    field(out, &json);
    int8(out, r.calls);
    float8(out, r.cost_usd);
    field(out, &[r.rejected as u8]);
    field(out, x.api_version.as_bytes());
    field(out, x.country.as_bytes());
    field(out, x.integration.as_bytes());
    field(out, &[r.retried as u8]);
    let (k, c) = (x.kinds, x.cost_split);
    int8(out, k.cached_prompt);
    int8(out, k.cache_write);
    int8(out, k.cache_write_1h);
    int8(out, k.reasoning);
    float8(out, c.uncached_prompt);
    float8(out, c.cached_prompt);
    float8(out, c.cache_write);
    float8(out, c.completion);
    float8(out, c.reasoning);
    field(out, r.key_id.as_bytes());
}

/// A record read back with [`RECORD_COLUMNS`]; its `(day, id)` is where
/// the next page starts.
pub(super) fn record(row: &Row) -> ((i32, i64), UsageRecord) {
    let ts: chrono::DateTime<Utc> = row.get(2);
    let n = |i: usize| row.get::<_, i64>(i).max(0) as u64;
    let text = |i: usize| CompactString::new(row.get::<_, &str>(i));
    let metadata: serde_json::Value = row.get(13);
    let mut metadata: Vec<(String, String)> = match metadata {
        serde_json::Value::Object(map) => map
            .into_iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => (k, s),
                other => (k, other.to_string()),
            })
            .collect(),
        _ => Vec::new(),
    };
    // As written: ingestion takes metadata from a JSON object, by key.
    metadata.sort_by(|a, b| a.0.cmp(&b.0));
    let record = UsageRecord {
        ts_ms: ts.timestamp_millis(),
        key_id: text(30),
        endpoint: text(3),
        method: text(4),
        status: row.get::<_, i16>(5).max(0) as u16,
        response_ms: row.get(6),
        prompt_tokens: n(7),
        completion_tokens: n(8),
        tokens: n(9),
        model: text(10),
        calls: n(14),
        cost_usd: row.get(15),
        rejected: row.get(16),
        retried: row.get(20),
        extra: RecordExtra {
            user_id: text(11),
            bot_id: text(12),
            metadata,
            api_version: text(17),
            country: text(18),
            integration: text(19),
            kinds: TokenKinds {
                cached_prompt: n(21),
                cache_write: n(22),
                cache_write_1h: n(23),
                reasoning: n(24),
            },
            cost_split: CostSplit {
                uncached_prompt: row.get(25),
                cached_prompt: row.get(26),
                cache_write: row.get(27),
                completion: row.get(28),
                reasoning: row.get(29),
            },
        }
        .boxed(),
    };
    ((row.get(0), row.get(1)), record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joined_copies_are_the_copy_of_all_their_rows() {
        let block = |t: &str, n: i64| {
            UsageBlock::new(
                t,
                (0..n)
                    .map(|i| UsageRecord {
                        ts_ms: 1_795_000_000_000 + i,
                        endpoint: format!("/e{i}").as_str().into(),
                        calls: 1,
                        ..Default::default()
                    })
                    .collect(),
            )
        };
        let (a, b, c) = (block("a", 3), block("b", 0), block("c", 2));
        let joined = join_copies(
            [encode_copy(&[&a]), encode_copy(&[&b]), encode_copy(&[&c])]
                .iter()
                .map(|s| s.as_slice()),
        );
        assert_eq!(joined, encode_copy(&[&a, &b, &c]));
    }
}
