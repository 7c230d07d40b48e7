//! A hostile tenant against gateway mode (RELIABILITY.md, "Hostile
//! tenant"): each test replays one attack through a real server in front
//! of a fake upstream on 127.0.0.1.

mod common;
#[path = "common/fake_http.rs"]
mod fake_http;

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use fake_http::FakeHttp;
use serde_json::{json, Value};
use tollgate::clock::SystemClock;
use tollgate::config::ProxyConfig;

fn proxy(prefix: &str, upstream: &str, idle_timeout_ms: u64) -> ProxyConfig {
    ProxyConfig {
        prefix: prefix.into(),
        upstream: upstream.parse().unwrap(),
        upstream_auth_env: "TG_TEST_HOSTILE_CRED".into(),
        timeout_ms: 5_000,
        idle_timeout_ms,
        cost: 1,
        dialect: Default::default(),
        name: String::new(),
    }
}

fn gateway(upstream: &str, idle_timeout_ms: u64) -> TestServer {
    std::env::set_var("TG_TEST_HOSTILE_CRED", "sk-operator-secret");
    let proxies = vec![proxy("/v1", upstream, idle_timeout_ms)];
    TestServer::start_with(move |c| c.proxy = proxies, Arc::new(SystemClock))
}

/// Finding 2 (HIGH): the upstream URL was `upstream + raw tail`, and the
/// client library resolved dot segments, so `/v1/../admin` reached the
/// upstream's `/admin` with the operator's credential. 8 of 20 variants
/// escaped, and the absolute form as well.
#[test]
fn gateway_paths_never_leave_the_upstream_prefix() {
    let upstream = FakeHttp::start(|_, _, conn| {
        fake_http::reply(conn, 200, "application/json", "{}");
    });
    let s = gateway(&format!("{}/base", upstream.url), 60_000);
    s.plan("gw", None, None, None);
    let key = s.tenant_with_key("prober", "gw");
    let host = s.url("").trim_start_matches("http://").to_string();
    for target in [
        "/v1/../admin",
        "/v1/../../admin",
        "/v1/%2e%2e/admin",
        "/v1/%2E%2E/%2e%2e/admin",
        "/v1/.%2e/admin",
        "/v1/./../admin",
        "/v1/x/../../secret",
        "/v1/..\\admin",
        "/v1/..%5cadmin",
        "/v1/%2e%2e%2fadmin",
        "/v1/%252e%252e/admin",
        "/v1/..",
        "/v1/.",
        "http://evil.example/v1/../admin",
        "http://evil.example/v1/%2e%2e/admin",
    ] {
        let (status, text) = raw_http(
            &s.url(""),
            format!(
                "GET {target} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        );
        assert_eq!(status, 400, "{target}: {text}");
        assert_eq!(upstream.count(), 0, "{target} reached the upstream");
    }
    // Each refusal is JSON and names the reason.
    let (_, text) = raw_http(
        &s.url(""),
        format!("GET /v1/../admin HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert!(text.contains("\"code\":\"invalid_path\""), "{text}");
    // Nothing refused was charged.
    let usage: Value = s
        .tenant(&key, "GET", "/api/billing/usage", None)
        .json()
        .unwrap();
    assert_eq!(usage["calls"]["used"], 0);
    // An ordinary path still goes through, under the base.
    let r = s.tenant(&key, "GET", "/v1/models/a.b", None);
    assert_eq!(r.status(), 200);
    assert_eq!(upstream.request(0).target, "/base/models/a.b");
}

/// Finding 8: headers named in `Connection` passed through both ways; the
/// client's `X-Forwarded-For`/`Forwarded`/`X-Real-IP` went upstream as they
/// were and none was added; `OpenAI-Organization`/`OpenAI-Project` chose the
/// operator's account; `Upgrade: websocket` hung.
#[test]
fn gateway_headers_steer_nothing_of_the_operator() {
    let upstream = FakeHttp::start(|_, _, conn| {
        let body = "{}";
        let _ = write!(
            conn,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close, X-Up-Secret\r\nX-Up-Secret: internal\r\nX-Kept: yes\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
    });
    let s = gateway(&upstream.url, 60_000);
    s.plan("gw", None, None, None);
    let key = s.tenant_with_key("steerer", "gw");
    let r = s
        .http
        .get(s.url("/v1/models"))
        .bearer_auth(&key)
        .header("Connection", "X-Secret")
        .header("X-Secret", "hop")
        .header("X-Forwarded-For", "6.6.6.6")
        .header("Forwarded", "for=6.6.6.6")
        .header("X-Real-IP", "6.6.6.6")
        .header("OpenAI-Organization", "org-someone-else")
        .header("OpenAI-Project", "proj-someone-else")
        .header("X-Custom", "kept")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-up-secret"), None);
    assert_eq!(header(&r, "x-kept").as_deref(), Some("yes"));
    let seen = upstream.request(0);
    for gone in [
        "x-secret",
        "forwarded",
        "x-real-ip",
        "openai-organization",
        "openai-project",
    ] {
        assert_eq!(seen.header(gone), None, "{gone} reached the upstream");
    }
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-custom"), Some("kept"));
    assert_eq!(
        seen.header("authorization"),
        Some("Bearer sk-operator-secret")
    );

    let started = Instant::now();
    let host = s.url("").trim_start_matches("http://").to_string();
    let (status, text) = raw_http(
        &s.url(""),
        format!(
            "GET /v1/socket HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(status, 501, "{text}");
    assert!(text.contains("upgrade_not_supported"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(
        upstream.count(),
        1,
        "the upgrade never reached the upstream"
    );
}

/// Finding 5 (MEDIUM): JSON answers over 4 MiB and event streams without a
/// final `usage` event recorded 0 tokens, so a 1,000-token plan let through
/// 3 x 2,000 tokens. Finding 7: an answer with only `total_tokens` cost $0.
#[test]
fn gateway_counts_the_tokens_of_every_answer() {
    let big = format!(
        r#"{{"id":"c","model":"gpt-4o","choices":[{{"message":{{"content":"{}"}}}}],"usage":{{"prompt_tokens":1000,"completion_tokens":1000,"total_tokens":2000}}}}"#,
        "x".repeat(5 << 20)
    );
    let upstream = FakeHttp::start(move |_, req, conn| {
        let asked = req.json()["stream_options"]["include_usage"] == true;
        if req.target.ends_with("/big") {
            fake_http::reply(conn, 200, "application/json", &big);
        } else if req.target.ends_with("/total") {
            fake_http::reply(
                conn,
                200,
                "application/json",
                r#"{"model":"gpt-4o","usage":{"total_tokens":1000}}"#,
            );
        } else if req.target.ends_with("/obedient") && asked {
            // An upstream that honours include_usage.
            fake_http::start_chunked(conn, 200, "text/event-stream");
            fake_http::chunk(
                conn,
                "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n",
            );
            fake_http::chunk(conn, "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":30,\"completion_tokens\":40}}\n\ndata: [DONE]\n\n");
            fake_http::end(conn);
        } else {
            // An upstream that never reports usage in a stream.
            fake_http::start_chunked(conn, 200, "text/event-stream");
            fake_http::chunk(
                conn,
                "data: {\"choices\":[{\"delta\":{\"content\":\"Hello, world!\"}}]}\n\n",
            );
            fake_http::chunk(conn, "data: [DONE]\n\n");
            fake_http::end(conn);
        }
    });
    let s = gateway(&upstream.url, 60_000);
    s.plan("tok", None, Some(1_000), None);
    let key = s.tenant_with_key("streamer", "tok");

    let r = s
        .tenant(&key, "POST", "/v1/big", Some(json!({"model": "gpt-4o"})))
        .bytes()
        .unwrap();
    assert_eq!(r.len(), big_len());
    wait_until(|| s.report("streamer")["summary"]["totalTokens"] == 2_000);
    // The token quota is spent: the next call is refused.
    error_body(
        s.tenant(&key, "POST", "/v1/big", Some(json!({"model": "gpt-4o"}))),
        429,
        "token_quota_exceeded",
    );

    let s2key = {
        s.plan("open", None, None, None);
        s.tenant_with_key("other", "open")
    };
    // A stream that leaves out stream_options is made to ask for its usage.
    let text = s
        .tenant(
            &s2key,
            "POST",
            "/v1/obedient",
            Some(json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi"}]})),
        )
        .text()
        .unwrap();
    assert!(text.contains("[DONE]"));
    let sent = upstream.requests.lock().unwrap().last().unwrap().json();
    assert_eq!(sent["stream_options"]["include_usage"], true);
    wait_until(|| s.report("other")["summary"]["totalTokens"] == 70);
    // One that reports nothing at all is estimated, and says so.
    s.tenant(
        &s2key,
        "POST",
        "/v1/silent",
        Some(json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "Hello, world!"}]})),
    )
    .text()
    .unwrap();
    wait_until(|| s.report("other")["summary"]["totalRequests"] == 2);
    let export = s.export(&s2key);
    let silent: Value = export
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|r| r["endpoint"] == "/silent")
        .unwrap();
    assert!(silent["tokensUsed"].as_u64().unwrap() > 0, "{silent}");
    assert_eq!(
        silent["metadata"]["tokens"], "estimated (no usage in the answer)",
        "{silent}"
    );
    // A total without a split is priced (as prompt tokens), not free.
    s.tenant(
        &s2key,
        "POST",
        "/v1/total",
        Some(json!({"model": "gpt-4o"})),
    )
    .text()
    .unwrap();
    wait_until(|| s.report("other")["summary"]["totalRequests"] == 3);
    let rep = s.report("other");
    let gpt = rep["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == "gpt-4o")
        .unwrap()
        .clone();
    assert!(
        gpt["costUsd"].as_f64().unwrap() >= 1_000.0 * 2.5e-6,
        "{gpt}"
    );
}

fn big_len() -> usize {
    format!(
        r#"{{"id":"c","model":"gpt-4o","choices":[{{"message":{{"content":"{}"}}}}],"usage":{{"prompt_tokens":1000,"completion_tokens":1000,"total_tokens":2000}}}}"#,
        "x".repeat(5 << 20)
    )
    .len()
}

/// Finding 3: the gateway kept a client connection open for as long as an
/// upstream stalled after its headers.
#[test]
fn an_upstream_that_stalls_mid_answer_is_cut_off() {
    let upstream = FakeHttp::start(|_, _, conn| {
        fake_http::start_chunked(conn, 200, "text/event-stream");
        fake_http::chunk(
            conn,
            "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n",
        );
        std::thread::sleep(Duration::from_secs(20));
    });
    let s = gateway(&upstream.url, 300);
    s.plan("gw", None, None, None);
    let key = s.tenant_with_key("waiter", "gw");
    let started = Instant::now();
    let mut r = s
        .http
        .post(s.url("/v1/chat"))
        .bearer_auth(&key)
        .json(&json!({"model": "m"}))
        .send()
        .unwrap();
    let mut got = Vec::new();
    let _ = r.read_to_end(&mut got);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "held for {:?}",
        started.elapsed()
    );
    wait_until(|| s.report("waiter")["summary"]["totalRequests"] == 1);
    let export = s.export(&key);
    assert!(export.contains("upstream stalled"), "{export}");
}

/// Issue 37, findings 2 and 4: a Responses-API stream reported its usage
/// in `response.completed` and Tollgate counted 1 token of 6,000 (and
/// added `stream_options`, which a strict upstream refuses); an Anthropic
/// stream counted its output alone (15 of 5,015). Now each is read where
/// its API puts it, and a spent token quota refuses the next call.
#[test]
fn responses_and_anthropic_streams_count_their_whole_usage() {
    let upstream = FakeHttp::start(|_, req, conn| {
        let body = String::from_utf8_lossy(&req.body).to_string();
        assert!(!body.contains("stream_options"), "rewritten: {body}");
        fake_http::start_chunked(conn, 200, "text/event-stream");
        if req.target.ends_with("/responses") {
            fake_http::chunk(conn, "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"hi\"}\n\n");
            fake_http::chunk(conn, "event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"model\":\"gpt-4o\",\"usage\":{\"input_tokens\":3000,\"output_tokens\":3000,\"total_tokens\":6000}}}\n\n");
        } else {
            fake_http::chunk(conn, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-x\",\"usage\":{\"input_tokens\":5000,\"output_tokens\":1}}}\n\n");
            fake_http::chunk(conn, "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"output_tokens\":15}}\n\n");
        }
        fake_http::end(conn);
    });
    let s = gateway(&upstream.url, 60_000);
    s.plan("tq", None, Some(3_000), None);
    let key = s.tenant_with_key("responder", "tq");
    let used = |key: &str| -> u64 {
        let r = s.tenant(key, "GET", "/api/billing/usage", None);
        r.json::<Value>().unwrap()["tokens"]["used"]
            .as_u64()
            .unwrap()
    };
    let body = json!({"model": "gpt-4o", "stream": true, "input": "hi"});
    let r = s.tenant(&key, "POST", "/v1/responses", Some(body.clone()));
    assert_eq!(r.status(), 200);
    let _ = r.text();
    wait_until(|| used(&key) == 6_000);
    let r = s.tenant(&key, "POST", "/v1/responses", Some(body));
    assert_eq!(r.status(), 429, "a spent token quota refuses");

    s.plan("tq2", None, Some(100_000), None);
    let key = s.tenant_with_key("claude-user", "tq2");
    let r = s.tenant(
        &key,
        "POST",
        "/v1/messages",
        Some(
            json!({"model": "claude-x", "stream": true, "max_tokens": 100,
                    "messages": [{"role": "user", "content": "hi"}]}),
        ),
    );
    assert_eq!(r.status(), 200);
    let _ = r.text();
    wait_until(|| used(&key) == 5_015);
}

/// Issue 37, Deliver 1: the plain (not streamed) answers of the Responses
/// and Anthropic APIs carry their usage at the top level as
/// `input_tokens`/`output_tokens`; each is counted, whatever whitespace
/// starts the request.
#[test]
fn plain_responses_and_anthropic_answers_are_counted() {
    let upstream = FakeHttp::start(|_, req, conn| {
        let body = if req.target.ends_with("/responses") {
            r#"{"id":"resp_1","object":"response","model":"gpt-4o","output":[{"type":"message","content":[{"type":"output_text","text":"hi"}]}],"usage":{"input_tokens":120,"output_tokens":30,"total_tokens":150}}"#
        } else {
            r#"{"id":"msg_1","type":"message","model":"claude-x","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":200,"output_tokens":20}}"#
        };
        fake_http::reply(conn, 200, "application/json", body);
    });
    let s = gateway(&upstream.url, 60_000);
    s.plan("tq3", None, Some(100_000), None);
    let key = s.tenant_with_key("plain", "tq3");
    let used = || -> u64 {
        let r = s.tenant(&key, "GET", "/api/billing/usage", None);
        r.json::<Value>().unwrap()["tokens"]["used"]
            .as_u64()
            .unwrap()
    };
    let client = reqwest::blocking::Client::new();
    for (path, body, total) in [
        ("/v1/responses", "\n {\"model\":\"gpt-4o\",\"input\":\"hi\"}", 150),
        (
            "/v1/messages",
            "\t{\"model\":\"claude-x\",\"max_tokens\":50,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
            150 + 220,
        ),
    ] {
        let r = client
            .post(s.url(path))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let _ = r.text();
        wait_until(|| used() == total);
    }
}

/// Issue 37, 8l: the gateway forwarded TRACE (an echo of the request, the
/// operator's credential included) to the upstream.
#[test]
fn the_gateway_forwards_no_trace() {
    let upstream = FakeHttp::start(|_, _, conn| fake_http::reply(conn, 200, "text/plain", "x"));
    let s = gateway(&upstream.url, 60_000);
    s.plan("gw2", None, None, None);
    let key = s.tenant_with_key("tracer", "gw2");
    let r = s.tenant(&key, "TRACE", "/v1/anything", None);
    assert_eq!(r.status(), 405);
    assert_eq!(upstream.count(), 0, "TRACE reached the upstream");
}

/// Issue 37, 8j and Deliver 1: a stream's tokens counted only when it
/// ended, so an endless stream kept a spent token quota open. Now a
/// streamed answer's tokens are charged as they pass, and once the quota is
/// spent a stream past its reservation is cut.
#[test]
fn an_endless_stream_is_cut_once_the_token_quota_is_spent() {
    let upstream = FakeHttp::start(|_, _, conn| {
        fake_http::start_chunked(conn, 200, "text/event-stream");
        let words = "word ".repeat(50);
        for _ in 0..2_000 {
            let event =
                format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"{words}\"}}}}]}}\n\n");
            fake_http::chunk(conn, &event);
            std::thread::sleep(Duration::from_millis(5));
        }
        fake_http::end(conn);
    });
    let s = gateway(&upstream.url, 60_000);
    s.plan("tq4", None, Some(500), None);
    let key = s.tenant_with_key("endless", "tq4");
    let started = Instant::now();
    let r = s.tenant(
        &key,
        "POST",
        "/v1/chat/completions",
        Some(json!({"model": "gpt-4o-mini", "stream": true,
                    "messages": [{"role": "user", "content": "go on forever"}]})),
    );
    assert_eq!(r.status(), 200);
    let body = r.bytes().map(|b| b.len()).unwrap_or(0);
    let took = started.elapsed();
    eprintln!("cut after {body} bytes, {took:?}");
    assert!(took < Duration::from_secs(8), "the stream ran on: {took:?}");
    let used = s
        .tenant(&key, "GET", "/api/billing/usage", None)
        .json::<Value>()
        .unwrap();
    let tokens = used["tokens"]["used"].as_u64().unwrap();
    assert!((500..1_000).contains(&tokens), "{used}");
    let r = s.tenant(
        &key,
        "POST",
        "/v1/chat/completions",
        Some(json!({"model": "gpt-4o-mini", "stream": true, "messages": []})),
    );
    assert_eq!(r.status(), 429, "the spent quota refuses the next");
}
