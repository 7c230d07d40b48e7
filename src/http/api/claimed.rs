//! Reported usage counted exactly once (`POST /api/v1/usage` with record
//! `id`s or an `Idempotency-Key`): such a batch does not go through the
//! queue; its request writes it, each record with the claim of its id, in
//! one store write ([`Store::write_claimed`]), so that a claim exists
//! exactly when its record is stored - on every instance sharing the
//! store - and a batch sent again (its answer lost, or to two instances at
//! once) counts once. Only then are the written records counted toward
//! the tenant's quotas.
//!
//! A record's claim is its own `id`, or, in a batch with an
//! `Idempotency-Key`, the key and its place in the batch. A repeat of the
//! batch is answered as the first sending was: `accepted` is what the
//! first sending took, `duplicates` what it found claimed before.
//!
//! [`Store::write_claimed`]: crate::store::Store::write_claimed

use std::collections::HashSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::tenant::admit_batch;
use crate::clock::Nanos;
use crate::http::wire::error::ApiError;
use crate::http::AppState;
use crate::model::UsageRecord;
use crate::quota::TenantState;
use crate::store::{Claims, StoreError, UsageBlock};
use crate::usage::Queued;

/// The longest `Idempotency-Key` and record `id`, in bytes.
const MAX_KEY: usize = 255;

/// The batch's `Idempotency-Key`, empty when none is sent.
pub(super) fn idempotency_key(req: &HttpRequest) -> Result<String, ApiError> {
    let Some(v) = req.headers().get("idempotency-key") else {
        return Ok(String::new());
    };
    match v.to_str() {
        Ok(k)
            if (1..=MAX_KEY).contains(&k.len()) && k.bytes().all(|b| (0x20..0x7f).contains(&b)) =>
        {
            Ok(k.to_string())
        }
        _ => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 printable ASCII characters (a UUID is a good choice)",
        )),
    }
}

/// A record `id`: 1-255 bytes, no control characters (the ids a key gives
/// records without one begin with one, so the two never meet).
pub(super) fn check_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_KEY || id.chars().any(char::is_control) {
        return Err("id must be 1 to 255 bytes with no control characters".into());
    }
    Ok(())
}

/// A parsed batch that claims ids.
pub(super) struct Batch {
    pub records: Vec<Queued>,
    /// `ids[i]`: record `i`'s own id, empty for none.
    pub ids: Vec<String>,
    /// The `Idempotency-Key`, empty for none.
    pub key: String,
    /// (record, reservation id) for the records that settle a reservation.
    pub settles: Vec<(usize, String)>,
}

/// Writes `batch` with its claims and counts what was written; answers
/// 202 with what was taken and what was a duplicate.
pub(super) async fn ingest(
    st: &AppState,
    tenant: &Arc<TenantState>,
    batch: Batch,
    now_ns: Nanos,
) -> Result<HttpResponse, ApiError> {
    let Batch {
        records,
        ids,
        key,
        settles,
    } = batch;
    let n = records.len();
    // A repeat of an id within the batch is a duplicate of its first.
    let repeat: Vec<bool> = {
        let mut seen = HashSet::with_capacity(n);
        ids.iter()
            .map(|id| !id.is_empty() && !seen.insert(id.as_str()))
            .collect()
    };
    let in_batch = repeat.iter().filter(|r| **r).count();
    let kept = n - in_batch;
    admit_batch(st, tenant, kept, now_ns)?;
    let mut block = UsageBlock {
        tenant: tenant.id.to_string(),
        records: Vec::with_capacity(kept),
        retired: Some(tenant.clone()),
    };
    let mut claims = Claims {
        key: key.clone(),
        at_ms: now_ns.millis().0,
        ids: Vec::with_capacity(kept),
        key_held: false,
    };
    // Each kept record's place in the batch, and what it counts.
    // (A tenant with limits of SPEC §12 keeps a copy of each record: its
    // key, user, bot, model and cost count against them.)
    let scoped = tenant.scoped().is_some();
    let mut kept_at: Vec<(usize, UsageRecord)> = Vec::with_capacity(kept);
    for (i, (q, id)) in records.into_iter().zip(ids).enumerate() {
        if repeat[i] {
            continue;
        }
        let r = q.record;
        kept_at.push((
            i,
            if scoped {
                r.clone()
            } else {
                UsageRecord {
                    ts_ms: r.ts_ms,
                    calls: r.calls,
                    tokens: r.tokens,
                    ..Default::default()
                }
            },
        ));
        block.records.push(r);
        claims.ids.push(id);
    }
    // The write and the counting run on the blocking pool together: a
    // client gone before its answer (the case a retry exists for) must
    // not leave its records written and uncounted.
    let metering = st.metering.clone();
    let owner = tenant.clone();
    // The key that reports the batch (every record's).
    let reporter = block
        .records
        .iter()
        .map(|r| (r.key_id.clone(), r.ts_ms))
        .max_by_key(|(_, ts)| *ts);
    let done = web::block(move || {
        let tenant = owner;
        let held = match metering.registry.store().write_claimed(block, claims) {
            Ok(held) => held,
            Err(e) => {
                tenant.refund_records(kept as u64);
                return Err(e);
            }
        };
        // Count what was written, settling the reservations it names; the
        // rest was counted when its id was first claimed.
        let mut taken = Taken {
            accepted: 0,
            duplicates: in_batch as u64,
            replayed: false,
        };
        let mut fresh = 0u64;
        let mut settles = settles.into_iter().peekable();
        for ((i, record), holder) in kept_at.iter().zip(&held) {
            let i = *i;
            while settles.next_if(|(at, _)| *at < i).is_some() {}
            let settle = settles.next_if(|(at, _)| *at == i);
            match holder {
                None => {
                    taken.accepted += 1;
                    fresh += 1;
                    let reservation =
                        settle.and_then(|(_, id)| metering.reservations.take(&tenant.id, &id));
                    tenant.count_record(now_ns, record, reservation);
                }
                Some(k) if !key.is_empty() && *k == key => {
                    taken.accepted += 1;
                    taken.replayed = true;
                }
                Some(_) => taken.duplicates += 1,
            }
        }
        tenant.refund_records(kept as u64 - fresh);
        metering.stats.persisted.fetch_add(fresh, Relaxed);
        metering
            .stats
            .duplicates
            .fetch_add(n as u64 - fresh, Relaxed);
        if fresh > 0 {
            if let Some(watch) = &metering.watch {
                watch(&tenant);
            }
        }
        if let Some((key_id, at_ms)) = reporter {
            metering.key_uses.used(&tenant.id, &key_id, at_ms);
            let now_ms = now_ns.millis().0;
            metering
                .key_uses
                .write_due(metering.registry.store().as_ref(), now_ms);
        }
        Ok(taken)
    })
    .await;
    let taken = match done {
        Ok(Ok(taken)) => taken,
        Ok(Err(e)) => return Err(store_error(&e)),
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the server is stopping; retry against another instance",
            )
            .retry_after(1))
        }
    };
    let mut answer = HttpResponse::Accepted();
    if taken.replayed {
        answer.insert_header(("Idempotent-Replayed", "true"));
    }
    Ok(answer.json(serde_json::json!({
        "accepted": taken.accepted,
        "dropped": 0,
        "duplicates": taken.duplicates,
    })))
}

/// What a claimed batch took: its answer.
struct Taken {
    accepted: u64,
    duplicates: u64,
    /// Some of it was taken by an earlier sending with the same key.
    replayed: bool,
}

/// The answer to a claimed write the store did not make: nothing was
/// counted, and a retry is safe (it is answered once).
fn store_error(e: &StoreError) -> ApiError {
    if e.rejects_data() {
        return ApiError::invalid(format!("the store refused a record of this batch: {e}"));
    }
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        format!(
            "a batch with record ids or an Idempotency-Key is written before it is answered, \
             and the store cannot take it right now ({e}); retry it - it will count once"
        ),
    )
    .retry_after(5)
}
