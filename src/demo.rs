//! `serve --demo`: one demo tenant per default plan, each with 30 days of
//! realistic usage (the seed's sample-data script) written straight into the
//! store, and a fresh key each time it runs.

use std::sync::Arc;

use chrono::{DateTime, Duration, Timelike, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::model::{Tenant, TenantStatus, UsageRecord};
use crate::pricing::PriceTable;
use crate::registry::{Registry, RegistryError};
use crate::store::UsageBlock;

/// A demo tenant and the key printed for it.
pub struct DemoTenant {
    pub tenant_id: String,
    pub plan_id: String,
    pub key: String,
    pub records_written: usize,
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
    UsageRecord {
        ts_ms: ts.timestamp_millis(),
        endpoint: endpoint.to_string(),
        method: method.to_string(),
        status,
        response_ms: (latency * 10.0).round() / 10.0,
        prompt_tokens: prompt,
        completion_tokens: completion,
        tokens: prompt + completion,
        model: model.to_string(),
        user_id: format!("user-{user:03}"),
        bot_id: if is_chat {
            pick(rng, BOTS).to_string()
        } else {
            String::new()
        },
        metadata: if is_chat {
            vec![(
                "channel".into(),
                if rng.gen_bool(0.7) { "web" } else { "api" }.into(),
            )]
        } else {
            Vec::new()
        },
        calls: if status == 429 { 0 } else { 1 },
        rejected: status == 429,
        cost_usd: prices.cost(model, prompt, completion).usd(),
    }
}

/// The name of the key the demo creates for each tenant.
const DEMO_KEY: &str = "demo";

/// Creates (or reuses) the demo tenants, writes their history when they are
/// new, and makes a fresh key for each. `scale` multiplies the volume (tests
/// use a small one). A second run writes no history again and replaces
/// each tenant's demo key.
pub fn seed(
    registry: &Registry,
    prices: &PriceTable,
    now: DateTime<Utc>,
    days: i64,
    scale: f64,
) -> Result<Vec<DemoTenant>, RegistryError> {
    let mut out = Vec::new();
    let mut plans = registry.plans();
    plans.sort_by(|a, b| a.price_usd_monthly.total_cmp(&b.price_usd_monthly));
    for plan in plans {
        let tenant_id = format!("demo-{}", plan.id);
        let mut written = 0;
        if registry.tenant(&tenant_id).is_none() {
            registry.create_tenant(
                Tenant {
                    id: tenant_id.clone(),
                    name: format!("Demo {}", plan.name),
                    plan_id: plan.id.clone(),
                    status: TenantStatus::Active,
                    created_at: now - Duration::days(days),
                },
                now,
            )?;
            let state = registry
                .tenant_state(&tenant_id)
                .ok_or_else(|| RegistryError::NotFound(tenant_id.clone()))?;
            written = write_history(registry, prices, &state, &plan.id, now, days, scale)?;
        }
        // One working demo key per tenant: a second run's key replaces the
        // first run's (only its hash is stored, so it cannot be shown again).
        for old in registry.keys(&tenant_id)? {
            if old.name == DEMO_KEY && old.revoked_at.is_none() {
                registry.revoke_key(&tenant_id, &old.id, now)?;
            }
        }
        let (_, key) = registry.create_key(&tenant_id, DEMO_KEY, now)?;
        out.push(DemoTenant {
            tenant_id,
            plan_id: plan.id,
            key,
            records_written: written,
        });
    }
    Ok(out)
}

fn write_history(
    registry: &Registry,
    prices: &PriceTable,
    state: &Arc<crate::quota::TenantState>,
    plan_id: &str,
    now: DateTime<Utc>,
    days: i64,
    scale: f64,
) -> Result<usize, RegistryError> {
    let seed = plan_id
        .bytes()
        .fold(0x7011_6a7eu64, |h, b| h.wrapping_mul(31) ^ b as u64);
    let mut rng = StdRng::seed_from_u64(seed);
    let per_day = daily_volume(plan_id) * scale;
    let day_weight: f64 = (0..24).map(hour_weight).sum();
    let now_ns = now.timestamp_nanos_opt().unwrap_or(0);
    let mut total = 0;
    let start = (now - Duration::days(days))
        .with_minute(0)
        .and_then(|t| t.with_second(0))
        .unwrap_or(now);
    let mut hour_start = start;
    let mut records = Vec::new();
    while hour_start < now {
        let weekday = hour_start.format("%u").to_string();
        let weekend = if weekday == "6" || weekday == "7" {
            0.55
        } else {
            1.0
        };
        // Usage grows by about a third over the window.
        let trend = 0.85 + 0.3 * (hour_start - start).num_seconds() as f64 / (days * 86_400) as f64;
        let mean = per_day * hour_weight(hour_start.hour()) / day_weight * weekend * trend;
        let n = (mean + (rng.gen::<f64>() - 0.5) * mean.sqrt() * 2.0)
            .round()
            .max(0.0) as u64;
        for _ in 0..n {
            let ts = hour_start + Duration::milliseconds(rng.gen_range(0..3_600_000));
            if ts >= now {
                continue;
            }
            let r = record(&mut rng, ts, prices);
            state.add_usage(now_ns, r.ts_ms, r.calls, r.tokens);
            records.push(r);
        }
        hour_start += Duration::hours(1);
        if records.len() >= 50_000 || hour_start >= now {
            records.sort_by_key(|r| r.ts_ms);
            total += records.len();
            registry.store().write_usage(&[UsageBlock {
                tenant: state.id.to_string(),
                records: std::mem::take(&mut records),
                ..Default::default()
            }])?;
        }
    }
    Ok(total)
}
