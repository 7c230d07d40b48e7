//! A streamed answer goes through the gateway as it comes: each chunk the
//! upstream sends is written to the client at once. Without TCP_NODELAY on
//! the client's connection, each small write after the first waited for the
//! client's acknowledgement of the one before - 40 ms on Linux, where a
//! client delays it - and scripts/gateway-load.sh measured 42 ms added to
//! every streamed completion (0.06× the tokens per second of direct).

mod common;
#[path = "common/fake_http.rs"]
mod fake_http;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use fake_http::FakeHttp;
use tollgate::clock::SystemClock;
use tollgate::config::ProxyConfig;

const EVENTS: usize = 6;

/// Reads one response (chunked or with a length) from `r`: its status and body.
fn response(r: &mut BufReader<TcpStream>) -> (u16, Vec<u8>) {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status = line.split(' ').nth(1).unwrap().parse().unwrap();
    let (mut len, mut chunked) = (0, false);
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        if h == "\r\n" {
            break;
        }
        let h = h.to_ascii_lowercase();
        if let Some(v) = h.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
        chunked |= h.starts_with("transfer-encoding:") && h.contains("chunked");
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut piece = vec![0; n + 2];
            r.read_exact(&mut piece).unwrap();
            body.extend_from_slice(&piece[..n]);
            if n == 0 {
                break;
            }
        }
    } else {
        body.resize(len, 0);
        r.read_exact(&mut body).unwrap();
    }
    (status, body)
}

/// A server whose `/v1` is a gateway to `upstream`, cutting an answer off
/// after `idle_timeout_ms` of silence.
fn gateway(upstream: &str, idle_timeout_ms: u64) -> TestServer {
    let proxies = vec![ProxyConfig {
        prefix: "/v1".into(),
        upstream: upstream.parse().unwrap(),
        upstream_auth_env: String::new(),
        timeout_ms: 5_000,
        idle_timeout_ms,
        cost: 1,
        dialect: Default::default(),
        name: String::new(),
    }];
    TestServer::start_with(move |c| c.proxy = proxies, Arc::new(SystemClock))
}

#[test]
fn a_streamed_answer_is_relayed_without_waiting_for_acknowledgements() {
    // The upstream streams EVENTS events a millisecond apart: each its own
    // write, as a model's tokens arrive.
    let upstream = FakeHttp::start(|_, _, conn| {
        fake_http::start_chunked(conn, 200, "text/event-stream");
        for _ in 0..EVENTS {
            fake_http::chunk(
                conn,
                "data: {\"choices\":[{\"delta\":{\"content\":\"tok \"}}]}\n\n",
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        fake_http::chunk(
            conn,
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":6}}\n\ndata: [DONE]\n\n",
        );
        fake_http::end(conn);
    });
    let s = gateway(&upstream.url, 60_000);
    s.plan("gw", None, None, None);
    let key = s.tenant_with_key("streamer", "gw");
    let addr = s.url("").trim_start_matches("http://").to_string();
    // One keep-alive connection, as a client's pool keeps it: past its
    // first packets, the client's kernel delays its acknowledgements.
    let conn = TcpStream::connect(&addr).unwrap();
    conn.set_nodelay(true).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut writer = conn;
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true}}"#;
    let mut took = Vec::new();
    for _ in 0..30 {
        let started = Instant::now();
        write!(
            writer,
            "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let (status, got) = response(&mut reader);
        took.push(started.elapsed());
        assert_eq!(status, 200);
        let text = String::from_utf8(got).unwrap();
        assert_eq!(text.matches("tok ").count(), EVENTS, "{text}");
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    }
    took.sort();
    // The upstream takes about 6 ms; a stall per write adds 40 ms each.
    let median = took[took.len() / 2];
    assert!(
        median < Duration::from_millis(30),
        "a streamed answer took {median:?} (median of 30; all: {took:?})"
    );
    // Each was counted with the tokens its stream reported.
    wait_until(|| s.report("streamer")["summary"]["totalRequests"] == 30);
    assert_eq!(
        s.report("streamer")["summary"]["completionTokens"],
        30 * EVENTS as u64
    );
}

/// The idle timeout counts from the upstream's last chunk: a stream slower
/// than the timeout in total but never silent for that long goes through
/// whole (its timer is moved only when it fires, not on every chunk).
#[test]
fn a_slow_stream_that_never_goes_quiet_is_not_cut() {
    let upstream = FakeHttp::start(|_, _, conn| {
        fake_http::start_chunked(conn, 200, "text/event-stream");
        for _ in 0..8 {
            fake_http::chunk(
                conn,
                "data: {\"choices\":[{\"delta\":{\"content\":\"slow \"}}]}\n\n",
            );
            std::thread::sleep(Duration::from_millis(150));
        }
        fake_http::chunk(conn, "data: [DONE]\n\n");
        fake_http::end(conn);
    });
    let s = gateway(&upstream.url, 300);
    s.plan("gw", None, None, None);
    let key = s.tenant_with_key("patient", "gw");
    let started = Instant::now();
    let text = s
        .http
        .post(s.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"model": "m", "stream": true}))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(1_100));
    assert_eq!(text.matches("slow ").count(), 8, "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    wait_until(|| s.report("patient")["summary"]["totalRequests"] == 1);
    let export = s.export(&key);
    assert!(!export.contains("stalled"), "{export}");
}
