//! Write soak with the clock running fast: SPEC §7 guarantee 5 ("memory does
//! not grow with the number of requests") for a load that writes. Stored data
//! grows with the records until retention starts dropping whole days, so a
//! wall-clock soak cannot reach the steady state in minutes. Here the server
//! (in this process, on 127.0.0.1) runs on a clock SPEED times faster than
//! the wall, with `retention.raw_days = 1`: a simulated day passes every
//! 86.4 s at SPEED 1000, raw day-trees expire after a day and minute rollups
//! after 7. Writer threads send usage records and authorize calls as fast as
//! they can; every 10 s the process's RSS, open files, the store's size on
//! disk and the request count are printed. Exits 1 if RSS grew more than
//! 25 % between the first sample after WARMUP_DAYS simulated days and the
//! last.
//!
//!   cargo run --release --example soak_fast_clock -- [SECONDS=1800] [SPEED=1000]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tollgate::app::RunningServer;
use tollgate::clock::{Clock, Nanos};
use tollgate::config::Config;

const ADMIN: &str = "soak-admin-token";
const TENANTS: usize = 10;
const WRITERS: usize = 4;
/// Simulated days before the baseline sample: retention has dropped raw
/// days for a while and minute rollups (7 days) are close to their plateau.
const WARMUP_DAYS: f64 = 8.0;

/// The wall clock, `speed` times faster, starting now.
struct FastClock {
    origin: Instant,
    start_nanos: i64,
    speed: i64,
}

impl Clock for FastClock {
    fn now_nanos(&self) -> Nanos {
        Nanos(self.start_nanos + self.origin.elapsed().as_nanos() as i64 * self.speed)
    }
}

fn rss_kib() -> u64 {
    status_field("VmRSS:")
}

fn status_field(name: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or(0)
}

fn open_files() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

fn main() {
    // As the tollgate binary does.
    tollgate::alloc::limit_arenas();
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|v| v.parse().ok()).unwrap_or(1800);
    let speed: i64 = args.next().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().to_path_buf(),
        ..Default::default()
    };
    config.retention.raw_days = 1;
    let clock = Arc::new(FastClock {
        origin: Instant::now(),
        start_nanos: chrono::Utc::now().timestamp_nanos_opt().unwrap(),
        speed,
    });
    let server = RunningServer::start(config, ADMIN, clock.clone()).unwrap();
    let http = reqwest::blocking::Client::new();
    let admin = |method: &str, path: &str, body: Value| -> Value {
        http.request(method.parse().unwrap(), server.url(path))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let keys: Vec<String> = (0..TENANTS)
        .map(|i| {
            let id = format!("soak{i}");
            admin(
                "POST",
                "/api/admin/tenants",
                json!({"id": id, "planId": "enterprise"}),
            );
            admin("POST", &format!("/api/admin/tenants/{id}/keys"), json!({}))["key"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();

    let requests = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (keys, requests, errors) = (keys.clone(), requests.clone(), errors.clone());
            let base = server.url("");
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::new();
                let mut n: u64 = w as u64;
                while Instant::now() < deadline {
                    n += WRITERS as u64;
                    let key = &keys[(n as usize) % keys.len()];
                    let batch: Vec<Value> = (0..20)
                        .map(|j| {
                            json!({
                                "endpoint": format!("/v1/op{}", (n + j) % 12),
                                "method": if j % 3 == 0 { "GET" } else { "POST" },
                                "statusCode": if (n + j) % 17 == 0 { 500 } else { 200 },
                                "responseTime": ((n * 7 + j) % 400) as f64,
                                "model": "gpt-4o-mini",
                                "promptTokens": 30 + (n + j) % 50,
                                "completionTokens": 10 + (n + j) % 40,
                                "userId": format!("user-{}", (n + j) % 40),
                                "botId": format!("bot-{}", (n + j) % 5),
                                "calls": 0,
                            })
                        })
                        .collect();
                    let ok = http
                        .post(format!("{base}/api/v1/usage"))
                        .bearer_auth(key)
                        .json(&batch)
                        .send()
                        .map(|r| r.status().as_u16() == 202)
                        .unwrap_or(false);
                    let allowed = http
                        .post(format!("{base}/api/v1/authorize"))
                        .bearer_auth(key)
                        .send()
                        .map(|r| r.status().as_u16() < 500)
                        .unwrap_or(false);
                    requests.fetch_add(2, Ordering::Relaxed);
                    if !ok || !allowed {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    println!("wall_s  sim_day  requests  records_persisted  rss_mib  open_files  store_mib");
    let started = Instant::now();
    let mut baseline: Option<(u64, u64)> = None;
    let mut last = (0, 0);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(10).min(deadline - Instant::now()));
        let m = http
            .get(server.url("/metrics"))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_default();
        let day = (clock.now_nanos().0 - clock.start_nanos) as f64 / 86_400e9;
        let (rss, reqs) = (rss_kib(), requests.load(Ordering::Relaxed));
        println!(
            "{:6.0}  {:7.2}  {:8}  {:17}  {:7.1}  {:10}  {:9.1}",
            started.elapsed().as_secs_f64(),
            day,
            reqs,
            metric(&m, "tollgate_records_persisted_total") as u64,
            rss as f64 / 1024.0,
            open_files(),
            metric(&m, "tollgate_store_size_bytes") / 1_048_576.0,
        );
        if baseline.is_none() && day >= WARMUP_DAYS {
            baseline = Some((rss, reqs));
        }
        last = (rss, reqs);
    }
    for w in writers {
        w.join().unwrap();
    }
    let errors = errors.load(Ordering::Relaxed);
    server.stop().unwrap();
    let Some((rss0, reqs0)) = baseline else {
        println!("too short: the clock never reached day {WARMUP_DAYS}");
        std::process::exit(2);
    };
    let growth = last.0 as f64 / rss0 as f64 - 1.0;
    println!(
        "RSS {:.1} MiB at day {WARMUP_DAYS} ({reqs0} requests) -> {:.1} MiB at the end ({} requests): {:+.1} %; {errors} failed requests",
        rss0 as f64 / 1024.0,
        last.0 as f64 / 1024.0,
        last.1,
        growth * 100.0
    );
    if growth > 0.25 || errors > 0 {
        std::process::exit(1);
    }
}
