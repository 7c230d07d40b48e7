//! Operations through the real server: `/metrics`, request ids, threshold
//! webhooks (with a receiver on 127.0.0.1) and gateway mode (with a fake
//! upstream on 127.0.0.1, streaming included).

mod common;
#[path = "common/fake_http.rs"]
mod fake_http;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use fake_http::FakeHttp;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tollgate::clock::SystemClock;
use tollgate::config::{AlertConfig, ProxyConfig};

/// `name{labels} value` lines of a scrape, by the text before the value.
fn scrape(s: &TestServer) -> (String, std::collections::HashMap<String, f64>) {
    let r = s.http.get(s.url("/metrics")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = r.text().unwrap();
    let mut values = std::collections::HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, value) = line.rsplit_once(' ').unwrap();
        values.insert(name.to_string(), value.parse::<f64>().unwrap());
    }
    (text, values)
}

fn metric(values: &std::collections::HashMap<String, f64>, name: &str) -> f64 {
    *values
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {values:?}"))
}

#[test]
fn metrics_count_decisions_routes_and_persistence() {
    let s = TestServer::start();
    s.plan("tiny", Some(3), None, None);
    let key = s.tenant_with_key("acme", "tiny");
    for _ in 0..5 {
        s.tenant(&key, "POST", "/api/v1/authorize", None);
    }
    s.tenant("tg_wrong", "POST", "/api/v1/authorize", None);
    s.tenant(&key, "POST", "/api/v1/check", None);
    wait_until(|| metric(&scrape(&s).1, "tollgate_records_persisted_total") >= 5.0);

    let (text, m) = scrape(&s);
    for line in text.lines().filter(|l| !l.is_empty()) {
        let name = line
            .trim_start_matches("# HELP ")
            .trim_start_matches("# TYPE ");
        assert!(name.starts_with("tollgate_"), "{line}");
    }
    assert_eq!(
        metric(&m, r#"tollgate_decisions_total{outcome="allowed"}"#),
        3.0
    );
    // 2 refused by authorize, 1 by check (the quota is used up).
    assert_eq!(
        metric(&m, r#"tollgate_decisions_total{outcome="quota_exceeded"}"#),
        3.0
    );
    assert_eq!(
        metric(&m, r#"tollgate_decisions_total{outcome="unauthorized"}"#),
        1.0
    );
    assert_eq!(
        metric(&m, r#"tollgate_decisions_total{outcome="rate_limited"}"#),
        0.0
    );
    assert_eq!(
        metric(
            &m,
            r#"tollgate_http_request_duration_seconds_count{route="/api/v1/authorize"}"#
        ),
        6.0
    );
    assert_eq!(
        metric(
            &m,
            r#"tollgate_http_request_duration_seconds_bucket{route="/api/v1/authorize",le="+Inf"}"#
        ),
        6.0
    );
    assert_eq!(metric(&m, "tollgate_tenants"), 1.0);
    assert_eq!(metric(&m, "tollgate_records_persisted_total"), 5.0);
    assert_eq!(
        metric(
            &m,
            r#"tollgate_records_unpersisted_total{reason="queue_full"}"#
        ),
        0.0
    );
    assert_eq!(metric(&m, "tollgate_queue_depth"), 0.0);
    assert!(metric(&m, "tollgate_flush_duration_seconds_count") >= 1.0);
    assert!(metric(&m, "tollgate_store_size_bytes") > 0.0);
    assert_eq!(metric(&m, "tollgate_store_failing"), 0.0);
    assert!(text.contains(r#"tollgate_webhook_deliveries_total{result="delivered"} 0"#));

    // A record naming an unpriced model is counted by model.
    let r = s.tenant(
        &key,
        "POST",
        "/api/v1/usage",
        Some(json!({"endpoint": "/x", "model": "mystery-1", "promptTokens": 5, "calls": 0})),
    );
    assert!(r.status().is_success(), "{}", r.text().unwrap());
    let m = scrape(&s).1;
    assert_eq!(
        metric(
            &m,
            r#"tollgate_unknown_model_records_total{model="mystery-1"}"#
        ),
        1.0
    );
}

#[test]
fn every_response_carries_a_request_id() {
    let s = TestServer::start();
    let r = s
        .http
        .get(s.url("/healthz"))
        .header("X-Request-Id", "trace-abc_123")
        .send()
        .unwrap();
    assert_eq!(header(&r, "x-request-id").as_deref(), Some("trace-abc_123"));
    // Unusable ids are replaced, also on errors.
    let r = s
        .http
        .get(s.url("/nowhere"))
        .header("X-Request-Id", "bad id with spaces")
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
    let id = header(&r, "x-request-id").unwrap();
    assert_eq!(id.len(), 16);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    let other = header(
        &s.http.get(s.url("/healthz")).send().unwrap(),
        "x-request-id",
    )
    .unwrap();
    assert_ne!(id, other);
}

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn alert(url: &str, secret_env: &str, thresholds: Vec<u32>) -> AlertConfig {
    AlertConfig {
        url: Some(format!("{url}/hooks/usage").parse().unwrap()),
        thresholds,
        secret_env: secret_env.into(),
        retry_initial_ms: 20,
        max_attempts: 8,
        timeout_ms: 2_000,
        anomalies: false,
        email: Vec::new(),
    }
}

/// `email` on an `[[alerts]]` entry (without a webhook): a threshold is
/// mailed through `[smtp]` to every address, retried after the server's
/// 451, once per period (also after a restart), and the request that
/// crossed it does not wait.
#[test]
fn thresholds_are_mailed_once_retried_and_never_delay_a_request() {
    use common::smtp::Smtp;
    let smtp = Smtp::start(1);
    let mut hook = alert("http://127.0.0.1:9", "UNUSED", vec![50]);
    hook.url = None;
    hook.email = vec!["ops@example.com".into(), "Finance <cfo@example.com>".into()];
    let port = smtp.port;
    let tune = move |c: &mut tollgate::config::Config| {
        c.alerts = vec![hook];
        c.smtp.host = "127.0.0.1".into();
        c.smtp.port = port;
        c.smtp.security = tollgate::config::SmtpSecurity::None;
        c.smtp.from = "Tollgate <alerts@example.com>".into();
    };
    let mut s = TestServer::start_with(tune.clone(), Arc::new(SystemClock));
    s.plan("two", Some(2), None, None);
    let key = s.tenant_with_key("mailed", "two");
    let started = std::time::Instant::now();
    assert_eq!(
        s.tenant(&key, "POST", "/api/v1/authorize", None).status(),
        200
    );
    assert!(started.elapsed() < Duration::from_millis(500));
    wait_until(|| smtp.mails().len() == 1);
    assert_eq!(smtp.refused(), 1, "the first try was refused and retried");
    let mail = &smtp.mails()[0];
    assert_eq!(mail.from, "<alerts@example.com>");
    assert_eq!(mail.to, ["<ops@example.com>", "<cfo@example.com>"]);
    assert_eq!(
        mail.header("subject").as_deref(),
        Some("Tollgate: mailed reached 50 % of its monthly calls")
    );
    assert!(
        mail.data
            .contains("Tenant mailed has used 1 of its 2 calls"),
        "{}",
        mail.data
    );
    assert!(
        mail.data.contains(r#""event":"usage.threshold""#),
        "{}",
        mail.data
    );
    wait_until(|| scrape(&s).1[r#"tollgate_email_deliveries_total{result="delivered"}"#] == 1.0);
    assert_eq!(
        scrape(&s).1[r#"tollgate_email_deliveries_total{result="retried"}"#],
        1.0
    );
    s.restart_with(tune, Arc::new(SystemClock));
    s.tenant(&key, "POST", "/api/v1/authorize", None);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(smtp.mails().len(), 1, "once per period, across a restart");
}

#[test]
fn email_alerts_without_an_smtp_server_refuse_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    let mut hook = alert("http://127.0.0.1:9", "UNUSED", vec![80]);
    hook.url = None;
    hook.email = vec!["ops@example.com".into()];
    c.alerts = vec![hook.clone()];
    let err = tollgate::app::RunningServer::start(c, ADMIN, Arc::new(SystemClock))
        .err()
        .expect("must refuse");
    assert!(err.to_string().contains("[smtp] host"), "{err}");
    let mut c = config(dir.path());
    hook.email = vec!["not an address".into()];
    c.alerts = vec![hook];
    c.smtp.host = "127.0.0.1".into();
    c.smtp.from = "alerts@example.com".into();
    let err = tollgate::app::RunningServer::start(c, ADMIN, Arc::new(SystemClock))
        .err()
        .expect("must refuse");
    assert!(err.to_string().contains("not an address"), "{err}");
}

/// Five weeks of a weekly rhythm, then an hour five times as busy: one
/// signed `usage.anomaly` for the tenant and one for the fleet, when the
/// hour is over. The next hour, as busy, continues the episode (nothing
/// more, also after a restart); an error burst the hour after is a new
/// episode.
#[test]
fn an_anomaly_fires_once_per_episode_signed_and_survives_a_restart() {
    use chrono::{Duration as Span, TimeZone, Utc};
    use common::history::{hour_records, report_hours, usual};
    use tollgate::clock::ManualClock;
    std::env::set_var("TG_TEST_HOOK_SECRET_ANOMALY", "hook-secret-anomaly");
    let receiver = FakeHttp::start(|_, _, conn| fake_http::reply(conn, 204, "text/plain", ""));
    let now = Utc.with_ymd_and_hms(2026, 12, 3, 12, 30, 0).unwrap();
    let clock = Arc::new(ManualClock::at(now));
    // The history goes in before the watcher runs, so that it never
    // judges an hour whose records are still on their way.
    let mut s = TestServer::start_with(|c| c.flush.checkpoint_ms = 50, clock.clone());
    s.plan("roomy", None, None, None);
    let key = s.tenant_with_key("rhythmic", "roomy");
    let from = Utc.with_ymd_and_hms(2026, 10, 29, 12, 0, 0).unwrap();
    let spike = Utc.with_ymd_and_hms(2026, 12, 3, 12, 0, 0).unwrap();
    let busy = |t| {
        if t >= spike {
            (usual(t) * 5, 0)
        } else {
            (usual(t), 0)
        }
    };
    let n = report_hours(&s, &key, &clock, from, now, busy);
    let total = |s: &TestServer| common::history::requests_on_record(s, &key);
    wait_until(|| total(&s) == n);
    let mut hook = alert(&receiver.url, "TG_TEST_HOOK_SECRET_ANOMALY", vec![]);
    hook.anomalies = true;
    // And by e-mail, through a mail server on 127.0.0.1.
    let smtp = common::smtp::Smtp::start(0);
    let mut mail = hook.clone();
    mail.url = None;
    mail.email = vec!["ops@example.com".into()];
    let smtp_port = smtp.port;
    let tune = move |c: &mut tollgate::config::Config| {
        c.flush.checkpoint_ms = 50;
        c.alerts = vec![hook.clone(), mail.clone()];
        c.smtp.host = "127.0.0.1".into();
        c.smtp.port = smtp_port;
        c.smtp.security = tollgate::config::SmtpSecurity::None;
        c.smtp.from = "alerts@example.com".into();
    };
    s.restart_with(tune.clone(), clock.clone());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(receiver.count(), 0, "the hour before was as usual");

    // 12:00 is over (and a minute more): its anomaly fires, for the tenant and the fleet.
    clock.set(Utc.with_ymd_and_hms(2026, 12, 3, 13, 1, 30).unwrap());
    wait_until(|| receiver.count() == 2);
    let mut bodies: Vec<Value> = (0..2).map(|i| receiver.request(i).json()).collect();
    bodies.sort_by_key(|b| b["tenantId"].is_null());
    for i in 0..2 {
        let r = receiver.request(i);
        assert_eq!(r.header("tollgate-event"), Some("usage.anomaly"));
        assert_eq!(
            r.header("tollgate-signature"),
            Some(format!("sha256={}", hmac_hex("hook-secret-anomaly", &r.body)).as_str())
        );
    }
    let b = &bodies[0];
    assert_eq!(b["event"], "usage.anomaly");
    assert_eq!(b["tenantId"], "rhythmic");
    assert_eq!(b["metric"], "requests");
    assert_eq!(b["direction"], "up");
    assert_eq!(b["hour"], "2026-12-03T12:00:00.000Z");
    assert_eq!(b["episodeStart"], "2026-12-03T12:00:00.000Z");
    assert_eq!(b["observed"], 150.0, "the half hour reported");
    assert_eq!(b["expected"], 60.0);
    assert!(b["message"].as_str().unwrap().contains("rose"), "{b}");
    assert!(bodies[1]["tenantId"].is_null());
    wait_until(|| smtp.mails().len() == 2);
    let mut subjects: Vec<String> = smtp
        .mails()
        .iter()
        .map(|m| m.header("subject").unwrap())
        .collect();
    subjects.sort();
    assert_eq!(
        subjects,
        [
            "Tollgate: unusual requests (up) for every tenant together",
            "Tollgate: unusual requests (up) for tenant rhythmic"
        ]
    );

    // 13:00, as busy: the same episode, nothing more.
    clock.set(Utc.with_ymd_and_hms(2026, 12, 3, 14, 0, 30).unwrap());
    let thirteen = Utc.with_ymd_and_hms(2026, 12, 3, 13, 0, 0).unwrap();
    let more = hour_records(thirteen, 300, 0, clock_now(&clock));
    let rest: Vec<Value> = hour_records(now, 300, 0, thirteen)
        .into_iter()
        .filter(|r| r["timestamp"].as_str().unwrap() >= "2026-12-03T12:30")
        .collect();
    for batch in [rest, more] {
        let r = s.tenant(&key, "POST", "/api/v1/usage", Some(Value::Array(batch)));
        assert_eq!(r.status(), 202);
    }
    wait_until(|| total(&s) == n + 150 + 300);
    clock.set(Utc.with_ymd_and_hms(2026, 12, 3, 14, 1, 30).unwrap());
    std::thread::sleep(Duration::from_millis(1_500));
    assert_eq!(receiver.count(), 2, "one event per episode");
    // A restart finds the episode begun before it, and fired.
    s.restart_with(tune.clone(), clock.clone());
    std::thread::sleep(Duration::from_millis(1_500));
    assert_eq!(receiver.count(), 2, "not again after a restart");

    // 14:00: usual traffic, half of it failing: a new episode, of errors.
    let fourteen = Utc.with_ymd_and_hms(2026, 12, 3, 14, 0, 0).unwrap();
    clock.set(fourteen + Span::minutes(60));
    let r = s.tenant(
        &key,
        "POST",
        "/api/v1/usage",
        Some(Value::Array(hour_records(
            fourteen,
            60,
            30,
            clock_now(&clock),
        ))),
    );
    assert_eq!(r.status(), 202);
    wait_until(|| total(&s) == n + 450 + 60);
    clock.set(fourteen + Span::minutes(61) + Span::seconds(30));
    wait_until(|| receiver.count() >= 4);
    let last: Vec<Value> = (2..receiver.count())
        .map(|i| receiver.request(i).json())
        .collect();
    assert!(
        last.iter()
            .all(|b| b["metric"] == "errorRate" && b["hour"] == "2026-12-03T14:00:00.000Z"),
        "{last:?}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(receiver.count(), 4);
    wait_until(|| smtp.mails().len() == 4);
}

fn clock_now(c: &tollgate::clock::ManualClock) -> chrono::DateTime<chrono::Utc> {
    use tollgate::clock::Clock;
    c.now()
}

#[test]
fn thresholds_fire_once_per_period_signed_and_survive_a_restart() {
    std::env::set_var("TG_TEST_HOOK_SECRET_A", "hook-secret-a");
    let receiver = FakeHttp::start(|_, _, conn| fake_http::reply(conn, 204, "text/plain", ""));
    let hooks = vec![alert(&receiver.url, "TG_TEST_HOOK_SECRET_A", vec![50, 100])];
    let tune = {
        let hooks = hooks.clone();
        move |c: &mut tollgate::config::Config| c.alerts = hooks
    };
    let mut s = TestServer::start_with(tune.clone(), Arc::new(SystemClock));
    s.plan("four", Some(4), None, None);
    let key = s.tenant_with_key("hooked", "four");

    s.tenant(&key, "POST", "/api/v1/authorize", None);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(receiver.count(), 0, "25 % crosses no threshold");
    s.tenant(&key, "POST", "/api/v1/authorize", None);
    wait_until(|| receiver.count() == 1);
    let first = receiver.request(0);
    assert_eq!(first.method, "POST");
    assert_eq!(first.target, "/hooks/usage");
    assert_eq!(first.header("content-type"), Some("application/json"));
    assert_eq!(
        first.header("tollgate-signature"),
        Some(format!("sha256={}", hmac_hex("hook-secret-a", &first.body)).as_str())
    );
    let body = first.json();
    assert_eq!(body["event"], "usage.threshold");
    assert_eq!(body["tenantId"], "hooked");
    assert_eq!(body["threshold"], 50);
    assert_eq!(body["used"], 2);
    assert_eq!(body["limit"], 4);
    for field in ["periodStart", "periodEnd", "timestamp"] {
        let t = body[field].as_str().unwrap();
        assert!(
            chrono::DateTime::parse_from_rfc3339(t).is_ok(),
            "{field}: {t}"
        );
    }

    for _ in 0..4 {
        s.tenant(&key, "POST", "/api/v1/authorize", None);
    }
    wait_until(|| receiver.count() == 2);
    assert_eq!(receiver.request(1).json()["threshold"], 100);
    assert_eq!(receiver.request(1).json()["used"], 4);
    wait_until(|| scrape(&s).1[r#"tollgate_webhook_deliveries_total{result="delivered"}"#] == 2.0);

    // After a restart the period's thresholds stay fired.
    s.restart_with(tune, Arc::new(SystemClock));
    s.tenant(&key, "POST", "/api/v1/authorize", None);
    s.tenant(&key, "POST", "/api/v1/check", None);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(receiver.count(), 2, "no threshold fires twice in a period");
}

#[test]
fn failed_deliveries_are_retried_with_backoff_and_never_delay_requests() {
    std::env::set_var("TG_TEST_HOOK_SECRET_B", "hook-secret-b");
    // Fails twice, then accepts; each answer takes 300 ms.
    let receiver = FakeHttp::start(|n, _, conn| {
        std::thread::sleep(Duration::from_millis(300));
        let status = if n < 2 { 500 } else { 200 };
        fake_http::reply(conn, status, "application/json", "{}");
    });
    let hooks = vec![alert(&receiver.url, "TG_TEST_HOOK_SECRET_B", vec![100])];
    let s = TestServer::start_with(move |c| c.alerts = hooks, Arc::new(SystemClock));
    s.plan("one", Some(1), None, None);
    let key = s.tenant_with_key("retried", "one");
    let started = std::time::Instant::now();
    assert_eq!(
        s.tenant(&key, "POST", "/api/v1/authorize", None).status(),
        200
    );
    for _ in 0..20 {
        assert_eq!(
            s.tenant(&key, "POST", "/api/v1/authorize", None).status(),
            429
        );
    }
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "requests waited for the webhook: {:?}",
        started.elapsed()
    );
    wait_until(|| receiver.count() == 3);
    let m = scrape(&s).1;
    wait_until(|| scrape(&s).1[r#"tollgate_webhook_deliveries_total{result="delivered"}"#] == 1.0);
    assert_eq!(
        metric(&m, r#"tollgate_webhook_deliveries_total{result="retried"}"#),
        2.0
    );
    // The same body, the same signature, every time.
    let bodies: Vec<_> = (0..3).map(|i| receiver.request(i).body).collect();
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
}

/// Usage a request writes itself (a batch with an Idempotency-Key, issue
/// 40) is watched by the alerts as the flusher's batches are: crossing a
/// threshold fires the webhook once; and a server with alerts still stops.
#[test]
fn a_keyed_batch_crossing_a_threshold_fires_its_webhook() {
    std::env::set_var("TG_TEST_HOOK_SECRET_K", "hook-secret-k");
    let receiver =
        FakeHttp::start(|_, _, conn| fake_http::reply(conn, 200, "application/json", "{}"));
    let hooks = vec![alert(&receiver.url, "TG_TEST_HOOK_SECRET_K", vec![50])];
    let mut s = TestServer::start_with(move |c| c.alerts = hooks, Arc::new(SystemClock));
    s.plan("ten", Some(10), None, None);
    let key = s.tenant_with_key("keyed", "ten");
    let batch = json!([{"endpoint": "/a", "calls": 3}, {"endpoint": "/a", "calls": 3}]);
    for _ in 0..3 {
        let r = s
            .http
            .post(s.url("/api/v1/usage"))
            .bearer_auth(&key)
            .header("Idempotency-Key", "cross-50")
            .json(&batch)
            .send()
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    wait_until(|| receiver.count() == 1);
    let body: Value = serde_json::from_slice(&receiver.request(0).body).unwrap();
    assert_eq!(body["threshold"], 50, "{body}");
    assert_eq!(body["used"], 6, "the batch once: {body}");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(receiver.count(), 1, "once");
    s.stop();
}

#[test]
fn alerts_without_their_secret_refuse_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.alerts = vec![alert(
        "http://127.0.0.1:9",
        "TG_TEST_HOOK_SECRET_UNSET",
        vec![80],
    )];
    let err = tollgate::app::RunningServer::start(c, ADMIN, Arc::new(SystemClock))
        .err()
        .expect("must refuse");
    assert!(
        err.to_string().contains("TG_TEST_HOOK_SECRET_UNSET"),
        "{err}"
    );
}

// ---- gateway mode -------------------------------------------------------

fn proxy(prefix: &str, upstream: &str, auth_env: &str, timeout_ms: u64) -> ProxyConfig {
    ProxyConfig {
        prefix: prefix.into(),
        upstream: upstream.parse().unwrap(),
        upstream_auth_env: auth_env.into(),
        timeout_ms,
        idle_timeout_ms: 60_000,
        cost: 1,
        dialect: Default::default(),
        name: String::new(),
    }
}

fn completion_json() -> String {
    json!({"id": "c1", "model": "gpt-4o-mini", "choices": [{"message": {"content": "hi"}}],
           "usage": {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500}})
    .to_string()
}

#[test]
fn gateway_forwards_with_the_operator_credential_and_records_tokens() {
    std::env::set_var("TG_TEST_UPSTREAM_CRED_G", "sk-operator-g");
    let upstream = FakeHttp::start(|_, req, conn| {
        if req.target.starts_with("/chat/completions") {
            fake_http::reply(conn, 200, "application/json", &completion_json());
        } else {
            fake_http::reply(
                conn,
                404,
                "application/json",
                r#"{"error":"no such route"}"#,
            );
        }
    });
    let proxies = vec![proxy(
        "/v1",
        &upstream.url,
        "TG_TEST_UPSTREAM_CRED_G",
        5_000,
    )];
    let s = TestServer::start_with(move |c| c.proxy = proxies, Arc::new(SystemClock));
    s.plan("gw", Some(3), None, None);
    let key = s.tenant_with_key("gw-tenant", "gw");

    let r = s
        .http
        .post(s.url("/v1/chat/completions?trace=1"))
        .header("X-API-Key", &key)
        .header("X-Custom", "kept")
        .header("API-Version", "2024-10-21")
        .header("x-stainless-retry-count", "1")
        .json(&json!({"model": "gpt-4o-mini", "messages": []}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-ratelimit-remaining").as_deref(), Some("2"));
    assert!(header(&r, "x-ratelimit-limit").is_some());
    assert_eq!(r.json::<Value>().unwrap()["usage"]["total_tokens"], 1500);

    let seen = upstream.request(0);
    assert_eq!(seen.target, "/chat/completions?trace=1");
    assert_eq!(seen.header("authorization"), Some("Bearer sk-operator-g"));
    assert_eq!(
        seen.header("x-api-key"),
        None,
        "the tenant key never goes upstream"
    );
    assert_eq!(seen.header("x-custom"), Some("kept"));
    assert!(!String::from_utf8_lossy(&seen.body).contains(&key));
    assert!(!format!("{:?}", seen.headers).contains(&key));

    // The upstream's own errors pass through and are recorded.
    let r = s.tenant(&key, "GET", "/v1/models/none", None);
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().unwrap()["error"], "no such route");

    // Without a valid key nothing goes upstream.
    let before = upstream.count();
    error_body(
        s.tenant("tg_nope", "POST", "/v1/chat/completions", None),
        401,
        "invalid_api_key",
    );
    let r = s.http.post(s.url("/v1/chat/completions")).send().unwrap();
    error_body(r, 401, "missing_api_key");
    // Over quota: refused by Tollgate, not forwarded.
    s.tenant(
        &key,
        "POST",
        "/v1/chat/completions",
        Some(json!({"model": "gpt-4o-mini"})),
    );
    error_body(
        s.tenant(&key, "POST", "/v1/chat/completions", None),
        429,
        "quota_exceeded",
    );
    assert_eq!(upstream.count(), before + 1);

    wait_until(|| s.report("gw-tenant")["summary"]["totalRequests"] == 4);
    let rep = s.report("gw-tenant");
    assert_eq!(rep["summary"]["totalTokens"], 3000, "{rep}");
    let endpoints = rep["endpoints"].as_array().unwrap();
    let chat = endpoints
        .iter()
        .find(|e| e["endpoint"] == "/chat/completions" && e["method"] == "POST")
        .unwrap_or_else(|| panic!("{endpoints:?}"));
    assert_eq!(chat["requests"], 3, "{chat}");
    assert!(endpoints.iter().any(|e| e["endpoint"] == "/models/none"));
    // One integration (named after its prefix); versions from the
    // API-Version header, else the path's first segment.
    let integrations = rep["integrations"].as_array().unwrap();
    assert_eq!(integrations.len(), 1, "{integrations:?}");
    assert_eq!(integrations[0]["integration"], "v1");
    assert_eq!(integrations[0]["requests"], 4);
    assert_eq!(integrations[0]["errors"], 1);
    assert_eq!(integrations[0]["tokens"], 3000);
    assert!(integrations[0]["p95ResponseTimeMs"].is_number());
    let versions: Vec<(&str, u64)> = rep["apiVersions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["apiVersion"].as_str().unwrap(),
                v["requests"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(versions, [("v1", 3), ("2024-10-21", 1)]);
    let csv = s
        .tenant(&key, "GET", "/api/billing/api-usage/export", None)
        .text()
        .unwrap();
    assert!(
        csv.lines().any(|l| l.contains(",2024-10-21,,v1,true,")),
        "{csv}"
    );
    let models = rep["models"].as_array().unwrap();
    assert!(
        models.iter().any(|m| m["model"] == "gpt-4o-mini"
            && m["promptTokens"] == 2000
            && m["completionTokens"] == 1000),
        "{models:?}"
    );
    assert!(rep["summary"]["estimatedCostUsd"].as_f64().unwrap() > 0.0);
}

#[test]
fn gateway_streams_and_reads_the_final_usage_event() {
    let go = Arc::new(AtomicBool::new(false));
    let waited = go.clone();
    let upstream = FakeHttp::start(move |_, _, conn| {
        fake_http::start_chunked(conn, 200, "text/event-stream");
        fake_http::chunk(
            conn,
            "data: {\"model\":\"gpt-4o\",\"choices\":[{\"delta\":{\"content\":\"Hel\"}}],\"usage\":null}\n\n",
        );
        // Hold the rest until the client has seen the first event.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !waited.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        fake_http::chunk(
            conn,
            "data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n",
        );
        fake_http::chunk(
            conn,
            "data: {\"model\":\"gpt-4o\",\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2,\"total_tokens\":9}}\n\ndata: [DONE]\n\n",
        );
        fake_http::end(conn);
    });
    let proxies = vec![proxy("/llm/", &upstream.url, "", 5_000)];
    let s = TestServer::start_with(move |c| c.proxy = proxies, Arc::new(SystemClock));
    s.plan("stream", Some(100), None, None);
    let key = s.tenant_with_key("streamer", "stream");

    let mut r = s
        .http
        .post(s.url("/llm/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "gpt-4o", "stream": true}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    assert!(header(&r, "x-ratelimit-remaining").is_some());
    let mut first = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&first).contains("\n\n") {
        let n = std::io::Read::read(&mut r, &mut buf).unwrap();
        assert!(n > 0, "stream ended early");
        first.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&first).contains("Hel"));
    // The first event came through while the upstream still held the rest.
    go.store(true, Ordering::SeqCst);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut r, &mut rest).unwrap();
    assert!(rest.contains("[DONE]"), "{rest}");

    wait_until(|| s.report("streamer")["summary"]["totalTokens"] == 9);
    let rep = s.report("streamer");
    assert_eq!(rep["summary"]["totalRequests"], 1);
    assert_eq!(rep["endpoints"][0]["endpoint"], "/chat/completions");
    assert_eq!(rep["models"][0]["model"], "gpt-4o");
}

#[test]
fn gateway_answers_502_and_504_as_json_and_records_them() {
    let slow = FakeHttp::start(|_, _, conn| {
        std::thread::sleep(Duration::from_millis(1500));
        fake_http::reply(conn, 200, "application/json", "{}");
    });
    // A port nothing listens on.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let proxies = vec![
        proxy("/slow", &slow.url, "", 200),
        proxy("/dead", &dead, "", 2_000),
    ];
    let s = TestServer::start_with(move |c| c.proxy = proxies, Arc::new(SystemClock));
    s.plan("gwerr", Some(10), None, None);
    let key = s.tenant_with_key("unlucky", "gwerr");
    let r = s.tenant(&key, "POST", "/slow/x", Some(json!({})));
    assert!(header(&r, "x-ratelimit-limit").is_some());
    error_body(r, 504, "upstream_timeout");
    error_body(
        s.tenant(&key, "GET", "/dead/y", None),
        502,
        "upstream_unavailable",
    );
    wait_until(|| s.report("unlucky")["summary"]["totalRequests"] == 2);
    let rep = s.report("unlucky");
    let statuses = rep["statusCodes"].to_string();
    assert!(
        statuses.contains("502") && statuses.contains("504"),
        "{statuses}"
    );
    // Failed forwards are not charged.
    let u: Value = s
        .tenant(&key, "GET", "/api/billing/usage", None)
        .json()
        .unwrap();
    assert_eq!(u["calls"]["used"], 0, "{u}");
}

// ---- OpenAPI ------------------------------------------------------------

/// The paths `routes()` registers, read from the source: a route added
/// without a `#[utoipa::path]` fails the test below.
fn registered_paths() -> Vec<String> {
    // `resource("...")` in http/, and the dashboard's `("/dashboard/...", route)` pages.
    let literals = |src: &str, opener: &str| -> Vec<String> {
        let mut paths = Vec::new();
        let mut rest = src;
        while let Some(i) = rest.find(opener) {
            rest = &rest[i + opener.len()..];
            let trimmed = rest.trim_start();
            if let Some(lit) = trimmed.strip_prefix('"') {
                let path = &lit[..lit.find('"').unwrap()];
                if path.starts_with('/') && !path.starts_with("/dashboard/assets/") {
                    paths.push(path.to_string());
                }
            }
        }
        paths
    };
    let mut paths = literals(include_str!("../src/http/mod.rs"), "resource(");
    let pages = literals(include_str!("../src/http/dashboard/mod.rs"), "(");
    assert!(
        pages.contains(&"/dashboard/api-usage".to_string()),
        "{pages:?}"
    );
    paths.extend(pages);
    assert!(paths.len() >= 20, "{paths:?}");
    paths
}

#[test]
fn openapi_document_covers_every_route_and_schema() {
    let proxies = vec![proxy("/v1", "http://127.0.0.1:9", "", 1_000)];
    let s = TestServer::start_with(move |c| c.proxy = proxies, Arc::new(SystemClock));
    let r = s.http.get(s.url("/api/openapi.json")).send().unwrap();
    assert_eq!(r.status(), 200);
    let doc: Value = r.json().unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let paths = doc["paths"].as_object().unwrap();
    for path in registered_paths() {
        assert!(paths.contains_key(&path), "{path} is not documented");
    }
    assert!(paths.contains_key("/v1/{path}"), "gateway prefix missing");
    let authorize = &paths["/api/v1/authorize"]["post"];
    assert_eq!(
        authorize["responses"]["429"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ErrorBody"
    );
    assert!(authorize["responses"]["200"]["headers"]["X-RateLimit-Remaining"].is_object());
    assert_eq!(
        paths["/api/admin/plans/{id}"].as_object().unwrap().len(),
        3,
        "get, patch, delete"
    );
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    for name in ["tenantKey", "tenantKeyHeader", "adminToken"] {
        assert!(schemes.contains_key(name), "{name}");
    }
    // Every reference resolves.
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let text = doc.to_string();
    for piece in text.split("\"#/components/schemas/").skip(1) {
        let name = &piece[..piece.find('"').unwrap()];
        assert!(schemas.contains_key(name), "dangling $ref {name}");
    }
    for name in [
        "Report",
        "TenantReport",
        "Plan",
        "RateLimit",
        "IngestRate",
        "Tenant",
        "TenantStatus",
        "ApiKey",
        "UsageInput",
        "Forecast",
        "Recommendation",
    ] {
        assert!(schemas.contains_key(name), "{name}");
    }
    // The API's bodies are named as the domain types they carry.
    for name in ["PlanBody", "TenantBody", "KeyBody", "ForecastView"] {
        assert!(
            !schemas.contains_key(name),
            "{name} leaked into the document"
        );
    }
    // An independent validator takes the whole document (it refused the
    // gateway's `{path}` parameter while it had no schema).
    let file = s.dir.path().join("openapi.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let out = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator", "--schema", "3.1"])
        .arg(&file)
        .output()
        .expect("python3 runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !said.contains("No module named"),
        "needs openapi-spec-validator (pip install openapi-spec-validator; scripts/test does): {said}"
    );
    assert!(
        out.status.success(),
        "the OpenAPI document is invalid: {said}"
    );
}

/// Issue 37, 8f: webhook delivery followed a 307 and sent the signed body
/// to the redirect's target. A redirect is now a failed delivery: the body
/// goes to the configured URL only.
#[test]
fn webhook_delivery_never_follows_a_redirect() {
    std::env::set_var("TG_TEST_HOOK_SECRET_R", "hook-secret-r");
    let elsewhere = FakeHttp::start(|_, _, conn| fake_http::reply(conn, 204, "text/plain", ""));
    let target = format!("{}/stolen", elsewhere.url);
    let receiver = FakeHttp::start(move |_, _, conn| {
        use std::io::Write;
        let _ = write!(
            conn,
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: {target}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    });
    let hooks = vec![alert(&receiver.url, "TG_TEST_HOOK_SECRET_R", vec![50])];
    let s = TestServer::start_with(move |c| c.alerts = hooks, Arc::new(SystemClock));
    s.plan("two", Some(2), None, None);
    let key = s.tenant_with_key("redirected", "two");
    s.tenant(&key, "POST", "/api/v1/authorize", None);
    wait_until(|| receiver.count() >= 1);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        elsewhere.count(),
        0,
        "the signed body went to the redirect's target"
    );
}
