//! `POST /api/chat` against a fake OpenAI-compatible upstream on 127.0.0.1.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use tollgate::clock::SystemClock;

#[derive(Default)]
struct Seen {
    auth: Vec<String>,
    bodies: Vec<Value>,
    paths: Vec<String>,
}

/// Answers each request by `reply(n)`: (status, body, delay).
fn fake_upstream(reply: fn(usize) -> (u16, String, u64)) -> (String, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate() {
            let Ok(mut conn) = conn else { return };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let path = line.split(' ').nth(1).unwrap_or("").to_string();
            let (mut len, mut auth) = (0usize, String::new());
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                if h == "\r\n" || h.is_empty() {
                    break;
                }
                let lower = h.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                if lower.starts_with("authorization:") {
                    auth = h["authorization:".len()..].trim().to_string();
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            {
                let mut s = seen2.lock().unwrap();
                s.auth.push(auth);
                s.paths.push(path);
                s.bodies
                    .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
            }
            let (status, body, delay) = reply(n);
            std::thread::sleep(Duration::from_millis(delay));
            let _ = write!(
                conn,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, seen)
}

fn completion() -> String {
    json!({"id": "c1", "model": "gpt-4.1-mini", "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi from upstream"}}],
           "usage": {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500}})
    .to_string()
}

#[test]
fn chat_goes_upstream_with_the_operator_credential() {
    std::env::set_var("TG_TEST_UPSTREAM_KEY_A", "sk-operator");
    let (url, seen) = fake_upstream(|n| match n {
        0 => (200, completion(), 0),
        _ => (500, "{}".into(), 0),
    });
    let s = TestServer::start_with(
        |c| {
            c.chat.upstream = Some(url.parse().unwrap());
            c.chat.api_key_env = "TG_TEST_UPSTREAM_KEY_A".into();
        },
        Arc::new(SystemClock),
    );
    let key = s.tenant_with_key("chatty", "starter");
    let r = s.tenant(
        &key,
        "POST",
        "/api/chat",
        Some(json!({"message": "Hello", "botId": "b", "model": "gpt-4.1-mini"})),
    );
    assert_eq!(r.status(), 200);
    let body: Value = r.json().unwrap();
    assert_eq!(body["reply"], "Hi from upstream");
    assert_eq!(
        body["usage"],
        json!({"promptTokens": 1000, "completionTokens": 500, "totalTokens": 1500})
    );
    let cost = body["costUsd"].as_f64().unwrap();
    assert!(
        (cost - (1000.0 * 0.4e-6 + 500.0 * 1.6e-6)).abs() < 1e-12,
        "{cost}"
    );
    {
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen.auth[0], "Bearer sk-operator",
            "the tenant's key never goes upstream"
        );
        assert_eq!(seen.paths[0], "/v1/chat/completions");
        assert_eq!(seen.bodies[0]["messages"][0]["content"], "Hello");
        assert_eq!(seen.bodies[0]["model"], "gpt-4.1-mini");
    }
    // An upstream failure is a 502 and does not count against the quota.
    error_body(
        s.tenant(
            &key,
            "POST",
            "/api/chat",
            Some(json!({"message": "Hello", "botId": "b"})),
        ),
        502,
        "upstream_error",
    );
    let usage: Value = s
        .tenant(&key, "GET", "/api/billing/usage", None)
        .json()
        .unwrap();
    assert_eq!(usage["calls"]["used"], 1);
    assert_eq!(usage["tokens"]["used"], 1500);
}

#[test]
fn a_slow_upstream_times_out_with_504() {
    let (url, _) = fake_upstream(|_| (200, completion(), 3_000));
    let s = TestServer::start_with(
        |c| {
            c.chat.upstream = Some(url.parse().unwrap());
            c.chat.timeout_ms = 300;
        },
        Arc::new(SystemClock),
    );
    let key = s.tenant_with_key("slow", "starter");
    error_body(
        s.tenant(
            &key,
            "POST",
            "/api/chat",
            Some(json!({"message": "Hello", "botId": "b"})),
        ),
        504,
        "upstream_timeout",
    );
    let health: Value = s.health();
    assert_eq!(health["status"], "ok");
}

/// Regression (hostile tenant, finding 7): `prompt + completion` was added
/// unchecked (2^63 + 2^63 answered `totalTokens: 0` and cost 1.15e14), and
/// `u64::MAX` pinned the month's counter at 2^48 - 1 (the tenant locked
/// out) and billed $1.4e13.
#[test]
fn absurd_upstream_token_counts_are_capped_not_overflowed() {
    let (url, _) = fake_upstream(|n| {
        let usage = match n {
            0 => json!({"prompt_tokens": 1u64 << 63, "completion_tokens": 1u64 << 63}),
            _ => json!({"total_tokens": u64::MAX}),
        };
        let body =
            json!({"model": "gpt-4o", "choices": [{"message": {"content": "x"}}], "usage": usage});
        (200, body.to_string(), 0)
    });
    let s = TestServer::start_with(
        |c| c.chat.upstream = Some(url.parse().unwrap()),
        Arc::new(SystemClock),
    );
    s.plan("tokens", None, Some(1_000_000_000), None);
    let key = s.tenant_with_key("inflated", "tokens");
    let chat = || -> Value {
        let r = s.tenant(
            &key,
            "POST",
            "/api/chat",
            Some(json!({"message": "hi", "botId": "b", "model": "gpt-4o"})),
        );
        assert_eq!(r.status(), 200);
        r.json().unwrap()
    };
    let cap = tollgate::model::MAX_UPSTREAM_TOKENS;
    let first = chat();
    assert_eq!(first["usage"]["totalTokens"], 2 * cap, "{first}");
    let cost = first["costUsd"].as_f64().unwrap();
    assert!(cost > 0.0 && cost < 200.0, "{cost}");
    let second = chat();
    assert_eq!(second["usage"]["totalTokens"], cap, "{second}");
    assert!(
        second["costUsd"].as_f64().unwrap() > 0.0,
        "a total alone is priced"
    );
    let usage: Value = s
        .tenant(&key, "GET", "/api/billing/usage", None)
        .json()
        .unwrap();
    assert_eq!(usage["tokens"]["used"], 3 * cap);
    // Not locked out for the month.
    assert_eq!(
        s.tenant(&key, "POST", "/api/v1/authorize", None).status(),
        200
    );
}

/// Regression (seams review): a failed upstream call gave back its monthly
/// call but kept its burst unit, so on a plan of one request a minute the
/// retry after a 502 was rate-limited. A grant's refund gives back both.
#[test]
fn a_failed_upstream_call_gives_back_its_burst_unit_too() {
    let (url, _) = fake_upstream(|n| match n {
        0 => (500, "{}".into(), 0),
        _ => (200, completion(), 0),
    });
    let s = TestServer::start_with(
        |c| c.chat.upstream = Some(url.parse().unwrap()),
        Arc::new(SystemClock),
    );
    s.plan(
        "slow-burst",
        Some(10),
        None,
        Some(json!({"requests": 1, "perSeconds": 60, "burst": 1})),
    );
    let key = s.tenant_with_key("retrier", "slow-burst");
    let chat = || {
        s.tenant(
            &key,
            "POST",
            "/api/chat",
            Some(json!({"message": "hi", "botId": "b"})),
        )
    };
    assert_eq!(chat().status(), 502);
    let retry = chat();
    assert_eq!(retry.status(), 200, "{}", retry.text().unwrap());
    let usage: Value = s
        .tenant(&key, "GET", "/api/billing/usage", None)
        .json()
        .unwrap();
    assert_eq!(usage["calls"]["used"], 1, "the failed call was not charged");
}
