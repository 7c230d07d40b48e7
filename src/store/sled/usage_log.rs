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
use crate::store::{PeriodTotals, StoreError, UsageBlock, UsageLog};

impl UsageLog for SledEngine {
    fn append(&self, seq: u64, blocks: &[&UsageBlock]) -> Result<(), StoreError> {
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
            return Ok(());
        }
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
        ];
        for day in by_day.keys() {
            trees.push(self.db.open_tree(day_tree_name(RAW_PREFIX, *day))?);
        }
        transact(&trees, |tx| {
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
                    tx[i + 3].insert(key.as_slice(), value.as_slice())?;
                }
            }
            Ok(())
        })
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
