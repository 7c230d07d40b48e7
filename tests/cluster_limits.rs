//! The limits of SPEC §12 across three real Tollgate processes sharing one
//! PostgreSQL and one Redis (throw-away servers from `common/`): for each
//! scope and each measure, 64 clients spread over the instances get
//! exactly the limit allowed; the dollar budget of LiteLLM #34732 (64
//! requests of $0.05 against $1.00) passes exactly 20; a place in flight
//! given back on one instance is free on the others at once, and the
//! places a `kill -9`ed instance held come back once it is gone.

#[path = "common/admin.rs"]
mod admin;
#[path = "common/binary.rs"]
mod binary;
#[path = "common/postgres.rs"]
mod postgres;
#[path = "common/redis.rs"]
mod redis;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use binary::Proc;
use reqwest::blocking::Client;
use serde_json::{json, Value};

const ADMIN: &str = "cluster-limits-admin";

struct Fleet {
    redis: redis::Redis,
    _dirs: Vec<tempfile::TempDir>,
    procs: Vec<Proc>,
}

fn fleet() -> Fleet {
    let redis = redis::Redis::start();
    let pg = postgres::fresh_database();
    let url = redis.url();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let procs = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let name = format!("tg-{i}");
            let env = [
                ("TOLLGATE_STORE_ENGINE", "postgres"),
                ("TOLLGATE_STORE_POSTGRES_URL", pg.as_str()),
                ("TOLLGATE_CLUSTER_REDIS_URL", url.as_str()),
                ("TOLLGATE_CLUSTER_INSTANCE_ID", name.as_str()),
                ("TOLLGATE_FLUSH_INTERVAL_MS", "50"),
                ("TOLLGATE_LOG", "warn"),
            ];
            binary::start(d.path(), &[], &env, Some(ADMIN))
        })
        .collect();
    let f = Fleet {
        redis,
        _dirs: dirs,
        procs,
    };
    let r = admin_call(
        &f.procs[0],
        "POST",
        "/api/admin/plans",
        json!({"id": "open", "name": "Open"}),
    );
    assert_eq!(r.status(), 201);
    f
}

fn admin_call(p: &Proc, method: &str, path: &str, body: Value) -> reqwest::blocking::Response {
    Client::new()
        .request(method.parse().unwrap(), p.url(path))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .unwrap()
}

/// A tenant on the open plan with `limits` of its own, and its key, once
/// every instance knows both.
fn tenant(f: &Fleet, id: &str, limits: Value) -> String {
    let key = admin::add_tenant(&Client::new(), &f.procs[0].base, ADMIN, "open", id);
    let path = format!("/api/admin/tenants/{id}/limits");
    let r = admin_call(&f.procs[0], "PUT", &path, json!({ "limits": limits }));
    assert_eq!(r.status(), 200, "{:?}", r.text());
    let names: Vec<String> = limits
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap().to_string())
        .collect();
    for p in &f.procs {
        knows(p, &key, &names);
    }
    key
}

/// Waits until the instance `p` applies every limit of `names` to
/// `key`'s requests (a dry run's `RateLimit-Policy` lists them).
fn knows(p: &Proc, key: &str, names: &[String]) {
    let c = Client::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = json!({"dryRun": true, "userId": "probe", "botId": "probe", "model": "probe"});
    loop {
        let r = c
            .post(p.url("/api/v1/authorize"))
            .bearer_auth(key)
            .json(&body)
            .send()
            .unwrap();
        let policy = r
            .headers()
            .get("ratelimit-policy")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if names.iter().all(|n| policy.contains(&format!("\"{n}\""))) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "an instance never learnt the limits: {policy}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn authorize(p: &Proc, key: &str, body: &Value) -> (u16, Value) {
    let r = Client::new()
        .post(p.url("/api/v1/authorize"))
        .bearer_auth(key)
        .json(body)
        .send()
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

/// `n` authorizations of `body` by 64 clients round the instances: how
/// many were allowed, and the answers with the instance that gave each.
fn race(f: &Fleet, key: &str, n: usize, body: &Value) -> (usize, Vec<(usize, Value)>) {
    let next = AtomicUsize::new(0);
    let answers: Vec<(usize, u16, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..64)
            .map(|client| {
                let next = &next;
                s.spawn(move || {
                    let mut out = Vec::new();
                    while next.fetch_add(1, Ordering::Relaxed) < n {
                        let i = client % f.procs.len();
                        let (status, answer) = authorize(&f.procs[i], key, body);
                        out.push((i, status, answer));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    for (_, status, body) in &answers {
        assert!(*status == 200 || *status == 429, "{status} {body}");
    }
    let allowed: Vec<(usize, Value)> = answers
        .into_iter()
        .filter(|(_, s, _)| *s == 200)
        .map(|(i, _, b)| (i, b))
        .collect();
    (allowed.len(), allowed)
}

fn limit(name: &str, scope: &str, measure: &str, window: &str, amount: Value) -> Value {
    json!([{"name": name, "scope": scope, "measure": measure, "window": window, "amount": amount}])
}

/// Waits, if the hour ends within a minute, until the next one has begun:
/// the races below count in hour and day windows of the real clock.
fn clear_of_the_hour() {
    let now = chrono::Utc::now().timestamp();
    let left = 3_600 - now.rem_euclid(3_600);
    if left < 60 {
        std::thread::sleep(Duration::from_secs(left as u64 + 1));
    }
}

#[test]
fn across_three_instances_each_scope_and_measure_passes_exactly_its_limit() {
    let f = fleet();
    clear_of_the_hour();
    // The tenant's calls per hour.
    let k = tenant(
        &f,
        "t-calls",
        limit("per-hour", "tenant", "calls", "hour", json!(60)),
    );
    assert_eq!(race(&f, &k, 150, &json!({})).0, 60);
    let calls_key = k.clone();
    // Each end user's calls per day: two users, each exactly its own.
    let k = tenant(
        &f,
        "t-user",
        limit("per-user", "user", "calls", "day", json!(17)),
    );
    assert_eq!(race(&f, &k, 80, &json!({"userId": "ana"})).0, 17);
    assert_eq!(race(&f, &k, 80, &json!({"userId": "bo"})).0, 17);
    let user_key = k.clone();
    // Each bot's calls per hour.
    let k = tenant(
        &f,
        "t-bot",
        limit("per-bot", "bot", "calls", "hour", json!(23)),
    );
    assert_eq!(race(&f, &k, 80, &json!({"botId": "helper"})).0, 23);
    // Each model's tokens per hour, 100 reserved a call.
    let k = tenant(
        &f,
        "t-model",
        limit("gpt4o-tph", "model", "tokens", "hour", json!(1500)),
    );
    let body = json!({"model": "gpt-4o", "estimateTokens": 100});
    assert_eq!(race(&f, &k, 80, &body).0, 15);
    let other = json!({"model": "gpt-4o-mini", "estimateTokens": 100});
    assert_eq!(race(&f, &k, 80, &other).0, 15, "another model has its own");
    // Each key's calls in a burst window (12 at once, 12 an hour).
    let burst = json!([{"name": "key-burst", "scope": "key", "measure": "calls",
                        "window": "burst", "amount": 12, "perSeconds": 3600, "burst": 12}]);
    let k = tenant(&f, "t-key", burst);
    assert_eq!(race(&f, &k, 80, &json!({})).0, 12);
    let r = admin_call(
        &f.procs[0],
        "POST",
        "/api/admin/tenants/t-key/keys",
        json!({}),
    );
    let k2 = r.json::<Value>().unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    for p in &f.procs {
        knows(p, &k2, &["key-burst".to_string()]);
    }
    assert_eq!(race(&f, &k2, 80, &json!({})).0, 12, "each key has its own");
    // A key's own limit: tokens per day, 100 reserved a call.
    let k = admin::add_tenant(&Client::new(), &f.procs[0].base, ADMIN, "open", "t-own");
    let keys: Value = admin_call(
        &f.procs[0],
        "GET",
        "/api/admin/tenants/t-own/keys",
        json!({}),
    )
    .json()
    .unwrap();
    let key_id = keys["data"][0]["id"].as_str().unwrap().to_string();
    let path = format!("/api/admin/tenants/t-own/keys/{key_id}/limits");
    let own = limit("key-tokens", "key", "tokens", "day", json!(900));
    assert_eq!(
        admin_call(&f.procs[0], "PUT", &path, json!({ "limits": own })).status(),
        200
    );
    for p in &f.procs {
        knows(p, &k, &["key-tokens".to_string()]);
    }
    assert_eq!(race(&f, &k, 80, &json!({"estimateTokens": 100})).0, 9);
    // Every instance tells the same story once the races are over: the
    // tenant's hour is spent, and the refusal names its limit.
    let k = calls_key;
    for p in &f.procs {
        let (status, body) = authorize(p, &k, &json!({}));
        assert_eq!(status, 429, "{body}");
        assert_eq!(body["limitName"], "per-hour", "{body}");
        assert_eq!(body["scope"], "tenant", "{body}");
        // The usage the dashboard shows is the fleet's, on every instance.
        let usage: Value = Client::new()
            .get(p.url("/api/billing/usage"))
            .bearer_auth(&k)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let hour = usage["limits"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == "per-hour")
            .cloned()
            .unwrap_or(Value::Null);
        assert_eq!(hour["used"].as_f64(), Some(60.0), "{usage}");
        assert_eq!(hour["remaining"].as_f64(), Some(0.0), "{usage}");
    }
    let usage: Value = Client::new()
        .get(f.procs[2].url("/api/billing/usage"))
        .bearer_auth(&user_key)
        .send()
        .unwrap()
        .json()
        .unwrap();
    for user in ["ana", "bo"] {
        let standing = usage["limits"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["subject"] == user)
            .cloned()
            .unwrap_or(Value::Null);
        assert_eq!(standing["used"].as_f64(), Some(17.0), "{user}: {usage}");
    }
}

#[test]
fn across_three_instances_a_dollar_budget_never_overshoots() {
    let f = fleet();
    // LiteLLM #34732: 64 concurrent requests of known price against a
    // $1.00 budget.
    let k = tenant(
        &f,
        "t-spend",
        limit("budget", "tenant", "spendUsd", "month", json!(1.0)),
    );
    let (allowed, answers) = race(&f, &k, 64, &json!({"estimateUsd": 0.05}));
    assert_eq!(allowed, 20, "$1.00 at $0.05 a request");
    // Each instance answers the same: spent, and named.
    for p in &f.procs {
        let (status, body) = authorize(p, &k, &json!({"estimateUsd": 0.05}));
        assert_eq!(status, 429, "{body}");
        assert_eq!(body["code"], "budget_exceeded", "{body}");
        assert_eq!(body["limitName"], "budget", "{body}");
    }
    // Settled for less than reserved ($0.01 each: 4,000 prompt tokens of
    // gpt-4o, reported on the instance that holds the reservation), the
    // rest comes back fleet-wide: $0.80 more at $0.05 is 16 more.
    for (i, a) in &answers {
        let id = a["reservationId"]
            .as_str()
            .expect("a reservation")
            .to_string();
        let r = Client::new()
            .post(f.procs[*i].url("/api/v1/usage"))
            .bearer_auth(&k)
            .json(
                &json!([{"endpoint": "/v1/chat", "calls": 0, "reservationId": id,
                           "model": "gpt-4o", "promptTokens": 4000}]),
            )
            .send()
            .unwrap();
        assert_eq!(r.status(), 202, "{:?}", r.text());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut more = 0;
    while more < 16 {
        assert!(
            Instant::now() < deadline,
            "only {more} of 16 passed after the settlement"
        );
        let (n, _) = race(&f, &k, 64, &json!({"estimateUsd": 0.05}));
        more += n;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(more, 16, "never past $1.00");
}

#[test]
fn across_three_instances_places_in_flight_are_exact_and_come_back() {
    let mut f = fleet();
    let k = tenant(
        &f,
        "t-flight",
        limit("in-flight-6", "tenant", "inFlight", "none", json!(6)),
    );
    let (allowed, answers) = race(&f, &k, 60, &json!({}));
    assert_eq!(allowed, 6);
    for p in &f.procs {
        assert_eq!(authorize(p, &k, &json!({})).0, 429);
    }
    // One place given back on the instance that holds it is free on
    // every other at once.
    let (i, a) = &answers[0];
    let id = a["reservationId"].as_str().unwrap().to_string();
    let r = Client::new()
        .post(f.procs[*i].url("/api/v1/usage"))
        .bearer_auth(&k)
        .json(&json!([{"endpoint": "/v1/chat", "calls": 0, "reservationId": id}]))
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    let other = (*i + 1) % 3;
    let deadline = Instant::now() + Duration::from_secs(5);
    while authorize(&f.procs[other], &k, &json!({})).0 != 200 {
        assert!(Instant::now() < deadline, "the place never came back");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(race(&f, &k, 30, &json!({})).0, 0, "six in flight again");
    // The places a killed instance held come back once it is gone (its
    // heartbeat stops), and not one more.
    let held_by_0 = answers.iter().filter(|(j, _)| *j == 0).count() - usize::from(*i == 0)
        + usize::from(other == 0);
    f.procs[0].signal(9);
    let started = Instant::now();
    let mut freed = 0;
    while started.elapsed() < Duration::from_secs(8) && freed < held_by_0 {
        if authorize(&f.procs[1], &k, &json!({})).0 == 200 {
            freed += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(freed, held_by_0, "the killed instance's places came back");
    assert_eq!(
        authorize(&f.procs[2], &k, &json!({})).0,
        429,
        "and not one more"
    );
    let _ = &f.redis;
}

#[test]
fn across_three_instances_redis_losing_the_counts_hands_out_nothing_twice() {
    let f = fleet();
    clear_of_the_hour();
    let k = tenant(
        &f,
        "t-day",
        limit("per-day", "tenant", "calls", "day", json!(100)),
    );
    assert_eq!(race(&f, &k, 60, &json!({})).0, 60);
    let held = tenant(
        &f,
        "t-held",
        limit("in-flight-5", "tenant", "inFlight", "none", json!(5)),
    );
    assert_eq!(race(&f, &held, 20, &json!({})).0, 5);
    // Redis loses every count; each instance puts its own part back before
    // any decision is made on the new counts.
    assert_eq!(f.redis.cli(&["FLUSHALL"]).trim(), "OK");
    let (more, _) = race(&f, &k, 100, &json!({}));
    assert_eq!(more, 40, "60 of 100 were used before Redis lost them");
    assert_eq!(
        race(&f, &held, 20, &json!({})).0,
        0,
        "five are still in flight"
    );
    for p in &f.procs {
        assert_eq!(authorize(p, &k, &json!({})).0, 429);
    }
}

#[test]
fn with_redis_frozen_a_named_limit_refuses_and_its_give_backs_wait() {
    let f = fleet();
    let k = tenant(
        &f,
        "t-frozen",
        limit("in-flight-3", "tenant", "inFlight", "none", json!(3)),
    );
    let (allowed, answers) = race(&f, &k, 12, &json!({}));
    assert_eq!(allowed, 3);
    f.redis.pause();
    // A decision that meets a shared limit cannot be made: refused, said so.
    let (status, body) = authorize(&f.procs[0], &k, &json!({}));
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "cluster_unavailable", "{body}");
    // A place given back meanwhile waits for Redis, and is not lost.
    let (i, a) = &answers[0];
    let id = a["reservationId"].as_str().unwrap().to_string();
    let r = Client::new()
        .post(f.procs[*i].url("/api/v1/usage"))
        .bearer_auth(&k)
        .json(&json!([{"endpoint": "/v1/chat", "calls": 0, "reservationId": id}]))
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    std::thread::sleep(Duration::from_millis(500));
    f.redis.resume();
    let deadline = Instant::now() + Duration::from_secs(10);
    // (Until the breaker closes again, a decision may still say 503.)
    let mut got = 0;
    while got == 0 {
        assert!(Instant::now() < deadline, "the place never came back");
        got = (0..6)
            .filter(|i| authorize(&f.procs[i % 3], &k, &json!({})).0 == 200)
            .count();
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(got, 1, "exactly the one given back");
    // Every instance, once its breaker has closed again, refuses: full.
    for p in &f.procs {
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            let status = authorize(p, &k, &json!({})).0;
            if status != 503 || Instant::now() > deadline {
                break status;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(status, 429);
    }
}
