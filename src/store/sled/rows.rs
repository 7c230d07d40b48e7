//! The rows sled keeps, apart from the domain and API types: each is what
//! the codec writes under one key, so a field added to an API body never
//! changes the stored format, and a format change is made here (with its
//! upgrade in `upgrade.rs`).
//!
//! Format 3 (this one): times are milliseconds since the epoch, a tenant's
//! status a flag. Usage records keep format 2's layout ([`RecordRow`], with
//! format 4's tail in [`RecordExt`]), with no copy on the write path.

use serde::{Deserialize, Serialize};

use crate::clock::ms_to_utc;
use crate::model::{
    ApiKey, CompactString, CostSplit, IngestRate, Plan, PreviousSecret, RateLimit, RecordExtra,
    StoredKey, Tenant, TenantStatus, TokenKinds, UsageRecord,
};
use crate::quota::period::Period;
use crate::rollup::Cell;
use crate::store::codec::{self, CodecError};
use crate::store::limit_rows::{limits_of, rows_of, LimitRow};
use crate::store::{AlertMark, MarkOf, PeriodTotals, StoreError, StoredCell};

/// A limit: `count` per `per_seconds`, up to `burst` at once.
#[derive(Clone, Copy, Serialize, Deserialize)]
pub(crate) struct RateRow {
    pub count: u64,
    pub per_seconds: u64,
    pub burst: u64,
}

impl From<RateLimit> for RateRow {
    fn from(r: RateLimit) -> RateRow {
        RateRow {
            count: r.requests,
            per_seconds: r.per_seconds,
            burst: r.burst,
        }
    }
}

impl From<IngestRate> for RateRow {
    fn from(r: IngestRate) -> RateRow {
        RateRow {
            count: r.records,
            per_seconds: r.per_seconds,
            burst: r.burst,
        }
    }
}

impl From<RateRow> for RateLimit {
    fn from(r: RateRow) -> RateLimit {
        RateLimit {
            requests: r.count,
            per_seconds: r.per_seconds,
            burst: r.burst,
        }
    }
}

impl From<RateRow> for IngestRate {
    fn from(r: RateRow) -> IngestRate {
        IngestRate {
            records: r.count,
            per_seconds: r.per_seconds,
            burst: r.burst,
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct PlanRow {
    pub id: String,
    pub name: String,
    pub monthly_calls: Option<u64>,
    pub monthly_tokens: Option<u64>,
    pub rate_limit: Option<RateRow>,
    pub price_usd_monthly: f64,
    pub ingest_rate: Option<RateRow>,
    /// Format 5 on.
    pub reserve_tokens: Option<u64>,
    pub reservation_ttl_seconds: Option<u64>,
    /// Format 7 on.
    pub limits: Vec<LimitRow>,
    pub reserve_usd: Option<u64>,
}

impl From<&Plan> for PlanRow {
    fn from(p: &Plan) -> PlanRow {
        PlanRow {
            id: p.id.clone(),
            name: p.name.clone(),
            monthly_calls: p.monthly_calls,
            monthly_tokens: p.monthly_tokens,
            rate_limit: p.rate_limit.map(RateRow::from),
            price_usd_monthly: p.price_usd_monthly,
            ingest_rate: p.ingest_rate.map(RateRow::from),
            reserve_tokens: p.reserve_tokens,
            reservation_ttl_seconds: p.reservation_ttl_seconds,
            limits: rows_of(&p.limits),
            reserve_usd: p.reserve_usd,
        }
    }
}

impl TryFrom<PlanRow> for Plan {
    type Error = StoreError;
    fn try_from(p: PlanRow) -> Result<Plan, StoreError> {
        Ok(Plan {
            id: p.id,
            name: p.name,
            monthly_calls: p.monthly_calls,
            monthly_tokens: p.monthly_tokens,
            rate_limit: p.rate_limit.map(RateLimit::from),
            price_usd_monthly: p.price_usd_monthly,
            ingest_rate: p.ingest_rate.map(IngestRate::from),
            reserve_tokens: p.reserve_tokens,
            reservation_ttl_seconds: p.reservation_ttl_seconds,
            limits: limits_of(&p.limits)?,
            reserve_usd: p.reserve_usd,
        })
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct TenantRow {
    pub id: String,
    pub name: String,
    pub plan_id: String,
    pub suspended: bool,
    pub(crate) created_ms: i64,
    /// Format 7 on.
    pub(crate) limits: Vec<LimitRow>,
    pub(crate) billing_day: Option<u8>,
}

impl From<&Tenant> for TenantRow {
    fn from(t: &Tenant) -> TenantRow {
        TenantRow {
            id: t.id.clone(),
            name: t.name.clone(),
            plan_id: t.plan_id.clone(),
            suspended: t.status == TenantStatus::Suspended,
            created_ms: t.created_at.timestamp_millis(),
            limits: rows_of(&t.limits),
            billing_day: t.billing_day,
        }
    }
}

impl TryFrom<TenantRow> for Tenant {
    type Error = StoreError;
    fn try_from(t: TenantRow) -> Result<Tenant, StoreError> {
        Ok(Tenant {
            id: t.id,
            name: t.name,
            plan_id: t.plan_id,
            status: if t.suspended {
                TenantStatus::Suspended
            } else {
                TenantStatus::Active
            },
            created_at: ms_to_utc(t.created_ms),
            limits: limits_of(&t.limits)?,
            billing_day: t.billing_day,
        })
    }
}

/// A key's public fields and the SHA-256 of its secret.
#[derive(Serialize, Deserialize)]
pub(crate) struct KeyRow {
    pub id: String,
    pub tenant_id: String,
    pub name: String,
    pub prefix: String,
    pub(crate) created_ms: i64,
    pub(crate) revoked_ms: Option<i64>,
    pub hash: [u8; 32],
    /// Format 6: when the key expires, and the secret a rotation replaced
    /// with until when it works.
    pub(crate) expires_ms: Option<i64>,
    pub(crate) previous: Option<([u8; 32], i64)>,
    /// Format 7 on.
    pub(crate) limits: Vec<LimitRow>,
}

impl From<&StoredKey> for KeyRow {
    fn from(k: &StoredKey) -> KeyRow {
        KeyRow {
            id: k.key.id.clone(),
            tenant_id: k.key.tenant_id.clone(),
            name: k.key.name.clone(),
            prefix: k.key.prefix.clone(),
            created_ms: k.key.created_at.timestamp_millis(),
            revoked_ms: k.key.revoked_at.map(|t| t.timestamp_millis()),
            hash: k.hash,
            expires_ms: k.key.expires_at.map(|t| t.timestamp_millis()),
            previous: k.previous.map(|p| (p.hash, p.until.timestamp_millis())),
            limits: rows_of(&k.key.limits),
        }
    }
}

impl TryFrom<KeyRow> for StoredKey {
    type Error = StoreError;
    fn try_from(k: KeyRow) -> Result<StoredKey, StoreError> {
        Ok(StoredKey {
            key: ApiKey {
                id: k.id,
                tenant_id: k.tenant_id,
                name: k.name,
                prefix: k.prefix,
                created_at: ms_to_utc(k.created_ms),
                revoked_at: k.revoked_ms.map(ms_to_utc),
                expires_at: k.expires_ms.map(ms_to_utc),
                last_used_at: None,
                limits: limits_of(&k.limits)?,
            },
            hash: k.hash,
            previous: k.previous.map(|(hash, until)| PreviousSecret {
                hash,
                until: ms_to_utc(until),
            }),
        })
    }
}

/// A [`UsageRecord`]'s stored form (format 2's layout): its strings
/// borrowed from the record when written ([`RecordOut`]), decoded straight
/// into the record's own types when read ([`RecordIn`]), so neither way
/// makes a copy in between.
#[derive(Serialize, Deserialize)]
struct RecordRow<S, M> {
    ts_ms: i64,
    endpoint: S,
    method: S,
    status: u16,
    response_ms: f64,
    prompt_tokens: u64,
    completion_tokens: u64,
    tokens: u64,
    model: S,
    user_id: S,
    bot_id: S,
    metadata: M,
    calls: u64,
    cost_usd: f64,
    rejected: bool,
    // What format 4 added is stored in a block's tail ([`RecordExt`]).
}

/// What format 4 added to a record, kept after a block's records (one per
/// record, in order) when any of them has one: a block written before has
/// no tail, and reads as records without them. Written borrowed
/// ([`RecordExt::of`]), read owned.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct RecordExt<S = CompactString> {
    pub(crate) api_version: S,
    pub country: S,
    pub integration: S,
    pub retried: bool,
}

impl RecordExt {
    pub(super) fn of(r: &UsageRecord) -> RecordExt<&str> {
        let x = r.extra();
        RecordExt {
            api_version: &x.api_version,
            country: &x.country,
            integration: &x.integration,
            retried: r.retried,
        }
    }

    pub(super) fn is_empty_for(r: &UsageRecord) -> bool {
        let x = r.extra();
        x.api_version.is_empty() && x.country.is_empty() && x.integration.is_empty() && !r.retried
    }

    pub(super) fn apply(self, r: &mut UsageRecord) {
        r.retried = self.retried;
        if !(self.api_version.is_empty() && self.country.is_empty() && self.integration.is_empty())
        {
            let x = r.extra_mut();
            x.api_version = self.api_version;
            x.country = self.country;
            x.integration = self.integration;
        }
    }
}

/// A record's token kinds and where its cost went (format 6).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct KindsRow {
    cached_prompt: u64,
    cache_write: u64,
    cache_write_1h: u64,
    reasoning: u64,
    uncached_prompt_usd: f64,
    cached_prompt_usd: f64,
    cache_write_usd: f64,
    completion_usd: f64,
    reasoning_usd: f64,
}

/// A record's part of a chunk's format 6 tail, as small as it can be: a
/// record priced without token kinds (most) keeps only its two costs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) enum KindsCell {
    None,
    /// No token kinds: the cost split between the prompt and the completion.
    Split {
        uncached_prompt_usd: f64,
        completion_usd: f64,
    },
    Full(KindsRow),
}

impl KindsCell {
    fn of(r: &UsageRecord) -> KindsCell {
        let x = r.extra();
        let (k, c) = (x.kinds, x.cost_split);
        if k.is_empty() && c.cached_prompt == 0.0 && c.cache_write == 0.0 && c.reasoning == 0.0 {
            return if c.is_empty() {
                KindsCell::None
            } else {
                KindsCell::Split {
                    uncached_prompt_usd: c.uncached_prompt,
                    completion_usd: c.completion,
                }
            };
        }
        KindsCell::Full(KindsRow::of(r))
    }

    fn apply(self, r: &mut UsageRecord) {
        match self {
            KindsCell::None => {}
            KindsCell::Split {
                uncached_prompt_usd,
                completion_usd,
            } => {
                r.extra_mut().cost_split = CostSplit {
                    uncached_prompt: uncached_prompt_usd,
                    completion: completion_usd,
                    ..CostSplit::NONE
                };
            }
            KindsCell::Full(k) => k.apply(r),
        }
    }
}

impl KindsRow {
    fn of(r: &UsageRecord) -> KindsRow {
        let x = r.extra();
        let (k, c) = (x.kinds, x.cost_split);
        KindsRow {
            cached_prompt: k.cached_prompt,
            cache_write: k.cache_write,
            cache_write_1h: k.cache_write_1h,
            reasoning: k.reasoning,
            uncached_prompt_usd: c.uncached_prompt,
            cached_prompt_usd: c.cached_prompt,
            cache_write_usd: c.cache_write,
            completion_usd: c.completion,
            reasoning_usd: c.reasoning,
        }
    }

    fn apply(self, r: &mut UsageRecord) {
        let x = r.extra_mut();
        x.kinds = TokenKinds {
            cached_prompt: self.cached_prompt,
            cache_write: self.cache_write,
            cache_write_1h: self.cache_write_1h,
            reasoning: self.reasoning,
        };
        x.cost_split = CostSplit {
            uncached_prompt: self.uncached_prompt_usd,
            cached_prompt: self.cached_prompt_usd,
            cache_write: self.cache_write_usd,
            completion: self.completion_usd,
            reasoning: self.reasoning_usd,
        };
    }
}

/// What format 6 added to a chunk's records, kept after their
/// [`RecordExt`]s when any record has some: the key that made each (its
/// id once a chunk, each record naming it by place) and the token kinds
/// of those that have them. A chunk written before has no second tail.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct ChunkExt6 {
    /// The key ids the chunk's records name, each once.
    keys: Vec<CompactString>,
    /// Per record: 1 + its key's place in `keys`; 0 for none.
    key_of: Vec<u32>,
    /// Per record: its token kinds and cost by kind.
    kinds: Vec<KindsCell>,
}

impl ChunkExt6 {
    /// Whether `records` need the tail: one has a key or token kinds.
    pub(super) fn needed(records: &[RecordOut]) -> bool {
        records.iter().any(|r| {
            let x = r.0.extra();
            // What `KindsCell::of` answers `None` for, without building it.
            !(r.0.key_id.is_empty() && x.kinds.is_empty() && x.cost_split.is_empty())
        })
    }

    /// Appends the tail of `records` to `out`, byte for byte what a
    /// [`ChunkExt6`] encodes to, without building one: the chunk's key ids
    /// are listed once by reference, every other field written as it is
    /// read (a `Vec` is its length, then its items).
    pub(super) fn encode_onto(records: &[RecordOut], out: &mut Vec<u8>) -> Result<(), CodecError> {
        let mut keys: Vec<&str> = Vec::new();
        for r in records {
            let k = r.0.key_id.as_str();
            if !k.is_empty() && !keys.contains(&k) {
                keys.push(k);
            }
        }
        codec::encode_onto(&keys, out)?;
        codec::encode_onto(&(records.len() as u64), out)?;
        // Runs of one key look it up once; a place below 251 is its one
        // byte (bincode's varint), as `None` is a zero byte.
        for run in records.chunk_by(|a, b| a.0.key_id == b.0.key_id) {
            let k = run[0].0.key_id.as_str();
            let at = keys
                .iter()
                .position(|x| *x == k)
                .map_or(0, |i| i as u32 + 1);
            if at < 251 {
                out.resize(out.len() + run.len(), at as u8);
            } else {
                for _ in run {
                    codec::encode_onto(&at, out)?;
                }
            }
        }
        codec::encode_onto(&(records.len() as u64), out)?;
        for r in records {
            match KindsCell::of(r.0) {
                // Variant 0, as bincode writes it.
                KindsCell::None => out.push(0),
                // Variant 1 and two f64s (little endian, bincode's fixed width).
                KindsCell::Split {
                    uncached_prompt_usd,
                    completion_usd,
                } => {
                    out.push(1);
                    out.extend_from_slice(&uncached_prompt_usd.to_le_bytes());
                    out.extend_from_slice(&completion_usd.to_le_bytes());
                }
                full => codec::encode_onto(&full, out)?,
            }
        }
        Ok(())
    }

    /// Gives each of `records` (the chunk's, in order) what the tail says.
    pub(super) fn apply(self, records: &mut [UsageRecord]) {
        if self.key_of.len() != records.len() || self.kinds.len() != records.len() {
            return;
        }
        for ((r, key), kinds) in records.iter_mut().zip(self.key_of).zip(self.kinds) {
            if let Some(id) = (key as usize).checked_sub(1).and_then(|i| self.keys.get(i)) {
                r.key_id = id.clone();
            }
            kinds.apply(r);
        }
    }
}

/// A record to encode.
pub(super) struct RecordOut<'a>(pub &'a UsageRecord);

impl Serialize for RecordOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let x = r.extra();
        RecordRow::<&str, &[(String, String)]> {
            ts_ms: r.ts_ms,
            endpoint: &r.endpoint,
            method: &r.method,
            status: r.status,
            response_ms: r.response_ms,
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            tokens: r.tokens,
            model: &r.model,
            user_id: &x.user_id,
            bot_id: &x.bot_id,
            metadata: &x.metadata,
            calls: r.calls,
            cost_usd: r.cost_usd,
            rejected: r.rejected,
        }
        .serialize(s)
    }
}

/// A decoded record.
pub(super) struct RecordIn(pub UsageRecord);

impl<'de> Deserialize<'de> for RecordIn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = RecordRow::<CompactString, Vec<(String, String)>>::deserialize(d)?;
        Ok(RecordIn(UsageRecord {
            ts_ms: r.ts_ms,
            key_id: CompactString::default(),
            endpoint: r.endpoint,
            method: r.method,
            status: r.status,
            response_ms: r.response_ms,
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            tokens: r.tokens,
            model: r.model,
            calls: r.calls,
            cost_usd: r.cost_usd,
            rejected: r.rejected,
            retried: false,
            extra: RecordExtra {
                user_id: r.user_id,
                bot_id: r.bot_id,
                metadata: r.metadata,
                ..RecordExtra::default()
            }
            .boxed(),
        }))
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct TotalsRow {
    pub calls: u64,
    pub tokens: u64,
}

impl From<PeriodTotals> for TotalsRow {
    fn from(t: PeriodTotals) -> TotalsRow {
        TotalsRow {
            calls: t.calls,
            tokens: t.tokens,
        }
    }
}

impl From<TotalsRow> for PeriodTotals {
    fn from(t: TotalsRow) -> PeriodTotals {
        PeriodTotals {
            calls: t.calls,
            tokens: t.tokens,
        }
    }
}

/// A rollup cell and the last usage write it includes. The cell's serde
/// form is its stored form (the rollup room keeps it stable, and the
/// format version moves when it changes); what format 4 added
/// ([`crate::rollup::CellExt`]) follows as a tail, and what format 6
/// added ([`crate::rollup::CellExt6`]) as a second ([`CellRow::encode`]).
#[derive(Serialize, Deserialize)]
pub(crate) struct CellRow {
    pub cell: Cell,
    pub(crate) seq: u64,
}

impl CellRow {
    pub(crate) fn encode(&self) -> Result<Vec<u8>, crate::store::codec::CodecError> {
        crate::store::codec::encode_with_tails(self, &self.cell.ext, &self.cell.ext6)
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<CellRow, crate::store::codec::CodecError> {
        let (mut row, ext, kinds): (CellRow, crate::rollup::CellExt, crate::rollup::CellExt6) =
            crate::store::codec::decode_with_tails(bytes)?;
        row.cell.ext = ext;
        row.cell.ext6 = kinds;
        Ok(row)
    }
}

impl From<StoredCell> for CellRow {
    fn from(c: StoredCell) -> CellRow {
        CellRow {
            cell: c.cell,
            seq: c.seq,
        }
    }
}

impl From<CellRow> for StoredCell {
    fn from(c: CellRow) -> StoredCell {
        StoredCell {
            cell: c.cell,
            seq: c.seq,
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct MarkRow {
    pub tenant: String,
    pub period: i32,
    pub url: String,
    pub threshold: u32,
    pub body: String,
    pub delivered: bool,
}

impl From<&AlertMark> for MarkRow {
    fn from(m: &AlertMark) -> MarkRow {
        MarkRow {
            tenant: m.tenant.clone(),
            period: m.period.0,
            url: m.url.clone(),
            threshold: m.of.number(),
            body: m.body.clone(),
            delivered: m.delivered,
        }
    }
}

impl TryFrom<MarkRow> for AlertMark {
    type Error = StoreError;
    fn try_from(m: MarkRow) -> Result<AlertMark, StoreError> {
        Ok(AlertMark {
            tenant: m.tenant,
            period: Period(m.period),
            url: m.url,
            of: MarkOf::of_number(m.threshold),
            body: m.body,
            delivered: m.delivered,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::codec::{decode, encode};
    use super::*;

    #[test]
    fn a_chunks_keys_and_kinds_read_back_as_written() {
        let rec = |key: &str, cached: u64| UsageRecord {
            key_id: key.into(),
            prompt_tokens: 100,
            extra: RecordExtra {
                kinds: TokenKinds {
                    cached_prompt: cached,
                    ..TokenKinds::NONE
                },
                ..RecordExtra::default()
            }
            .boxed(),
            ..UsageRecord::default()
        };
        // Priced without kinds: only its two costs are kept.
        let mut priced = rec("key_b", 0);
        priced.extra_mut().cost_split = CostSplit {
            uncached_prompt: 0.25,
            completion: 0.5,
            ..CostSplit::NONE
        };
        let records = vec![
            rec("key_a", 0),
            rec("", 10),
            rec("key_b", 0),
            rec("key_a", 5),
            priced,
        ];
        let out: Vec<RecordOut> = records.iter().map(RecordOut).collect();
        assert!(ChunkExt6::needed(&out));
        let mut bytes = Vec::new();
        ChunkExt6::encode_onto(&out, &mut bytes).unwrap();
        let tail: ChunkExt6 = decode(&bytes).unwrap();
        assert_eq!(tail.keys, ["key_a", "key_b"]);
        assert_eq!(tail.key_of, [1, 0, 2, 1, 2]);
        let mut back: Vec<UsageRecord> = records
            .iter()
            .map(|r| UsageRecord {
                key_id: Default::default(),
                extra: Default::default(),
                ..r.clone()
            })
            .collect();
        tail.apply(&mut back);
        assert_eq!(back, records);
        let plain = [UsageRecord::default()];
        let out: Vec<RecordOut> = plain.iter().map(RecordOut).collect();
        assert!(!ChunkExt6::needed(&out));
    }
    use chrono::{TimeZone, Utc};

    #[test]
    fn domain_values_round_trip_through_their_rows() {
        let plan = Plan {
            id: "pro".into(),
            name: "Pro".into(),
            monthly_calls: Some(1_000_000),
            monthly_tokens: None,
            rate_limit: Some(RateLimit {
                requests: 100,
                per_seconds: 1,
                burst: 200,
            }),
            price_usd_monthly: 99.0,
            ingest_rate: Some(IngestRate {
                records: 5,
                per_seconds: 2,
                burst: 10_000,
            }),
            reserve_tokens: None,
            reservation_ttl_seconds: None,
            reserve_usd: Some(1_500),
            limits: Vec::new(),
        };
        let back: Plan = decode::<PlanRow>(&encode(&PlanRow::from(&plan)).unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        assert_eq!(back, plan);
        let tenant = Tenant {
            id: "acme".into(),
            name: "Acme".into(),
            plan_id: "pro".into(),
            status: TenantStatus::Suspended,
            created_at: Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
            limits: vec![crate::model::Limit::new(
                "per-user",
                crate::model::Scope::User,
                crate::model::Measure::Tokens,
                crate::model::Window::Day,
                Some(5_000),
            )],
            billing_day: Some(3),
        };
        let back: Tenant = decode::<TenantRow>(&encode(&TenantRow::from(&tenant)).unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        assert_eq!(back, tenant);
        let key = StoredKey {
            key: ApiKey {
                id: "k".into(),
                tenant_id: "acme".into(),
                name: "n".into(),
                prefix: "tg_abcde".into(),
                created_at: ms_to_utc(1_700_000_000_123),
                revoked_at: Some(ms_to_utc(1_700_000_000_999)),
                expires_at: Some(ms_to_utc(1_800_000_000_000)),
                last_used_at: None,
                limits: Vec::new(),
            },
            hash: [9; 32],
            previous: Some(PreviousSecret {
                hash: [8; 32],
                until: ms_to_utc(1_700_000_100_000),
            }),
        };
        let back: StoredKey = decode::<KeyRow>(&encode(&KeyRow::from(&key)).unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        assert_eq!(back, key);
        let rec = UsageRecord {
            ts_ms: 1_700_000_000_123,
            endpoint: "/api/chat".into(),
            cost_usd: 0.25,
            rejected: true,
            extra: RecordExtra {
                metadata: vec![("k".into(), "v".into())],
                ..Default::default()
            }
            .boxed(),
            ..Default::default()
        };
        let bytes = encode(&vec![RecordOut(&rec), RecordOut(&rec)]).unwrap();
        let back: Vec<UsageRecord> = decode::<Vec<RecordIn>>(&bytes)
            .unwrap()
            .into_iter()
            .map(|r| r.0)
            .collect();
        assert_eq!(back, vec![rec.clone(), rec]);
    }
}
