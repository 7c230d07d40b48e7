//! Tollgate as the auth service of real edge proxies - nginx
//! (`auth_request`), Caddy (`forward_auth`) and HAProxy (a Lua action) from
//! Debian, each started on loopback in front of a small upstream with the
//! recipe in docs/integrations/ exactly as it is there. For each: an
//! allowed request reaches the upstream without the tenant's key (and with
//! the tenant named), an unknown key gets 401, a tenant over its quota gets
//! 429 with `Retry-After` and the JSON error, and the requests are in the
//! tenant's analytics under the original path. `scripts/test` installs the
//! proxies; a missing one fails the test.

mod common;
#[path = "common/fake_http.rs"]
mod fake_http;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{wait_until, TestServer};
use fake_http::FakeHttp;
use serde_json::Value;

struct Proxy {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
    log: PathBuf,
}

impl Drop for Proxy {
    /// SIGTERM first: nginx's master then stops its workers (a SIGKILL
    /// left them running, orphaned, after the test).
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// The recipe `name` from docs/integrations/, its placeholders filled.
fn recipe(name: &str, fill: &[(&str, &str)]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/integrations")
        .join(name);
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (k, v) in fill {
        text = text.replace(&format!("{{{{{k}}}}}"), v);
    }
    assert!(!text.contains("{{"), "{name}: a placeholder is left");
    text
}

fn program(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return p;
        }
    }
    panic!("{name} is not installed: run scripts/test, which installs nginx, caddy and haproxy");
}

/// Starts `cmd` (a proxy listening on `addr`) and waits until it accepts.
fn start(mut cmd: Command, addr: String, dir: tempfile::TempDir) -> Proxy {
    let log = dir.path().join("proxy.log");
    let out = std::fs::File::create(&log).unwrap();
    cmd.stdout(out.try_clone().unwrap()).stderr(out);
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(&addr).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "the proxy exited ({status}): {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "the proxy never listened: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Proxy {
        child,
        addr,
        dir,
        log,
    }
}

fn nginx(tollgate: &str, upstream: &str) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let d = dir.path().to_str().unwrap().to_string();
    let conf = recipe(
        "nginx.conf",
        &[
            ("LISTEN", &addr),
            ("TOLLGATE", tollgate),
            ("UPSTREAM", upstream),
            ("DIR", &d),
        ],
    );
    std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
    let mut cmd = Command::new(program("nginx"));
    cmd.args(["-p", &d, "-e", &format!("{d}/error.log"), "-c"])
        .arg(dir.path().join("nginx.conf"));
    start(cmd, addr, dir)
}

fn caddy(tollgate: &str, upstream: &str) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let conf = recipe(
        "Caddyfile",
        &[
            ("LISTEN", &addr),
            ("TOLLGATE", tollgate),
            ("UPSTREAM", upstream),
        ],
    );
    std::fs::write(dir.path().join("Caddyfile"), conf).unwrap();
    let mut cmd = Command::new(program("caddy"));
    cmd.args(["run", "--adapter", "caddyfile", "--config"])
        .arg(dir.path().join("Caddyfile"))
        .env("HOME", dir.path())
        .env("XDG_DATA_HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path());
    start(cmd, addr, dir)
}

fn haproxy(tollgate: &str, upstream: &str) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let d = dir.path().to_str().unwrap().to_string();
    std::fs::write(
        dir.path().join("tollgate.lua"),
        recipe("tollgate.lua", &[("TOLLGATE", tollgate)]),
    )
    .unwrap();
    let conf = recipe(
        "haproxy.cfg",
        &[("LISTEN", &addr), ("UPSTREAM", upstream), ("DIR", &d)],
    );
    std::fs::write(dir.path().join("haproxy.cfg"), conf).unwrap();
    let mut cmd = Command::new(program("haproxy"));
    cmd.args(["-db", "-f"]).arg(dir.path().join("haproxy.cfg"));
    start(cmd, addr, dir)
}

/// What every proxy must do with Tollgate behind it.
fn behaves(make: fn(&str, &str) -> Proxy, client_sees_limits: bool) {
    let s = TestServer::start();
    s.plan("edge-small", Some(3), None, None);
    let key = s.tenant_with_key("edge", "edge-small");
    let upstream = FakeHttp::start(|_, _, conn| fake_http::reply(conn, 200, "text/plain", "hello"));
    let tollgate = s.url("").trim_start_matches("http://").to_string();
    let up = upstream.url.trim_start_matches("http://").to_string();
    let proxy = make(&tollgate, &up);
    let http = reqwest::blocking::Client::new();
    let url = |p: &str| format!("http://{}{p}", proxy.addr);
    let logs = || {
        std::fs::read_to_string(&proxy.log).unwrap_or_default()
            + &std::fs::read_to_string(proxy.dir.path().join("error.log")).unwrap_or_default()
    };

    // Allowed: the upstream answers, without the key, told the tenant.
    let r = http
        .get(url("/v1/things?page=2"))
        .bearer_auth(&key)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", logs());
    if client_sees_limits {
        assert_eq!(
            r.headers()["x-ratelimit-remaining"],
            "2",
            "{:?}",
            r.headers()
        );
        assert!(r.headers().contains_key("ratelimit"));
    }
    assert_eq!(r.text().unwrap(), "hello");
    assert_eq!(upstream.count(), 1);
    let seen = upstream.request(0);
    assert_eq!(seen.target, "/v1/things?page=2");
    assert_eq!(seen.header("authorization"), None, "the key was stripped");
    assert_eq!(seen.header("x-tollgate-tenant"), Some("edge"));

    // An unknown key never reaches the upstream.
    let r = http
        .get(url("/v1/things"))
        .bearer_auth("tg_unknown")
        .send()
        .unwrap();
    assert_eq!(r.status(), 401, "{}", logs());
    let body: Value = r.json().unwrap_or(Value::Null);
    assert_eq!(body["status"], 401, "{body}");
    let r = http.get(url("/v1/things")).send().unwrap();
    assert_eq!(r.status(), 401);

    // A client cannot steer what is recorded or charged (issue 37,
    // finding 5): its own X-Forwarded-*/X-Original-* headers name another
    // path and method, and X-Tollgate-Cost asks for 1,000 calls.
    let r = http
        .delete(url("/real/path"))
        .bearer_auth(&key)
        .header("X-Forwarded-Uri", "/cheap/spoofed")
        .header("X-Forwarded-Method", "HEAD")
        .header("X-Original-URI", "/cheap/spoofed")
        .header("X-Original-Method", "HEAD")
        .header("X-Tollgate-Cost", "1000")
        .header("X-Forwarded-For", "203.0.113.9")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", logs());
    let used = s
        .tenant(&key, "GET", "/api/billing/usage", None)
        .json::<Value>()
        .unwrap();
    assert_eq!(used["calls"]["used"], 2, "charged one call: {used}");
    // Over the quota: 429, Retry-After, the JSON error.
    let r = http
        .post(url("/v1/things"))
        .header("X-API-Key", &key)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200, "{}", logs());
    let r = http
        .get(url("/v1/things"))
        .bearer_auth(&key)
        .send()
        .unwrap();
    assert_eq!(r.status(), 429, "{}", logs());
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 0);
    let body: Value = r.json().unwrap();
    assert_eq!(body["code"], "quota_exceeded", "{body}");
    assert_eq!(
        upstream.count(),
        3,
        "the refused request never reached the upstream"
    );

    // The analytics have them, under the original path and method.
    wait_until(|| s.report("edge")["summary"]["totalRequests"] == 4);
    let report = s.report("edge");
    let endpoints = report["endpoints"].to_string();
    assert!(endpoints.contains("/v1/things"), "{endpoints}");
    assert!(endpoints.contains("POST"), "{endpoints}");
    assert!(endpoints.contains("/real/path"), "{endpoints}");
    assert!(endpoints.contains("DELETE"), "{endpoints}");
    assert!(
        !endpoints.contains("spoofed"),
        "the client chose the path: {endpoints}"
    );
    assert!(
        !endpoints.contains("HEAD"),
        "the client chose the method: {endpoints}"
    );
}

#[test]
fn nginx_auth_request() {
    behaves(nginx, true);
}

#[test]
fn caddy_forward_auth() {
    behaves(caddy, false);
}

#[test]
fn haproxy_lua_auth() {
    behaves(haproxy, true);
}
