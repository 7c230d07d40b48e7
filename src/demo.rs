//! `serve --demo`: one demo tenant per configured plan, each with 30 days
//! of realistic usage (the seed's sample-data script) written straight into
//! the store, and a fresh key each time it runs.
//!
//! From the 6th of a month on, the cheapest plan with a call quota has
//! asked for 8 % more than its quota this month (the rest refused, 429)
//! and the next one is at 86 % of its quota. Their whole history runs at
//! that pace, so that only the two incidents the README names are unusual
//! hours; in a month's first days the pace is bounded ([`MAX_FACTOR`]) and
//! they are on their way.
//! While the server runs, [`live_traffic`] sends it a few real requests a
//! second through its own HTTP API, so the dashboard moves.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use chrono::{DateTime, Duration, Timelike, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::model::{
    CompactString, RecordExtra, Tenant, TenantStatus, TokenCounts, TokenKinds, UsageRecord,
};
use crate::pricing::PriceTable;
use crate::registry::{Registry, RegistryError};
use crate::store::UsageBlock;

/// A demo tenant and the key printed for it.
#[derive(Clone, Debug)]
pub(crate) struct DemoTenant {
    pub tenant_id: String,
    pub plan_id: String,
    pub key: String,
    pub(crate) records_written: usize,
}

/// Requests per day (before the daily rhythm) for each default plan.
fn daily_volume(plan_id: &str) -> f64 {
    match plan_id {
        "free" => 350.0,
        "starter" => 2_400.0,
        "professional" => 9_000.0,
        _ => 14_000.0,
    }
}

const ENDPOINTS: &[((&str, &str), f64)] = &[
    (("/api/chat", "POST"), 0.56),
    (("/api/conversations", "GET"), 0.16),
    (("/api/embeddings", "POST"), 0.10),
    (("/api/bots", "GET"), 0.07),
    (("/api/files", "POST"), 0.05),
    (("/api/billing/usage", "GET"), 0.04),
    (("/api/bots", "PATCH"), 0.02),
];
/// Where the demo's callers are.
const COUNTRIES: &[(&str, f64)] = &[
    ("US", 0.34),
    ("DE", 0.12),
    ("GB", 0.10),
    ("IN", 0.09),
    ("FR", 0.07),
    ("BR", 0.06),
    ("CA", 0.05),
    ("JP", 0.05),
    ("NL", 0.04),
    ("AU", 0.04),
    ("ES", 0.04),
];
/// The API versions the demo's chat clients pin.
const VERSIONS: &[(&str, f64)] = &[("2024-10-21", 0.62), ("2024-06-01", 0.38)];

/// The hour of `now`'s day `days_ago` days back at `hour`:00 UTC.
fn hour_back(now: DateTime<Utc>, days_ago: i64, hour: u32) -> Option<DateTime<Utc>> {
    (now - Duration::days(days_ago))
        .with_hour(hour)?
        .with_minute(0)?
        .with_second(0)?
        .with_nanosecond(0)
}

/// Gives `r` what the analytics break down beyond the basics: the caller's
/// country, the API version a chat pins, and whether it was a retry (after
/// a 429 or a 5xx, as SDKs do).
fn enrich(rng: &mut StdRng, r: &mut UsageRecord) {
    r.extra_mut().country = (*pick(rng, COUNTRIES)).into();
    if r.endpoint == "/api/chat" {
        r.extra_mut().api_version = (*pick(rng, VERSIONS)).into();
        r.retried = rng.gen_bool(0.03);
    }
}

/// The hour the demo's `plan_id` tenant shows as unusual: the
/// professional tenant's upstream failing two days ago at 14:00, the
/// enterprise tenant's traffic tripling yesterday at 10:00.
fn unusual_hour(plan_id: &str, now: DateTime<Utc>) -> Option<(DateTime<Utc>, Unusual)> {
    match plan_id {
        "professional" => Some((hour_back(now, 2, 14)?, Unusual::Failing)),
        "enterprise" => Some((hour_back(now, 1, 10)?, Unusual::Busy)),
        _ => None,
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Unusual {
    /// Two in five requests time out upstream (502 after 30 s).
    Failing,
    /// Three times the hour's usual traffic.
    Busy,
}

const CHAT_MODELS: &[(&str, f64)] = &[
    ("gpt-4o-mini", 0.48),
    ("gpt-4o", 0.20),
    ("gpt-4.1-mini", 0.15),
    ("gpt-3.5-turbo", 0.10),
    ("gpt-4.1", 0.07),
];
const BOTS: &[(&str, f64)] = &[
    ("support-bot", 0.40),
    ("sales-bot", 0.22),
    ("onboarding-bot", 0.16),
    ("faq-bot", 0.14),
    ("docs-bot", 0.08),
];
const STATUSES: &[(u16, f64)] = &[
    (200, 0.935),
    (201, 0.03),
    (400, 0.012),
    (401, 0.004),
    (404, 0.006),
    (429, 0.005),
    (500, 0.005),
    (502, 0.003),
];

fn pick<'a, T>(rng: &mut StdRng, table: &'a [(T, f64)]) -> &'a T {
    let mut x: f64 = rng.gen::<f64>() * table.iter().map(|e| e.1).sum::<f64>();
    for (v, w) in table {
        if x < *w {
            return v;
        }
        x -= w;
    }
    &table[table.len() - 1].0
}

/// A log-normal sample with the given median.
fn log_normal(rng: &mut StdRng, median: f64, sigma: f64) -> f64 {
    let (u1, u2): (f64, f64) = (rng.gen::<f64>().max(1e-12), rng.gen());
    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    median * (sigma * z).exp()
}

/// The share of a day's traffic in each UTC hour: quiet at night, a peak in
/// the afternoon.
fn hour_weight(hour: u32) -> f64 {
    let x = (hour as f64 - 15.0) / 24.0 * 2.0 * std::f64::consts::PI;
    0.25 + (1.0 + x.cos()) / 2.0
}

fn record(rng: &mut StdRng, ts: DateTime<Utc>, prices: &PriceTable) -> UsageRecord {
    let (endpoint, method) = *pick(rng, ENDPOINTS);
    let status = *pick(rng, STATUSES);
    let is_chat = endpoint == "/api/chat";
    let is_embed = endpoint == "/api/embeddings";
    let (model, prompt, completion) = if is_chat && status < 400 {
        let m = *pick(rng, CHAT_MODELS);
        let p = log_normal(rng, 420.0, 0.7).round().clamp(8.0, 8_000.0) as u64;
        let c = log_normal(rng, 180.0, 0.6).round().clamp(4.0, 4_000.0) as u64;
        (m, p, c)
    } else if is_embed && status < 400 {
        (
            "text-embedding-3-small",
            log_normal(rng, 600.0, 0.5).round() as u64,
            0,
        )
    } else {
        ("", 0, 0)
    };
    let latency = if is_chat {
        log_normal(rng, 850.0, 0.45)
    } else {
        log_normal(rng, 45.0, 0.6)
    };
    let user = (rng.gen::<f64>().powf(2.2) * 60.0) as u32 + 1;
    // Half the chats reuse a cached system prompt (30-80 % of it), chosen
    // from the record itself so that the rest of the story draws the same.
    let h =
        (ts.timestamp_millis() as u64 ^ prompt.rotate_left(32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let kinds = TokenKinds {
        cached_prompt: if is_chat && h >> 63 == 0 {
            prompt * (30 + (h >> 8) % 51) / 100
        } else {
            0
        },
        ..TokenKinds::NONE
    };
    let counts = TokenCounts::from_upstream(prompt, completion, 0).with_kinds(kinds);
    let mut r = UsageRecord {
        ts_ms: ts.timestamp_millis(),
        endpoint: endpoint.into(),
        method: method.into(),
        status,
        response_ms: (latency * 10.0).round() / 10.0,
        prompt_tokens: prompt,
        completion_tokens: completion,
        tokens: prompt + completion,
        model: model.into(),
        extra: RecordExtra {
            user_id: format!("user-{user:03}").into(),
            bot_id: if is_chat {
                (*pick(rng, BOTS)).into()
            } else {
                CompactString::default()
            },
            metadata: if is_chat {
                vec![(
                    "channel".into(),
                    if rng.gen_bool(0.7) { "web" } else { "api" }.into(),
                )]
            } else {
                Vec::new()
            },
            ..Default::default()
        }
        .boxed(),
        calls: if status == 429 { 0 } else { 1 },
        rejected: status == 429,
        ..Default::default()
    };
    r.set_tokens(&counts);
    r.set_cost(prices.cost(model, &counts, r.ts_ms).priced());
    r
}

/// The name of the key the demo creates for each tenant.
const DEMO_KEY: &str = "demo";

/// What a demo tenant is named while its history is being written: a run
/// cut meanwhile (a stop signal, a crash) leaves it so, and the next run
/// deletes it, with what it had written, and writes it again.
const SEEDING: &str = " (seeding)";

/// Creates (or reuses) the demo tenants - one for each plan of
/// `configured` (the ids of the plans the configuration names: the
/// built-in ones or a plans file's; a plan made through the API never gets
/// one) -, writes their history when they are new, and makes a fresh key
/// for each. `scale` multiplies the volume (tests
/// use a small one). A second run writes no history again and replaces
/// each tenant's demo key. `stop` is asked between the hours written:
/// once it says so, seeding ends there (`None`), the cut tenant left
/// marked for the next run.
pub(crate) fn seed(
    registry: &Registry,
    prices: &PriceTable,
    configured: &[String],
    now: DateTime<Utc>,
    days: i64,
    scale: f64,
    stop: &dyn Fn() -> bool,
) -> Result<Option<Vec<DemoTenant>>, RegistryError> {
    let mut out = Vec::new();
    let mut plans = registry.plans();
    plans.retain(|p| configured.contains(&p.id));
    plans.sort_by(|a, b| a.price_usd_monthly.total_cmp(&b.price_usd_monthly));
    // This month's demand, as a share of the quota: over, then near.
    let mut shares = [OVER_QUOTA, NEAR_QUOTA].into_iter();
    for plan in plans {
        let demand = plan
            .monthly_calls
            .and_then(|limit| Some((limit, shares.next()?)))
            .map(|(limit, share)| ((limit as f64 * share) as u64, limit));
        let tenant_id = format!("demo-{}", plan.id);
        if stop() {
            return Ok(None);
        }
        if registry
            .tenant(&tenant_id)?
            .is_some_and(|t| t.name.ends_with(SEEDING))
        {
            tracing::info!(tenant = %tenant_id, "the last run's seeding was cut: writing this tenant again");
            registry.delete_tenant(&tenant_id, now)?;
        }
        let mut written = 0;
        if registry.tenant_state(&tenant_id).is_none() {
            let name = format!("Demo {}", plan.name);
            registry.create_tenant(
                Tenant {
                    id: tenant_id.clone(),
                    name: format!("{name}{SEEDING}"),
                    plan_id: plan.id.clone(),
                    status: TenantStatus::Active,
                    created_at: now - Duration::days(days),
                    limits: Vec::new(),
                    billing_day: None,
                },
                now,
            )?;
            let state = registry
                .tenant_state(&tenant_id)
                .ok_or_else(|| RegistryError::NotFound(tenant_id.clone()))?;
            let history = History {
                plan_id: &plan.id,
                now,
                days,
                scale,
                demand,
            };
            let Some(n) = write_history(registry, prices, &state, &history, stop)? else {
                return Ok(None);
            };
            written = n;
            registry.update_tenant(
                &tenant_id,
                |t| {
                    t.name = name;
                    Ok(())
                },
                now,
            )?;
        }
        // One working demo key per tenant: a second run's key replaces the
        // first run's (only its hash is stored, so it cannot be shown again).
        for old in registry.keys(&tenant_id)? {
            if old.name == DEMO_KEY && old.revoked_at.is_none() {
                registry.revoke_key(&tenant_id, &old.id, now)?;
            }
        }
        let (_, key) = registry.create_key(&tenant_id, DEMO_KEY, None, now)?;
        out.push(DemoTenant {
            tenant_id,
            plan_id: plan.id,
            key,
            records_written: written,
        });
    }
    Ok(Some(out))
}

/// What [`write_history`] writes for one tenant.
struct History<'a> {
    plan_id: &'a str,
    now: DateTime<Utc>,
    days: i64,
    scale: f64,
    /// The calls asked for this month and the monthly quota: this month's
    /// volume is scaled to the demand, and what is past the quota refused.
    demand: Option<(u64, u64)>,
}

/// This month's demand of the tenant shown over its quota, and of the one
/// near it, as shares of the quota.
const OVER_QUOTA: f64 = 1.08;
const NEAR_QUOTA: f64 = 0.86;
/// The most a plan's daily volume is scaled to reach its demand: reached
/// from about the 6th of a month; the 30 days of a tenant stay within
/// about 600,000 records.
const MAX_FACTOR: f64 = 8.0;

/// The mean requests of the hour from `hour_start` (before the noise).
fn hourly_mean(per_day: f64, start: DateTime<Utc>, days: i64, hour_start: DateTime<Utc>) -> f64 {
    let weekday = hour_start.format("%u").to_string();
    let weekend = if weekday == "6" || weekday == "7" {
        0.55
    } else {
        1.0
    };
    let day_weight: f64 = (0..24).map(hour_weight).sum();
    // Usage grows by about a third over the window.
    let trend = 0.85 + 0.3 * (hour_start - start).num_seconds() as f64 / (days * 86_400) as f64;
    per_day * hour_weight(hour_start.hour()) / day_weight * weekend * trend
}

/// Records written to the store at a time while seeding, each block
/// flushed to disk before the next: this bounds seeding's memory (about
/// 250 MB peak; 2.8 GB with 50,000-record blocks left to sled's own
/// flush, 770 MB with a flush every 40,000 records).
const BLOCK_RECORDS: usize = 10_000;

fn write_history(
    registry: &Registry,
    prices: &PriceTable,
    state: &Arc<crate::quota::TenantState>,
    h: &History,
    stop: &dyn Fn() -> bool,
) -> Result<Option<usize>, RegistryError> {
    let (now, days) = (h.now, h.days);
    let seed = h
        .plan_id
        .bytes()
        .fold(0x7011_6a7eu64, |h, b| h.wrapping_mul(31) ^ b as u64);
    let mut rng = StdRng::seed_from_u64(seed);
    let per_day = daily_volume(h.plan_id) * h.scale;
    let now_ns = now.timestamp_nanos_opt().unwrap_or(0);
    let mut total = 0;
    // Whole hours (the clock's fraction of a second too: the unusual
    // hours are found by equality).
    let start = (now - Duration::days(days))
        .with_minute(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(now);
    let month_start = crate::quota::period::Period::containing(now).start();
    // The volume scaled to this month's demand: the expected count of its
    // hours (the last one in part) against the calls asked for. The whole
    // history is scaled alike, so that the weeks before, the baseline of
    // the unusual hours, look like this one; early in a month the factor
    // would be large, so it is bounded ([`MAX_FACTOR`]) and the demand
    // reached from about the 6th.
    let factor = h.demand.map_or(1.0, |(demand, _)| {
        let mut expected = 0.0;
        let mut t = start.max(month_start);
        while t < now {
            let part = ((now - t).num_milliseconds() as f64 / 3_600_000.0).min(1.0);
            expected += hourly_mean(per_day, start, days, t) * part;
            t += Duration::hours(1);
        }
        if expected > 0.0 {
            // (Against the plan's volume before `scale`: a test's smaller
            // one reaches the same demand on the same days.)
            (demand as f64 / expected).min(MAX_FACTOR / h.scale.max(1e-6))
        } else {
            1.0
        }
    });
    let mut month_calls = 0u64;
    let mut hour_start = start;
    let mut records = Vec::new();
    // The fields beyond the basics, and the unusual hour, draw from a
    // generator of their own, so the basics are the same as they were.
    let mut extra = StdRng::seed_from_u64(seed ^ 0x1a51_6475);
    let unusual = unusual_hour(h.plan_id, now);
    while hour_start < now {
        if stop() {
            return Ok(None);
        }
        let this_month = hour_start >= month_start;
        let odd = unusual.filter(|(at, _)| *at == hour_start).map(|(_, u)| u);
        let mut mean = hourly_mean(per_day, start, days, hour_start) * factor;
        if odd == Some(Unusual::Busy) {
            mean *= 3.0;
        }
        let n = (mean + (rng.gen::<f64>() - 0.5) * mean.sqrt() * 2.0)
            .round()
            .max(0.0) as u64;
        for _ in 0..n {
            let ts = hour_start + Duration::milliseconds(rng.gen_range(0..3_600_000));
            if ts >= now {
                continue;
            }
            let mut r = record(&mut rng, ts, prices);
            enrich(&mut extra, &mut r);
            if odd == Some(Unusual::Failing) && extra.gen_bool(0.4) {
                failed_upstream(&mut r);
            }
            if this_month {
                match h.demand {
                    Some((_, limit)) if r.calls > 0 && month_calls >= limit => refused(&mut r),
                    _ => month_calls += r.calls,
                }
            }
            state.add_usage(crate::clock::Nanos(now_ns), r.ts_ms, r.calls, r.tokens);
            records.push(r);
        }
        hour_start += Duration::hours(1);
        if records.len() >= BLOCK_RECORDS || hour_start >= now {
            records.sort_by_key(|r| r.ts_ms);
            total += records.len();
            registry.store().write_usage(&[UsageBlock {
                tenant: state.id.to_string(),
                records: std::mem::take(&mut records),
                ..Default::default()
            }])?;
            // What the store holds dirty is what seeding's memory peaks
            // at (sled keeps every rewrite of a page until it is flushed):
            // on disk before the next block.
            registry.store().flush()?;
        }
    }
    Ok(Some(total))
}

/// A request whose upstream timed out: 502 after 30 s, no tokens.
fn failed_upstream(r: &mut UsageRecord) {
    r.status = 502;
    r.prompt_tokens = 0;
    r.completion_tokens = 0;
    r.tokens = 0;
    r.model.clear();
    r.cost_usd = 0.0;
    r.response_ms = 30_000.0;
}

/// A request past the monthly quota: refused, 429, nothing used.
fn refused(r: &mut UsageRecord) {
    r.status = 429;
    r.calls = 0;
    r.rejected = true;
    r.prompt_tokens = 0;
    r.completion_tokens = 0;
    r.tokens = 0;
    r.model.clear();
    r.cost_usd = 0.0;
    r.response_ms = (r.response_ms / 100.0).max(0.3);
}

/// Sends the server at `addr` a few real requests a second, from the demo
/// tenants' `keys` in proportion to their plans' volume, on a thread of its
/// own, until the server stops answering: chats with the built-in echo bot
/// when `echo` (so tokens and cost move too), otherwise authorizations
/// (never a paid upstream's tokens). The tenant over its quota gets its 429s.
pub(crate) fn live_traffic(addr: SocketAddr, tenants: Vec<DemoTenant>, echo: bool) {
    let spawned = std::thread::Builder::new()
        .name("tollgate-demo".into())
        .spawn(move || {
            let mut rng = StdRng::from_entropy();
            let weights: Vec<((&str, &str), f64)> = tenants
                .iter()
                .map(|t| {
                    (
                        (t.key.as_str(), t.plan_id.as_str()),
                        daily_volume(&t.plan_id).sqrt(),
                    )
                })
                .collect();
            // Give the server a moment to listen.
            std::thread::sleep(std::time::Duration::from_millis(500));
            let mut failures = 0;
            while failures < 20 {
                let (key, _) = *pick(&mut rng, &weights);
                let bot = *pick(&mut rng, BOTS);
                let body = if echo {
                    let words = rng.gen_range(4..40);
                    let message = vec!["hello"; words].join(" ");
                    format!(
                        r#"{{"message":"{message}","botId":"{bot}","userId":"user-{:03}"}}"#,
                        rng.gen_range(1..60)
                    )
                } else {
                    r#"{"endpoint":"/api/chat","method":"POST"}"#.to_string()
                };
                let path = if echo {
                    "/api/chat"
                } else {
                    "/api/v1/authorize"
                };
                match post(addr, key, path, &body) {
                    Ok(_) => failures = 0,
                    Err(_) => failures += 1,
                }
                let pause = rng.gen_range(100..400);
                std::thread::sleep(std::time::Duration::from_millis(pause));
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "the demo's live traffic could not start");
    }
}

/// One `POST` with a tenant key; the status.
fn post(addr: SocketAddr, key: &str, path: &str, body: &str) -> std::io::Result<u16> {
    let mut s = TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    answer
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status line"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::quota::period::Period;
    use crate::store::{SledOptions, SledStore, Store};
    use chrono::TimeZone;

    /// The default plans' ids, as the configuration names them.
    fn configured() -> Vec<String> {
        Config::default()
            .default_plans()
            .unwrap()
            .into_iter()
            .map(|p| p.id)
            .collect()
    }

    /// A whole seeding of the default plans' tenants, 30 days at `scale`.
    fn seed_whole(registry: &Registry, now: DateTime<Utc>, scale: f64) -> Vec<DemoTenant> {
        seed(
            registry,
            &PriceTable::builtin(),
            &configured(),
            now,
            30,
            scale,
            &|| false,
        )
        .unwrap()
        .unwrap()
    }

    /// A seeding cut by a stop signal leaves the tenant it was writing
    /// marked; the next run deletes it with its partial history and writes
    /// it again, so that every tenant ends as a run never cut would leave it.
    #[test]
    fn a_cut_seeding_is_completed_by_the_next_run() {
        let now = Utc.with_ymd_and_hms(2026, 11, 15, 14, 0, 0).unwrap();
        let open = |dir: &std::path::Path| {
            let store: Arc<dyn Store> =
                Arc::new(SledStore::open_with(dir, SledOptions::new(100, 1 << 24)).unwrap());
            let plans = Config::default().default_plans().unwrap();
            (Registry::load(store.clone(), &plans, now).unwrap(), store)
        };
        let figures = |registry: &Registry, store: &Arc<dyn Store>| {
            let mut out: Vec<(String, String, u64, u64)> = registry
                .tenants()
                .unwrap()
                .into_iter()
                .map(|t| {
                    let (calls, _) = registry
                        .tenant_state(&t.id)
                        .unwrap()
                        .used(Period::containing(now));
                    let mut records = 0u64;
                    store
                        .scan_usage(&t.id, 0, i64::MAX, &mut |_| {
                            records += 1;
                            true
                        })
                        .unwrap();
                    (t.id, t.name, calls, records)
                })
                .collect();
            out.sort();
            out
        };
        let clean = tempfile::tempdir().unwrap();
        let (registry, store) = open(clean.path());
        seed_whole(&registry, now, 0.2);
        let whole = figures(&registry, &store);

        let cut = tempfile::tempdir().unwrap();
        {
            let (registry, store) = open(cut.path());
            let asked = std::cell::Cell::new(0);
            let stop = || {
                asked.set(asked.get() + 1);
                asked.get() > 1_000
            };
            let seeded = seed(
                &registry,
                &PriceTable::builtin(),
                &configured(),
                now,
                30,
                0.2,
                &stop,
            )
            .unwrap();
            assert!(seeded.is_none());
            let marked: Vec<String> = registry
                .tenants()
                .unwrap()
                .into_iter()
                .filter(|t| t.name.ends_with(SEEDING))
                .map(|t| t.id)
                .collect();
            assert_eq!(marked.len(), 1, "{:?}", figures(&registry, &store));
            store.flush().unwrap();
        }
        let (registry, store) = open(cut.path());
        seed_whole(&registry, now, 0.2);
        assert_eq!(figures(&registry, &store), whole);
    }

    /// The story the README tells, on the 1st, from the 6th, mid-month and
    /// at a month's end, with a clock that has a fraction of a second (the
    /// unusual hours were once lost to it): the professional tenant's
    /// upstream failing two days ago at 14:00 and the enterprise tenant's
    /// traffic tripling yesterday at 10:00 are the week's unusual hours,
    /// and the only ones, of those tenants; the cheapest plan's tenant has
    /// used all of its quota (from the 6th; before, it is on its way) and
    /// the next one about 86 %, at a rate their weeks before share, so
    /// that nothing of theirs is unusual before the quota runs out; the
    /// demo has insights, countries and API versions to show.
    #[test]
    fn the_demo_tells_its_story_on_any_day_of_the_month() {
        use crate::analytics::anomaly::{detect, Direction, Metric};
        use crate::analytics::hours::Hours;
        use crate::analytics::insights::insights;
        use crate::analytics::query::{aggregate, Range};
        use crate::rollup::Owner;
        use chrono::Datelike;
        let at = |y, m, d, h, min, nanos| {
            Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap() + Duration::nanoseconds(nanos)
        };
        for now in [
            at(2026, 12, 1, 3, 20, 400_000_000),
            at(2026, 12, 6, 0, 0, 500_000_000),
            at(2026, 11, 15, 14, 7, 987_654_321),
            at(2027, 2, 28, 23, 10, 250_000_000),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let store: Arc<dyn Store> =
                Arc::new(SledStore::open_with(dir.path(), SledOptions::new(100, 1 << 24)).unwrap());
            let plans = Config::default().default_plans().unwrap();
            let registry = Registry::load(store.clone(), &plans, now).unwrap();
            seed_whole(&registry, now, 0.2);
            let share = |id: &str| {
                let state = registry.tenant_state(id).unwrap();
                let (calls, _) = state.used(Period::containing(now));
                let limit = state.plan().plan.monthly_calls.unwrap();
                calls as f64 / limit as f64
            };
            let h_now = now.timestamp_millis() / 3_600_000;
            let found = |tenant: &str| {
                let hours = Hours::read(
                    store.as_ref(),
                    &Owner::tenant(tenant),
                    h_now - 35 * 24,
                    h_now,
                )
                .unwrap();
                // Complete hours, as the analytics judge them.
                detect(&hours, h_now - 7 * 24, h_now)
            };
            let hour = |t: DateTime<Utc>| t.timestamp_millis() / 3_600_000;
            let failing = hour(hour_back(now, 2, 14).unwrap());
            let pro = found("demo-professional");
            assert!(
                pro.iter().any(|a| a.hour == failing
                    && a.metric == Metric::ErrorRate
                    && a.direction == Direction::Up),
                "{now}: {pro:?}"
            );
            let busy = hour(hour_back(now, 1, 10).unwrap());
            let ent = found("demo-enterprise");
            assert!(
                ent.iter().any(|a| a.hour == busy
                    && a.metric == Metric::Requests
                    && a.direction == Direction::Up),
                "{now}: {ent:?}"
            );
            assert!(pro.iter().all(|a| a.hour == failing), "{now}: {pro:?}");
            assert!(ent.iter().all(|a| a.hour == busy), "{now}: {ent:?}");
            // The plans near and over their quota: nothing unusual but,
            // once the quota has run out, the tokens of refused requests.
            let mut over = i64::MAX;
            store
                .scan_usage(
                    "demo-free",
                    Period::containing(now).start().timestamp_millis(),
                    now.timestamp_millis() + 1,
                    &mut |r| {
                        if r.rejected {
                            over = over.min(r.ts_ms / 3_600_000);
                        }
                        true
                    },
                )
                .unwrap();
            let free = found("demo-free");
            assert!(
                free.iter()
                    .all(|a| a.hour >= over && a.metric == Metric::Tokens),
                "{now}: {free:?}"
            );
            assert_eq!(found("demo-starter"), Vec::new(), "{now}");
            if now.day() >= 6 {
                assert_eq!(share("demo-free"), 1.0, "{now}");
                let near = share("demo-starter");
                assert!((0.80..0.92).contains(&near), "{now}: {near}");
            } else {
                assert!(share("demo-free") < 1.0, "{now}");
            }
            assert!(share("demo-professional") < 0.8, "{now}");
            let owner = Owner::tenant("demo-professional");
            let month = aggregate(
                store.as_ref(),
                &owner,
                Range::minutes(
                    now.timestamp_millis() - 30 * 86_400_000,
                    now.timestamp_millis(),
                ),
                now.timestamp_millis(),
            )
            .unwrap();
            let advice = insights(&month, &PriceTable::builtin());
            assert!(
                advice.iter().any(|i| i.kind == "cheaperModel"),
                "{advice:?}"
            );
            assert!(month.ext.countries.len() >= 10 && month.ext.api_versions.len() == 2);
            assert!(month.ext.retries > 0);
        }
    }

    /// A plan made through the API (the README's tour makes `team`) gets no
    /// demo tenant on a later run, and the demo touches none of the
    /// operator's own tenants.
    #[test]
    fn a_later_run_leaves_the_operators_plans_and_tenants_alone() {
        let now = Utc.with_ymd_and_hms(2026, 12, 9, 12, 0, 0).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SledStore::open_with(dir.path(), SledOptions::new(100, 1 << 24)).unwrap());
        let plans = Config::default().default_plans().unwrap();
        let registry = Registry::load(store, &plans, now).unwrap();
        seed_whole(&registry, now, 0.05);
        let mut team = plans[1].clone();
        team.id = "team".into();
        team.name = "Team".into();
        registry.create_plan(team, now).unwrap();
        registry
            .create_tenant(
                Tenant {
                    id: "acme".into(),
                    name: "Acme".into(),
                    plan_id: "team".into(),
                    status: TenantStatus::Active,
                    created_at: now,
                    limits: Vec::new(),
                    billing_day: None,
                },
                now,
            )
            .unwrap();
        let before = registry.tenants().unwrap();
        let again = seed_whole(&registry, now, 0.05);
        let ids: Vec<&str> = again.iter().map(|t| t.tenant_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "demo-free",
                "demo-starter",
                "demo-professional",
                "demo-enterprise"
            ]
        );
        assert!(again.iter().all(|t| t.records_written == 0));
        let after = registry.tenants().unwrap();
        assert_eq!(after.len(), before.len());
        assert!(registry.tenant_state("demo-team").is_none());
        assert_eq!(
            registry
                .tenant_state("acme")
                .unwrap()
                .used(Period::containing(now)),
            (0, 0)
        );
    }
}
