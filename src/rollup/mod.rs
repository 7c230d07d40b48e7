//! Pre-aggregated usage: a [`Cell`] sums the records of one tenant in one
//! minute, hour or day ([`Grain`]), with the dimensions the analytics need,
//! latencies in a [`histogram::LatencyHistogram`]. Cells merge, so any
//! range is answered from a handful of them. A room of its own: the store
//! keeps cells and the analytics read them, and neither imports the other.

pub(crate) mod histogram;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use self::histogram::LatencyHistogram;
#[cfg(test)]
use crate::model::RecordExtra;
use crate::model::UsageRecord;

/// Distinct users (or bots, tenants) a cell tracks by name; the rest are
/// summed under [`OTHER`].
pub(crate) const MAX_PARTIES: usize = 10_000;
/// Distinct endpoints and models a cell tracks by name (each endpoint
/// carries a latency histogram, so they cost more than a party); the rest
/// are summed under [`OTHER`]. A tenant chooses these names, so without a
/// cap 100,000 of them took 1.8 GB.
pub(crate) const MAX_ENDPOINTS: usize = 1_000;
pub(crate) const MAX_MODELS: usize = 1_000;
/// Distinct methods kept per endpoint.
pub(crate) const MAX_METHODS: usize = 16;
/// Distinct API versions, countries and integrations a cell tracks by name.
pub(crate) const MAX_VERSIONS: usize = 100;
pub(crate) const MAX_COUNTRIES: usize = 300;
pub(crate) const MAX_INTEGRATIONS: usize = 100;
pub(crate) const OTHER: &str = "(other)";

/// Whose usage a cell sums: one tenant's, or the fleet's (every tenant
/// together, with a share per tenant).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    Fleet,
    Tenant(String),
}

impl Owner {
    pub fn tenant(id: &str) -> Owner {
        Owner::Tenant(id.to_string())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Grain {
    Minute,
    Hour,
    Day,
}

impl Grain {
    pub const ALL: [Grain; 3] = [Grain::Minute, Grain::Hour, Grain::Day];

    pub fn ms(self) -> i64 {
        match self {
            Grain::Minute => 60_000,
            Grain::Hour => 3_600_000,
            Grain::Day => 86_400_000,
        }
    }

    /// The bucket (minutes, hours or days since the epoch) holding `ts_ms`.
    pub fn bucket(self, ts_ms: i64) -> i64 {
        ts_ms.div_euclid(self.ms())
    }

    pub(crate) fn start_ms(self, bucket: i64) -> i64 {
        bucket * self.ms()
    }
}

/// The buckets `from <= bucket < to` of one grain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buckets {
    pub(crate) grain: Grain,
    pub from: i64,
    pub to: i64,
}

impl Buckets {
    pub fn new(grain: Grain, from: i64, to: i64) -> Buckets {
        Buckets { grain, from, to }
    }

    /// Every bucket of `grain` there is (for tests and whole scans).
    pub fn all(grain: Grain) -> Buckets {
        Buckets::new(grain, i64::MIN / 2, i64::MAX / 2)
    }
}

/// Sums over a set of records.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Agg {
    pub requests: u64,
    /// Status >= 400, Tollgate's own rejections excluded.
    pub errors: u64,
    /// Refused by Tollgate (rate limit or quota).
    pub rejected: u64,
    pub calls: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub tokens: u64,
    pub cost_usd: f64,
    pub(crate) latency_sum_ms: f64,
}

impl Agg {
    fn add(&mut self, r: &UsageRecord) {
        self.requests += 1;
        if r.rejected {
            self.rejected += 1;
        } else if r.status >= 400 {
            self.errors += 1;
        }
        self.calls = self.calls.saturating_add(r.calls);
        self.prompt_tokens = self.prompt_tokens.saturating_add(r.prompt_tokens);
        self.completion_tokens = self.completion_tokens.saturating_add(r.completion_tokens);
        self.tokens = self.tokens.saturating_add(r.tokens);
        self.cost_usd += r.cost_usd;
        self.latency_sum_ms += r.response_ms;
    }

    fn merge(&mut self, o: &Agg) {
        self.requests += o.requests;
        self.errors += o.errors;
        self.rejected += o.rejected;
        self.calls = self.calls.saturating_add(o.calls);
        self.prompt_tokens = self.prompt_tokens.saturating_add(o.prompt_tokens);
        self.completion_tokens = self.completion_tokens.saturating_add(o.completion_tokens);
        self.tokens = self.tokens.saturating_add(o.tokens);
        self.cost_usd += o.cost_usd;
        self.latency_sum_ms += o.latency_sum_ms;
    }

    pub(crate) fn successful(&self) -> u64 {
        self.requests - self.errors - self.rejected
    }
}

/// One endpoint+method: sums and its own latency histogram.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointAgg {
    pub(crate) agg: Agg,
    pub latency: LatencyHistogram,
}

/// A user, bot or tenant.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PartyAgg {
    pub requests: u64,
    pub tokens: u64,
    pub cost_usd: f64,
}

impl PartyAgg {
    fn add(&mut self, requests: u64, tokens: u64, cost: f64) {
        self.requests += requests;
        self.tokens = self.tokens.saturating_add(tokens);
        self.cost_usd += cost;
    }
}

/// The usage of one tenant (or the fleet) in one bucket. Its serde form is
/// the form an engine stores (sled wraps it with the write it includes,
/// `store/sled/rows.rs`): a change to it moves the store format.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    pub total: Agg,
    pub latency: LatencyHistogram,
    /// By endpoint, then method.
    pub endpoints: BTreeMap<String, BTreeMap<String, EndpointAgg>>,
    pub statuses: BTreeMap<u16, u64>,
    /// By model: sums (requests, tokens, cost) of records naming one.
    pub models: BTreeMap<String, Agg>,
    pub users: BTreeMap<String, PartyAgg>,
    pub bots: BTreeMap<String, PartyAgg>,
    /// Only in the all-tenants cells.
    pub tenants: BTreeMap<String, PartyAgg>,
    /// Requests per UTC hour of day (24 slots).
    pub(crate) by_hour: Vec<u64>,
    /// What format 4 added; stored after the rest (see [`CellExt`]).
    #[serde(skip)]
    pub(crate) ext: CellExt,
    /// What format 6 added (token kinds, keys); stored after `ext`.
    #[serde(skip)]
    pub ext6: CellExt6,
}

/// Tokens and cost by kind, summed over the records that carry them
/// (those priced by kind); store format 6, a cell's second tail.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KindAgg {
    pub cached_prompt_tokens: u64,
    pub cache_write_tokens: u64,
    pub cache_write_1h_tokens: u64,
    pub reasoning_tokens: u64,
    pub uncached_prompt_usd: f64,
    pub cached_prompt_usd: f64,
    pub cache_write_usd: f64,
    /// Every completion token's cost, reasoning included.
    pub completion_usd: f64,
    pub reasoning_usd: f64,
}

impl KindAgg {
    fn add(&mut self, r: &UsageRecord) {
        let x = r.extra();
        let (k, c) = (x.kinds, x.cost_split);
        self.cached_prompt_tokens = self.cached_prompt_tokens.saturating_add(k.cached_prompt);
        self.cache_write_tokens = self.cache_write_tokens.saturating_add(k.cache_write);
        self.cache_write_1h_tokens = self.cache_write_1h_tokens.saturating_add(k.cache_write_1h);
        self.reasoning_tokens = self.reasoning_tokens.saturating_add(k.reasoning);
        self.uncached_prompt_usd += c.uncached_prompt;
        self.cached_prompt_usd += c.cached_prompt;
        self.cache_write_usd += c.cache_write;
        self.completion_usd += c.completion;
        self.reasoning_usd += c.reasoning;
    }

    fn merge(&mut self, o: &KindAgg) {
        self.cached_prompt_tokens = self
            .cached_prompt_tokens
            .saturating_add(o.cached_prompt_tokens);
        self.cache_write_tokens = self.cache_write_tokens.saturating_add(o.cache_write_tokens);
        self.cache_write_1h_tokens = self
            .cache_write_1h_tokens
            .saturating_add(o.cache_write_1h_tokens);
        self.reasoning_tokens = self.reasoning_tokens.saturating_add(o.reasoning_tokens);
        self.uncached_prompt_usd += o.uncached_prompt_usd;
        self.cached_prompt_usd += o.cached_prompt_usd;
        self.cache_write_usd += o.cache_write_usd;
        self.completion_usd += o.completion_usd;
        self.reasoning_usd += o.reasoning_usd;
    }
}

/// What store format 6 added to a cell, kept after [`CellExt`] as its
/// second tail: tokens and cost by kind, in all and by model, and usage by
/// the key that made it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CellExt6 {
    pub kinds: KindAgg,
    pub model_kinds: BTreeMap<String, KindAgg>,
    /// By API key id (records without one are left out).
    pub keys: BTreeMap<String, PartyAgg>,
}

impl CellExt6 {
    /// The record's token kinds (its key is added by the caller: by runs
    /// of records of one key, [`Cell::add_run`]).
    fn add_kinds(&mut self, r: &UsageRecord) {
        let x = r.extra();
        if x.kinds.is_empty() && x.cost_split.is_empty() {
            return;
        }
        self.kinds.add(r);
        if !r.model.is_empty() {
            entry(&mut self.model_kinds, &r.model, MAX_MODELS).add(r);
        }
    }

    fn merge(&mut self, o: &CellExt6, parties: bool) {
        self.kinds.merge(&o.kinds);
        for (k, v) in &o.model_kinds {
            entry(&mut self.model_kinds, k, MAX_MODELS).merge(v);
        }
        if parties {
            for (k, v) in &o.keys {
                add_party(&mut self.keys, k, v.requests, v.tokens, v.cost_usd);
            }
        }
    }
}

/// The parts of a cell added in store format 4. A store keeps them after
/// the cell's older fields (the codec's tail), so a cell written before
/// reads with these empty, and no stored cell had to be rewritten.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct CellExt {
    /// Cost of the requests that failed (status >= 400, Tollgate's own
    /// refusals excluded), and how many of them cost anything.
    pub(crate) failed_cost_usd: f64,
    pub(crate) failed_billed: u64,
    /// Requests that were retries of an earlier attempt, and their cost.
    pub retries: u64,
    pub(crate) retry_cost_usd: f64,
    /// Requests answered 429 (by Tollgate or an upstream).
    pub too_many: u64,
    /// By API version ([`UsageRecord::version`]).
    pub(crate) api_versions: BTreeMap<String, Agg>,
    /// By ISO country code.
    pub countries: BTreeMap<String, Agg>,
    /// By `[[proxy]]` name, with latencies.
    pub integrations: BTreeMap<String, EndpointAgg>,
}

impl CellExt {
    fn add(&mut self, r: &UsageRecord) {
        if !r.rejected && r.status >= 400 {
            self.failed_cost_usd += r.cost_usd;
            self.failed_billed += (r.cost_usd > 0.0) as u64;
        }
        if r.retried {
            self.retries += 1;
            self.retry_cost_usd += r.cost_usd;
        }
        self.too_many += (r.status == 429) as u64;
        let version = r.version();
        if !version.is_empty() {
            entry(&mut self.api_versions, version, MAX_VERSIONS).add(r);
        }
        let x = r.extra();
        if !x.country.is_empty() {
            entry(&mut self.countries, &x.country, MAX_COUNTRIES).add(r);
        }
        if !x.integration.is_empty() {
            let e = entry(&mut self.integrations, &x.integration, MAX_INTEGRATIONS);
            e.agg.add(r);
            e.latency.record(r.response_ms, 1);
        }
    }

    fn merge(&mut self, o: &CellExt) {
        self.failed_cost_usd += o.failed_cost_usd;
        self.failed_billed += o.failed_billed;
        self.retries += o.retries;
        self.retry_cost_usd += o.retry_cost_usd;
        self.too_many += o.too_many;
        for (k, v) in &o.api_versions {
            entry(&mut self.api_versions, k, MAX_VERSIONS).merge(v);
        }
        for (k, v) in &o.countries {
            entry(&mut self.countries, k, MAX_COUNTRIES).merge(v);
        }
        for (k, v) in &o.integrations {
            let e = entry(&mut self.integrations, k, MAX_INTEGRATIONS);
            e.agg.merge(&v.agg);
            e.latency.merge(&v.latency);
        }
    }
}

/// A cell's totals and latencies only: what an hour-by-hour read needs.
/// A cell's stored form begins with these two fields, so an engine can
/// read them without decoding the rest (its maps of endpoints, models,
/// users and bots are most of its bytes).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CellHead {
    pub total: Agg,
    pub latency: LatencyHistogram,
}

impl CellHead {
    pub fn of(c: &Cell) -> CellHead {
        CellHead {
            total: c.total.clone(),
            latency: c.latency.clone(),
        }
    }

    pub(crate) fn merge(&mut self, o: &CellHead) {
        self.total.merge(&o.total);
        self.latency.merge(&o.latency);
    }
}

/// The value for `key` - or, once the map holds `cap` names and `key` is
/// not among them, for [`OTHER`] - allocating the key only when it is new.
fn entry<'a, V: Default>(map: &'a mut BTreeMap<String, V>, key: &str, cap: usize) -> &'a mut V {
    // A name already there (the common case) costs two searches, not three
    // (returning `get_mut`'s borrow from a branch is what the borrow
    // checker refuses).
    if map.contains_key(key) {
        return map.get_mut(key).expect("just found");
    }
    if map.len() >= cap && map.contains_key(OTHER) {
        return map.get_mut(OTHER).expect("just found");
    }
    let key = if map.len() < cap { key } else { OTHER };
    map.entry(key.to_string()).or_default()
}

fn add_party(
    map: &mut BTreeMap<String, PartyAgg>,
    name: &str,
    requests: u64,
    tokens: u64,
    cost: f64,
) {
    if name.is_empty() {
        return;
    }
    entry(map, name, MAX_PARTIES).add(requests, tokens, cost);
}

impl Cell {
    /// Adds one record; `tenant` names it in the all-tenants cells.
    pub fn add(&mut self, r: &UsageRecord, tenant: Option<&str>) {
        self.add_but_key(r, tenant);
        add_party(&mut self.ext6.keys, &r.key_id, 1, r.tokens, r.cost_usd);
    }

    /// Adds records of one tenant: each as [`Cell::add`] does, the keys
    /// that made them once per run of records of one key (a batch is
    /// mostly one key's: one map search a run, not one a record).
    pub fn add_run(&mut self, records: &[UsageRecord]) {
        for run in records.chunk_by(|a, b| a.key_id == b.key_id) {
            let (mut tokens, mut cost) = (0u64, 0.0);
            for r in run {
                self.add_but_key(r, None);
                tokens = tokens.saturating_add(r.tokens);
                cost += r.cost_usd;
            }
            add_party(
                &mut self.ext6.keys,
                &run[0].key_id,
                run.len() as u64,
                tokens,
                cost,
            );
        }
    }

    fn add_but_key(&mut self, r: &UsageRecord, tenant: Option<&str>) {
        self.total.add(r);
        let latency = histogram::bucket_of(r.response_ms);
        self.latency.record_in(latency, 1);
        let e = entry(
            entry(&mut self.endpoints, &r.endpoint, MAX_ENDPOINTS),
            &r.method,
            MAX_METHODS,
        );
        e.agg.add(r);
        e.latency.record_in(latency, 1);
        *self.statuses.entry(r.status).or_default() += 1;
        if !r.model.is_empty() {
            entry(&mut self.models, &r.model, MAX_MODELS).add(r);
        }
        let x = r.extra();
        add_party(&mut self.users, &x.user_id, 1, r.tokens, r.cost_usd);
        add_party(&mut self.bots, &x.bot_id, 1, r.tokens, r.cost_usd);
        if let Some(t) = tenant {
            add_party(&mut self.tenants, t, 1, r.tokens, r.cost_usd);
        }
        if self.by_hour.len() != 24 {
            self.by_hour = vec![0; 24];
        }
        self.by_hour[(r.ts_ms.div_euclid(3_600_000).rem_euclid(24)) as usize] += 1;
        self.ext.add(r);
        self.ext6.add_kinds(r);
    }

    /// Merges `o` as a part of the all-tenants cells: attributed to
    /// `tenant`, without users and bots (their ids are the tenants' own).
    pub(crate) fn merge_for_all_tenants(&mut self, o: &Cell, tenant: &str) {
        self.merge_parts(o, false);
        if o.total.requests > 0 {
            add_party(
                &mut self.tenants,
                tenant,
                o.total.requests,
                o.total.tokens,
                o.total.cost_usd,
            );
        }
    }

    pub(crate) fn merge(&mut self, o: &Cell) {
        self.merge_parts(o, true);
    }

    fn merge_parts(&mut self, o: &Cell, parties: bool) {
        self.total.merge(&o.total);
        self.ext.merge(&o.ext);
        self.ext6.merge(&o.ext6, parties);
        self.latency.merge(&o.latency);
        for (endpoint, methods) in &o.endpoints {
            let mine = entry(&mut self.endpoints, endpoint, MAX_ENDPOINTS);
            for (method, v) in methods {
                let e = entry(mine, method, MAX_METHODS);
                e.agg.merge(&v.agg);
                e.latency.merge(&v.latency);
            }
        }
        for (k, v) in &o.statuses {
            *self.statuses.entry(*k).or_default() += v;
        }
        for (k, v) in &o.models {
            entry(&mut self.models, k, MAX_MODELS).merge(v);
        }
        if parties {
            for (mine, theirs) in [
                (&mut self.users, &o.users),
                (&mut self.bots, &o.bots),
                (&mut self.tenants, &o.tenants),
            ] {
                for (k, v) in theirs {
                    add_party(mine, k, v.requests, v.tokens, v.cost_usd);
                }
            }
        }
        if !o.by_hour.is_empty() {
            if self.by_hour.len() != 24 {
                self.by_hour = vec![0; 24];
            }
            for (a, b) in self.by_hour.iter_mut().zip(&o.by_hour) {
                *a += b;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ts_ms: i64, status: u16, user: &str) -> UsageRecord {
        UsageRecord {
            ts_ms,
            endpoint: "/e".into(),
            method: "GET".into(),
            status,
            response_ms: 10.0,
            tokens: 3,
            prompt_tokens: 3,
            model: "m".into(),
            extra: RecordExtra {
                user_id: user.into(),
                ..Default::default()
            }
            .boxed(),
            cost_usd: 0.5,
            calls: 1,
            ..Default::default()
        }
    }

    #[test]
    fn adding_then_merging_equals_adding_all() {
        let records: Vec<_> = (0..50)
            .map(|i| {
                rec(
                    i * 1_000_000,
                    if i % 7 == 0 { 500 } else { 200 },
                    &format!("u{}", i % 3),
                )
            })
            .collect();
        let mut whole = Cell::default();
        records.iter().for_each(|r| whole.add(r, Some("t")));
        let (mut a, mut b) = (Cell::default(), Cell::default());
        records[..20].iter().for_each(|r| a.add(r, Some("t")));
        records[20..].iter().for_each(|r| b.add(r, Some("t")));
        a.merge(&b);
        assert_eq!(a.total, whole.total);
        assert_eq!(a.users, whole.users);
        assert_eq!(a.endpoints, whole.endpoints);
        assert_eq!(a.by_hour, whole.by_hour);
        assert_eq!(whole.total.errors, 8);
        assert_eq!(whole.tenants["t"].requests, 50);
    }

    #[test]
    fn parties_beyond_the_cap_are_summed_as_other() {
        let mut c = Cell::default();
        for i in 0..MAX_PARTIES + 5 {
            c.add(&rec(0, 200, &format!("u{i}")), None);
        }
        assert_eq!(c.users.len(), MAX_PARTIES + 1);
        assert_eq!(c.users[OTHER].requests, 5);
    }

    /// Regression (hostile tenant, finding 4): endpoints and models had no
    /// cap; 100,000 distinct names took RSS from 41 MB to 1.86 GB.
    #[test]
    fn endpoints_methods_and_models_beyond_their_caps_are_summed_as_other() {
        let mut a = Cell::default();
        let mut b = Cell::default();
        for i in 0..MAX_ENDPOINTS + 50 {
            let mut r = rec(0, 200, "u");
            r.endpoint = format!("/e/{i}").into();
            r.model = format!("m-{i}").into();
            a.add(&r, None);
            r.endpoint = format!("/f/{i}").into();
            r.method = format!("M{}", i % 40).into();
            b.add(&r, None);
        }
        assert_eq!(a.endpoints.len(), MAX_ENDPOINTS + 1);
        assert_eq!(a.endpoints[OTHER]["GET"].agg.requests, 50);
        assert_eq!(a.models.len(), MAX_MODELS + 1);
        assert_eq!(a.models[OTHER].requests, 50);
        assert!(b.endpoints.values().all(|m| m.len() <= MAX_METHODS + 1));
        // Merging keeps the caps and every request.
        a.merge(&b);
        assert_eq!(a.endpoints.len(), MAX_ENDPOINTS + 1);
        assert_eq!(a.models.len(), MAX_MODELS + 1);
        let total: u64 = a
            .endpoints
            .values()
            .flat_map(|m| m.values())
            .map(|e| e.agg.requests)
            .sum();
        assert_eq!(total, 2 * (MAX_ENDPOINTS as u64 + 50));
        assert_eq!(a.total.requests, total);
    }

    /// A tenant chooses its API versions (and countries, within the codes'
    /// shape): past their caps they are summed as other, like endpoints.
    #[test]
    fn versions_countries_and_integrations_beyond_their_caps_are_summed_as_other() {
        let mut c = Cell::default();
        for i in 0..MAX_COUNTRIES + 20 {
            let mut r = rec(0, 200, "u");
            let x = r.extra_mut();
            x.api_version = format!("v{i}").into();
            x.country = format!("{:02}", i % 1000).into();
            x.integration = format!("up-{i}").into();
            c.add(&r, None);
        }
        let x = &c.ext;
        assert_eq!(x.api_versions.len(), MAX_VERSIONS + 1);
        assert_eq!(x.integrations.len(), MAX_INTEGRATIONS + 1);
        assert_eq!(x.countries.len(), MAX_COUNTRIES + 1);
        let n = (MAX_COUNTRIES + 20) as u64;
        assert_eq!(x.api_versions[OTHER].requests, n - MAX_VERSIONS as u64);
        assert_eq!(x.countries[OTHER].requests, 20);
        let mut merged = c.clone();
        merged.merge(&c);
        assert_eq!(merged.ext.api_versions.len(), MAX_VERSIONS + 1);
        assert_eq!(
            merged.ext.api_versions[OTHER].requests,
            2 * (n - MAX_VERSIONS as u64)
        );
    }

    #[test]
    fn grains() {
        assert_eq!(Grain::Hour.bucket(3_600_000 * 5 + 1), 5);
        assert_eq!(Grain::Day.bucket(-1), -1);
        assert_eq!(Grain::Minute.start_ms(2), 120_000);
    }
}
