//! [`KeyUses`]: when each API key was last used, learnt from the records
//! as they are written (off the request path) and kept in the store at
//! most once a minute, so that a key's `lastUsedAt` costs a request
//! nothing.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::model::{CompactString, UsageRecord};
use crate::store::{KeyUse, Store};

/// Uses are written to the store at most this often (ms of the clock).
pub(crate) const EVERY_MS: i64 = 60_000;

/// What is known of one key's use.
#[derive(Clone, Copy)]
struct Use {
    /// The latest record's time.
    latest: i64,
    /// What the store was last given (`i64::MIN`: nothing yet).
    kept: i64,
    /// When (clock ms) it was last given it.
    written_ms: i64,
}

/// The keys used lately, and what the store holds of each: a key's use is
/// written at most once a minute.
#[derive(Default)]
pub(crate) struct KeyUses {
    seen: Mutex<HashMap<(Arc<str>, CompactString), Use>>,
}

impl KeyUses {
    /// Notes the keys that made `records` (each tenant's, in order).
    /// Consecutive records of one key are noted once.
    pub(crate) fn saw<'a>(&self, records: impl Iterator<Item = (&'a Arc<str>, &'a UsageRecord)>) {
        let mut seen = self.seen.lock();
        // The run of records of one key so far: noted when it ends.
        let mut run: Option<(&Arc<str>, &CompactString, i64)> = None;
        for (tenant, r) in records {
            if r.key_id.is_empty() {
                continue;
            }
            match &mut run {
                Some((t, k, at)) if Arc::ptr_eq(t, tenant) && **k == r.key_id => {
                    *at = (*at).max(r.ts_ms);
                }
                _ => {
                    if let Some((t, k, at)) = run {
                        note(&mut seen, t, k, at);
                    }
                    run = Some((tenant, &r.key_id, r.ts_ms));
                }
            }
        }
        if let Some((t, k, at)) = run {
            note(&mut seen, t, k, at);
        }
    }

    /// Notes one use of `key_id` of `tenant` at `at_ms`.
    pub(crate) fn used(&self, tenant: &Arc<str>, key_id: &CompactString, at_ms: i64) {
        if !key_id.is_empty() {
            note(&mut self.seen.lock(), tenant, key_id, at_ms);
        }
    }

    /// Writes, at the clock's `now_ms`, the uses of the keys whose last
    /// write is a minute old (or that were never written), and forgets the
    /// keys idle for ten minutes. A store that fails keeps nothing: they
    /// are tried again on the next call.
    pub(crate) fn write_due(&self, store: &dyn Store, now_ms: i64) {
        let used: Vec<KeyUse> = {
            let mut seen = self.seen.lock();
            seen.retain(|_, u| u.latest > u.kept || now_ms - u.written_ms < 10 * EVERY_MS);
            seen.iter_mut()
                .filter(|(_, u)| {
                    u.latest > u.kept && now_ms.saturating_sub(u.written_ms) >= EVERY_MS
                })
                .map(|((tenant, key_id), u)| {
                    u.kept = u.latest;
                    u.written_ms = now_ms;
                    KeyUse {
                        tenant: tenant.to_string(),
                        key_id: key_id.to_string(),
                        at_ms: u.latest,
                    }
                })
                .collect()
        };
        if used.is_empty() {
            return;
        }
        if let Err(e) = store.touch_keys(&used) {
            tracing::warn!(error = %e, keys = used.len(), "cannot keep when keys were last used");
            let mut seen = self.seen.lock();
            for u in &used {
                let k = (
                    Arc::<str>::from(u.tenant.as_str()),
                    CompactString::from(u.key_id.as_str()),
                );
                if let Some(entry) = seen.get_mut(&k) {
                    entry.kept = i64::MIN;
                    entry.written_ms = i64::MIN;
                }
            }
        }
    }
}

fn note(
    seen: &mut HashMap<(Arc<str>, CompactString), Use>,
    tenant: &Arc<str>,
    key_id: &CompactString,
    at_ms: i64,
) {
    let u = seen.entry((tenant.clone(), key_id.clone())).or_insert(Use {
        latest: i64::MIN,
        kept: i64::MIN,
        written_ms: i64::MIN,
    });
    u.latest = u.latest.max(at_ms);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uses_are_kept_once_a_minute_with_the_latest_time() {
        let store: Arc<dyn Store> = Arc::new(crate::store::memory::MemoryStore::in_memory());
        let uses = KeyUses::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let rec = |key: &str, ts_ms: i64| UsageRecord {
            key_id: key.into(),
            ts_ms,
            ..Default::default()
        };
        let records = [rec("k1", 10), rec("k1", 30), rec("k1", 20), rec("", 99)];
        uses.saw(records.iter().map(|r| (&a, r)));
        uses.saw(std::iter::once((&b, &rec("k2", 5))));
        uses.write_due(store.as_ref(), 1_000);
        let got = store.keys_last_used("a").unwrap();
        assert_eq!(got, HashMap::from([("k1".to_string(), 30)]));
        let _ = &b;
        assert_eq!(store.keys_last_used("b").unwrap()["k2"], 5);
        // A key first used within the minute is written at once.
        uses.saw(std::iter::once((&a, &rec("k3", 7))));
        uses.write_due(store.as_ref(), 1_001);
        assert_eq!(store.keys_last_used("a").unwrap()["k3"], 7);
        // Within the minute: noted, not written.
        uses.saw(std::iter::once((&a, &rec("k1", 50))));
        uses.write_due(store.as_ref(), 1_000 + EVERY_MS - 1);
        assert_eq!(store.keys_last_used("a").unwrap()["k1"], 30);
        uses.write_due(store.as_ref(), 1_000 + EVERY_MS);
        assert_eq!(store.keys_last_used("a").unwrap()["k1"], 50);
        // An older use never moves it back.
        uses.saw(std::iter::once((&a, &rec("k1", 40))));
        uses.write_due(store.as_ref(), 1_000 + 2 * EVERY_MS);
        assert_eq!(store.keys_last_used("a").unwrap()["k1"], 50);
    }
}
