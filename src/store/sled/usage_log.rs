//! [`UsageLog`] on sled: usage writes - raw blocks, the journal, period totals - in one transaction.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::codec::{decode, encode, encode_chunks};
use super::engine::{
    abort, decode_records, encode_records, read_u64, transact, KeyValue, SledEngine, VALUE_BUDGET,
};
use super::keys::*;
use super::rows::{RecordOut, TotalsRow};
use crate::model::UsageRecord;
use crate::quota::period::Period;
use crate::store::{Claims, HeldBy, PeriodTotals, RecordIds, StoreError, UsageBlock, UsageLog};

/// Aborts a write whose claim is held already (nothing is written).
const HELD: &str = "a claimed record id is held already";

impl UsageLog for SledEngine {
    fn append(&self, seq: u64, blocks: &[&UsageBlock]) -> Result<(), StoreError> {
        self.write(seq, blocks, None).map(|_| ())
    }

    fn append_claimed(
        &self,
        seq: u64,
        block: &UsageBlock,
        claims: &Claims,
    ) -> Result<bool, StoreError> {
        self.write(seq, &[block], Some(claims))
    }

    fn last_seq(&self) -> Result<u64, StoreError> {
        read_u64(&self.meta, "seq")
    }

    fn written_since(
        &self,
        after: u64,
        visit: &mut dyn FnMut(u64, &str, Vec<UsageRecord>),
    ) -> Result<(), StoreError> {
        for kv in self.journal.range((after + 1).to_be_bytes()..) {
            let (k, v) = kv?;
            let seq = key_seq(&k);
            for (day, tenant) in decode::<Vec<(i64, String)>>(&v)? {
                let tree = self.db.open_tree(day_tree_name(RAW_PREFIX, day))?;
                for chunk in tree.scan_prefix(block_key(&tenant, seq)) {
                    visit(seq, &tenant, decode_records(&chunk?.1)?);
                }
            }
        }
        Ok(())
    }

    fn drop_records_before(&self, day: i64) -> Result<usize, StoreError> {
        self.drop_days(RAW_PREFIX, day)
    }
}

impl RecordIds for SledEngine {
    fn claimed(&self, tenant: &str, ids: &[&str]) -> Result<Vec<Option<HeldBy>>, StoreError> {
        ids.iter()
            .map(|id| {
                Ok(self
                    .claims
                    .get(claim_key(tenant, id))?
                    .map(|v| String::from_utf8_lossy(v.get(8..).unwrap_or_default()).into_owned()))
            })
            .collect()
    }

    fn drop_claims_before(&self, before_ms: i64) -> Result<u64, StoreError> {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for kv in self.claims.iter() {
            let (k, v) = kv?;
            let at = v
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map_or(i64::MIN, i64::from_be_bytes);
            if at < before_ms {
                batch.remove(k);
                n += 1;
            }
        }
        self.claims.apply_batch(batch)?;
        Ok(n)
    }
}

/// A claim's key: tenant ++ 0x00 ++ id.
fn claim_key(tenant: &str, id: &str) -> Vec<u8> {
    let mut k = tenant_prefix(tenant);
    k.extend_from_slice(id.as_bytes());
    k
}

impl SledEngine {
    /// [`UsageLog::append`], with `claims` (of the one block) made in the
    /// same transaction: false, and nothing written, when one is held.
    fn write(
        &self,
        seq: u64,
        blocks: &[&UsageBlock],
        claims: Option<&Claims>,
    ) -> Result<bool, StoreError> {
        // Split by UTC day and sum the period totals this write adds. Two
        // blocks of one tenant (and day) continue one chunk count, so that
        // their keys never collide.
        let mut by_day: BTreeMap<i64, Vec<KeyValue>> = BTreeMap::new();
        let mut chunks: HashMap<(i64, &str), usize> = HashMap::new();
        let mut deltas: HashMap<(Period, &str), PeriodTotals> = HashMap::new();
        for block in blocks {
            let mut per_day: BTreeMap<i64, Vec<RecordOut>> = BTreeMap::new();
            // A block's records are mostly of one day: its period is
            // worked out once per run of a day, not once per record.
            let mut last: Option<(i64, Period)> = None;
            for r in &block.records {
                let day = day_of(r.ts_ms);
                per_day.entry(day).or_default().push(RecordOut(r));
                let period = match last {
                    Some((d, p)) if d == day => p,
                    _ => {
                        let p = Period::containing_secs(r.ts_ms.div_euclid(1000));
                        last = Some((day, p));
                        p
                    }
                };
                deltas
                    .entry((period, block.tenant.as_str()))
                    .or_default()
                    .add(r.calls, r.tokens);
            }
            for (day, records) in per_day {
                let values = by_day.entry(day).or_default();
                let next = chunks.entry((day, block.tenant.as_str())).or_default();
                for chunk in encode_records(&records)? {
                    values.push((chunk_key(block_key(&block.tenant, seq), *next), chunk));
                    *next += 1;
                }
            }
        }
        if by_day.is_empty() {
            return Ok(true);
        }
        // (key, value) of each claim.
        let claimed: Vec<(Vec<u8>, Vec<u8>)> = match (claims, blocks.first()) {
            (Some(c), Some(block)) => c
                .made()
                .iter()
                .map(|id| {
                    let mut v = c.at_ms.to_be_bytes().to_vec();
                    v.extend_from_slice(c.key.as_bytes());
                    (claim_key(&block.tenant, id), v)
                })
                .collect(),
            _ => Vec::new(),
        };
        let deltas: Vec<(Vec<u8>, PeriodTotals)> = deltas
            .into_iter()
            .map(|((period, tenant), d)| (counter_key(period, tenant), d))
            .collect();
        // The (day, tenant) blocks of the write, each once.
        let journal: BTreeSet<(i64, &str)> = chunks.keys().copied().collect();
        let journal: Vec<(i64, &str)> = journal.into_iter().collect();
        let journal = encode_chunks(&journal, VALUE_BUDGET)?;

        // One transaction over counters, meta, the journal and every day-tree touched.
        let mut trees = vec![
            self.counters.clone(),
            self.meta.clone(),
            self.journal.clone(),
            self.claims.clone(),
        ];
        for day in by_day.keys() {
            trees.push(self.db.open_tree(day_tree_name(RAW_PREFIX, *day))?);
        }
        let written = transact(&trees, |tx| {
            for (key, value) in &claimed {
                if tx[3].insert(key.as_slice(), value.as_slice())?.is_some() {
                    return Err(abort(HELD));
                }
            }
            for (key, delta) in &deltas {
                let mut totals: PeriodTotals = match tx[0].get(key)? {
                    Some(v) => decode::<TotalsRow>(v.as_ref()).map_err(abort)?.into(),
                    None => PeriodTotals::default(),
                };
                totals.add(delta.calls, delta.tokens);
                let row = encode(&TotalsRow::from(totals)).map_err(abort)?;
                tx[0].insert(key.as_slice(), row)?;
            }
            tx[1].insert("seq", &seq.to_be_bytes())?;
            for (i, chunk) in journal.iter().enumerate() {
                tx[2].insert(chunk_key(seq.to_be_bytes().to_vec(), i), chunk.as_slice())?;
            }
            for (i, values) in by_day.values().enumerate() {
                for (key, value) in values {
                    tx[i + 4].insert(key.as_slice(), value.as_slice())?;
                }
            }
            Ok(())
        });
        match written {
            Ok(()) => Ok(true),
            Err(StoreError::Unavailable(m)) if m == HELD => Ok(false),
            Err(e) => Err(e),
        }
    }
}
