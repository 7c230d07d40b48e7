//! Helpers shared by the integration tests: a real server on 127.0.0.1:0
//! with a temporary data directory, and a small blocking client.
#![allow(dead_code)]

pub mod history;
pub mod mmdb;
pub mod smtp;

use std::sync::Arc;

use reqwest::blocking::{Client, Response};
use serde_json::{json, Value};
use tollgate::app::RunningServer;
use tollgate::clock::{Clock, SystemClock};
use tollgate::config::Config;

pub const ADMIN: &str = "test-admin-token-0123456789";

pub struct TestServer {
    pub server: Option<RunningServer>,
    pub dir: tempfile::TempDir,
    pub http: Client,
}

pub fn config(dir: &std::path::Path) -> Config {
    let mut c = Config {
        data_dir: dir.to_path_buf(),
        workers: 2,
        ..Default::default()
    };
    c.flush.interval_ms = 20;
    c
}

impl TestServer {
    pub fn start() -> TestServer {
        TestServer::start_with(|_| {}, Arc::new(SystemClock))
    }

    pub fn start_with(tune: impl FnOnce(&mut Config), clock: Arc<dyn Clock>) -> TestServer {
        TestServer::start_on(tempfile::tempdir().unwrap(), tune, clock)
    }

    /// Starts on `dir`, which the caller may have prepared (a tmpfs mounted
    /// on it); the server owns it from then on.
    pub fn start_on(
        dir: tempfile::TempDir,
        tune: impl FnOnce(&mut Config),
        clock: Arc<dyn Clock>,
    ) -> TestServer {
        let mut c = config(dir.path());
        tune(&mut c);
        let server = RunningServer::start(c, ADMIN, clock).unwrap();
        TestServer {
            server: Some(server),
            dir,
            http: Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .unwrap(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        self.server.as_ref().unwrap().url(path)
    }

    pub fn admin(&self, method: &str, path: &str, body: Option<Value>) -> Response {
        let mut req = self
            .http
            .request(method.parse().unwrap(), self.url(path))
            .bearer_auth(ADMIN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().unwrap()
    }

    pub fn tenant(&self, key: &str, method: &str, path: &str, body: Option<Value>) -> Response {
        let mut req = self
            .http
            .request(method.parse().unwrap(), self.url(path))
            .bearer_auth(key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().unwrap()
    }

    /// Creates a plan and returns its id.
    pub fn plan(
        &self,
        id: &str,
        calls: Option<u64>,
        tokens: Option<u64>,
        rate: Option<Value>,
    ) -> String {
        let r = self.admin(
            "POST",
            "/api/admin/plans",
            Some(
                json!({"id": id, "name": id, "monthlyCalls": calls, "monthlyTokens": tokens,
                        "rateLimit": rate, "priceUsdMonthly": 10.0}),
            ),
        );
        assert_eq!(r.status(), 201, "{}", r.text().unwrap());
        id.to_string()
    }

    /// Creates a tenant on `plan` and returns a fresh key for it.
    pub fn tenant_with_key(&self, id: &str, plan: &str) -> String {
        let r = self.admin(
            "POST",
            "/api/admin/tenants",
            Some(json!({"id": id, "name": format!("Tenant {id}"), "planId": plan})),
        );
        assert_eq!(r.status(), 201, "{}", r.text().unwrap());
        self.key(id)
    }

    pub fn key(&self, tenant: &str) -> String {
        let r = self.admin(
            "POST",
            &format!("/api/admin/tenants/{tenant}/keys"),
            Some(json!({"name": "test"})),
        );
        assert_eq!(r.status(), 201);
        r.json::<Value>().unwrap()["key"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Every record `key`'s tenant has, exported as NDJSON (one line each).
    pub fn export(&self, key: &str) -> String {
        let r = self.tenant(
            key,
            "GET",
            "/api/billing/api-usage/export?format=ndjson&from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z",
            None,
        );
        assert_eq!(r.status(), 200);
        r.text().unwrap()
    }

    /// The admin view of one tenant's usage report for this month.
    pub fn report(&self, tenant: &str) -> Value {
        self.admin(
            "GET",
            &format!("/api/admin/tenants/{tenant}/api-usage"),
            None,
        )
        .json()
        .unwrap()
    }

    /// `GET /healthz` as JSON.
    pub fn health(&self) -> Value {
        self.http
            .get(self.url("/healthz"))
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    /// `GET /metrics` as text.
    pub fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap()
    }

    /// Stops the server and starts a new one on the same data directory.
    /// sled lets go of its file lock a moment after the last handle goes
    /// (its own threads finish first), so a start that finds the directory
    /// still in use tries again for a few seconds.
    pub fn restart_with(&mut self, tune: impl FnOnce(&mut Config), clock: Arc<dyn Clock>) {
        self.stop();
        let mut c = config(self.dir.path());
        tune(&mut c);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match RunningServer::start(c.clone(), ADMIN, clock.clone()) {
                Ok(server) => {
                    self.server = Some(server);
                    return;
                }
                Err(e)
                    if e.to_string().contains("uses the data directory")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => panic!("restart: {e}"),
            }
        }
    }

    pub fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop().unwrap();
        }
    }
}

impl Drop for TestServer {
    /// Stops the server; after a failed assertion, without a second panic
    /// (which would abort and hide the first).
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(s) = self.server.take() {
                let _ = s.stop();
            }
        } else {
            self.stop();
        }
    }
}

/// Asserts the SPEC §5 error body and returns it.
pub fn error_body(r: Response, status: u16, code: &str) -> Value {
    assert_eq!(r.status().as_u16(), status);
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    assert_eq!(ct.as_deref(), Some("application/json"));
    let body: Value = r.json().unwrap();
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    body
}

pub fn header(r: &Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

/// Polls `cond` for up to 10 s (what the server does asynchronously, such as
/// flushing records, takes a flush interval or two).
pub fn wait_until(mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "condition not met in 10 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Sends `request` (a whole HTTP/1.1 request, as bytes on the wire: dot
/// segments, bad bytes and all, which a client library would refuse or
/// normalise away) to the server of `url` and returns the response's status
/// and text (head and body).
pub fn raw_http(url: &str, request: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let addr = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    conn.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = conn.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// A gateway route's SDK check (`tests/<sdk>/sdk_check.py`, the official
/// Python package of a provider) run against `s` under `prefix`: a plan of
/// 1,000 calls for a live key, a tenant whose one call is spent, the
/// script given the base URL and both keys. Fails unless it prints
/// `sdk ok` (`scripts/test` installs the package). The live key.
pub fn run_sdk_check(s: &TestServer, sdk: &str, prefix: &str, tokens: Option<u64>) -> String {
    s.plan("sdk", Some(1000), tokens, None);
    s.plan("one", Some(1), None, None);
    let key = s.tenant_with_key("sdk", "sdk");
    let spent = s.tenant_with_key("spent", "one");
    let r = s.tenant(&spent, "POST", "/api/v1/authorize", None);
    assert_eq!(r.status(), 200);
    let script = format!("{}/tests/{sdk}/sdk_check.py", env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(s.url(prefix))
        .arg(&key)
        .arg(&spent)
        .output()
        .expect("python3");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("sdk ok"),
        "the {sdk} SDK check failed (scripts/test installs the {sdk} package): {text}"
    );
    // The gateway's own answers are Tollgate's shape elsewhere.
    let body: Value = s
        .tenant(&spent, "POST", "/api/v1/authorize", None)
        .json()
        .unwrap();
    assert_eq!(body["code"], "quota_exceeded", "{body}");
    key
}

/// Tenant `shop` on plan `dash` (50 calls a month, `monthly_tokens`), near
/// its quota: 40 authorizations of end user ann (under a per-user limit
/// of 100 a day) and 6 reported chats of bob through bot helper, two of
/// them failed, 1,500 tokens each - once all 46 are stored. Its key.
pub fn seed_shop(s: &TestServer, monthly_tokens: Option<u64>) -> String {
    s.plan("dash", Some(50), monthly_tokens, None);
    let key = s.tenant_with_key("shop", "dash");
    let per_user = json!({"limits": [{"name": "per-user", "scope": "user", "measure": "calls",
                                       "window": "day", "amount": 100}]});
    assert_eq!(
        s.admin("PUT", "/api/admin/tenants/shop/limits", Some(per_user))
            .status(),
        200
    );
    for _ in 0..40 {
        assert_eq!(
            s.tenant(
                &key,
                "POST",
                "/api/v1/authorize",
                Some(json!({"endpoint": "/v1/search", "userId": "ann"}))
            )
            .status(),
            200
        );
    }
    let records: Vec<Value> = (0..6)
        .map(|i| json!({"endpoint": "/api/chat", "statusCode": if i < 2 { 500 } else { 200 }, "responseTime": 100 + i * 10,
                        "promptTokens": 1000, "completionTokens": 500, "model": "gpt-4o", "userId": "bob", "botId": "helper"}))
        .collect();
    assert_eq!(
        s.tenant(&key, "POST", "/api/v1/usage", Some(Value::Array(records)))
            .status(),
        202
    );
    wait_until(|| {
        s.tenant(&key, "GET", "/api/billing/api-usage?range=week", None)
            .json::<Value>()
            .unwrap()["summary"]["totalRequests"]
            == 46
    });
    key
}
