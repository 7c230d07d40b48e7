//! Builds a data directory for the scale figures of SPEC §9: TENANTS tenants
//! (each with a key) and RECORDS usage records over the last 20 days, then
//! prints one key. `scripts/scale.sh` starts Tollgate on it and measures.
//!
//!   cargo run --release --example scale -- DIR [TENANTS=100000] [RECORDS=10000000]
//!
//! With `TOLLGATE_STORE_POSTGRES_URL` set, the data goes to that database
//! instead (the PostgreSQL engine; DIR is then unused).

use std::time::Instant;

use chrono::Utc;
use tollgate::auth::{generate_key, KeyHash};
use tollgate::model::{ApiKey, RecordExtra, StoredKey, Tenant, TenantStatus, UsageRecord};
use tollgate::store::postgres::{self, PgOptions};
use tollgate::store::{SledStore, Store, UsageBlock};

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().expect("DIR"));
    let tenants: usize = args.next().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let records: u64 = args
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let store: Box<dyn Store> = match std::env::var("TOLLGATE_STORE_POSTGRES_URL") {
        Ok(url) => Box::new(
            postgres::open(&PgOptions {
                url,
                instance: "scale".into(),
                pool_size: 2,
                call_timeout: std::time::Duration::from_secs(600),
                spool_dir: None,
                spool_max_bytes: 0,
            })
            .unwrap()
            .0,
        ),
        Err(_) => Box::new(SledStore::open(&dir.join("db"), 100, 64 << 20).unwrap()),
    };
    let now = Utc::now();
    let started = Instant::now();
    let mut ts = Vec::with_capacity(tenants);
    let mut ks = Vec::with_capacity(tenants);
    let mut sample = String::new();
    for i in 0..tenants {
        let id = format!("t{i:06}");
        let secret = generate_key();
        if i == 0 {
            sample = secret.clone();
        }
        ks.push(StoredKey {
            key: ApiKey {
                id: format!("key_{i:06}"),
                tenant_id: id.clone(),
                name: "scale".into(),
                prefix: secret[..8].into(),
                created_at: now,
                revoked_at: None,
                expires_at: None,
                last_used_at: None,
                limits: Vec::new(),
            },
            hash: KeyHash::of(&secret).0,
            previous: None,
        });
        ts.push(Tenant {
            id: id.clone(),
            name: id,
            plan_id: "enterprise".into(),
            status: TenantStatus::Active,
            created_at: now,
            limits: Vec::new(),
            billing_day: None,
        });
    }
    store.import(&ts, &ks).unwrap();
    eprintln!(
        "{tenants} tenants and keys in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Records go to the first 100 tenants (dense enough to build quickly; the
    // restart cost depends on tenants and the journal, not on records).
    let started = Instant::now();
    let span_ms = 20 * 86_400_000i64;
    let end_ms = now.timestamp_millis();
    let writers = tenants.min(100);
    let batch = 200_000u64;
    let mut done = 0;
    while done < records {
        let n = batch.min(records - done);
        let blocks: Vec<UsageBlock> = (0..writers)
            .map(|w| UsageBlock {
                tenant: format!("t{w:06}"),
                records: (0..n / writers as u64)
                    .map(|j| {
                        let k = done + j * writers as u64 + w as u64;
                        UsageRecord {
                            ts_ms: end_ms - span_ms + (k as i64 * span_ms / records as i64),
                            endpoint: "/api/chat".into(),
                            method: "POST".into(),
                            status: 200,
                            response_ms: 50.0 + (k % 500) as f64,
                            prompt_tokens: k % 400,
                            tokens: k % 400,
                            model: "gpt-4o-mini".into(),
                            extra: RecordExtra {
                                user_id: format!("u{}", k % 100).into(),
                                ..Default::default()
                            }
                            .boxed(),
                            calls: 1,
                            ..Default::default()
                        }
                    })
                    .collect(),
                ..Default::default()
            })
            .collect();
        store.write_usage(&blocks).unwrap();
        store.checkpoint().unwrap();
        done += n;
    }
    store.flush().unwrap();
    eprintln!(
        "{records} records in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!("{sample}");
}
