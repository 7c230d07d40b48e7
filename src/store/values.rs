//! The values the storage traits take and give, engine-neutral: none of them
//! is an engine's stored form (sled's rows are `sled/rows.rs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::model::UsageRecord;
use crate::quota::period::Period;
use crate::rollup::{Cell, Grain, Owner};

/// Calls and tokens a tenant used in one period, as persisted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeriodTotals {
    pub calls: u64,
    pub tokens: u64,
}

impl PeriodTotals {
    pub fn add(&mut self, calls: u64, tokens: u64) {
        self.calls = self.calls.saturating_add(calls);
        self.tokens = self.tokens.saturating_add(tokens);
    }
}

/// The ids a reported batch claims (`POST /api/v1/usage`'s record `id`s
/// and its `Idempotency-Key`): each once per tenant, kept [`CLAIM_DAYS`]
/// days. `ids[i]` is the id of the block's record `i`, empty for none; the
/// key, claimed once for the batch, stands for every record without one
/// (a batch is written whole, so one claim is enough for them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Claims {
    /// The batch's `Idempotency-Key` (empty: none), kept with each claim so
    /// that a repeat of the batch is told from another batch that reuses an id.
    pub key: String,
    /// When the batch came (retention counts from it).
    pub at_ms: i64,
    pub ids: Vec<String>,
    /// The key is claimed already (by an earlier sending of the batch):
    /// what is left of the batch is written without claiming it again.
    pub key_held: bool,
}

impl Claims {
    /// The claim that stands for the key (`None` without one, or once it
    /// is held): the key behind a control character, which no record id
    /// holds.
    pub fn key_id(&self) -> Option<String> {
        (!self.key.is_empty() && !self.key_held).then(|| format!("\u{1}{}", self.key))
    }

    /// Every id the batch claims: its records' and its key's.
    pub fn made(&self) -> Vec<String> {
        let ids = self.ids.iter().filter(|id| !id.is_empty()).cloned();
        ids.chain(self.key_id()).collect()
    }
}

/// Days a claimed record id is remembered (Metronome keeps 34).
pub const CLAIM_DAYS: i64 = 35;

/// Who holds a claimed id: the `Idempotency-Key` of the batch that
/// claimed it (empty when that batch had none).
pub type HeldBy = String;

/// Usage records of one tenant, written together by one flush.
#[derive(Clone, Debug, Default)]
pub struct UsageBlock {
    pub tenant: String,
    pub records: Vec<UsageRecord>,
    /// What says the tenant was deleted (in the server, the tenant's live
    /// state; `None`: a tenant no one deletes): a store writes no block of
    /// a retired tenant, checking under the same lock as the purge, so a
    /// record of a deleted tenant never outlives the purge.
    pub retired: Option<Arc<dyn Retirement>>,
}

/// Whether a block's tenant has been deleted since the block was made.
pub trait Retirement: Send + Sync + std::fmt::Debug {
    fn is_retired(&self) -> bool;
}

impl Retirement for AtomicBool {
    fn is_retired(&self) -> bool {
        self.load(Ordering::Acquire)
    }
}

impl UsageBlock {
    /// A block of a live tenant, not watched for deletion.
    pub fn new(tenant: impl Into<String>, records: Vec<UsageRecord>) -> UsageBlock {
        UsageBlock {
            tenant: tenant.into(),
            records,
            retired: None,
        }
    }

    pub(crate) fn is_retired(&self) -> bool {
        self.retired.as_ref().is_some_and(|r| r.is_retired())
    }
}

/// An alert that fired: at most one per (tenant, period, alert URL, what
/// it is of), kept so that a restart neither fires it again nor loses an
/// undelivered one.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertMark {
    pub tenant: String,
    pub period: Period,
    pub url: String,
    pub of: MarkOf,
    /// The JSON body, exactly as (re)sent.
    pub body: String,
    pub delivered: bool,
}

/// What a mark is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MarkOf {
    /// A share of the monthly calls, in percent (1 to 1000), reached.
    Threshold(u32),
    /// An anomaly episode begun: its number within the period (its first
    /// hour, metric and direction; below 2^30).
    Episode(u32),
}

/// Set in the number an episode's mark is stored by.
const EPISODE: u32 = 1 << 30;

impl MarkOf {
    /// The one number a store keeps it by (a column, a key's part): an
    /// episode's has bit 30 set, so that the two kinds never share a key.
    /// Only the stores' encoding reads it.
    pub fn number(self) -> u32 {
        match self {
            MarkOf::Threshold(t) => t & !EPISODE,
            MarkOf::Episode(n) => EPISODE | n,
        }
    }

    /// What a stored number is of.
    pub(crate) fn of_number(n: u32) -> MarkOf {
        if n & EPISODE != 0 {
            MarkOf::Episode(n & !EPISODE)
        } else {
            MarkOf::Threshold(n)
        }
    }
}

impl AlertMark {
    /// The identity of the firing; a store keys marks by it.
    pub fn key(&self) -> String {
        alert_key(&self.tenant, self.period, &self.url, self.of)
    }
}

pub fn alert_key(tenant: &str, period: Period, url: &str, of: MarkOf) -> String {
    format!("{tenant}\u{0}{}\u{0}{}\u{0}{url}", period.0, of.number())
}

/// Which stored rollup cell: its grain, owner and bucket.
pub type CellKey = (Grain, Owner, i64);

/// A rollup cell as a store keeps it: the cell and the last usage write
/// (its sequence number) it includes, which makes absorbing a write into
/// it idempotent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoredCell {
    pub cell: Cell,
    pub(crate) seq: u64,
}
