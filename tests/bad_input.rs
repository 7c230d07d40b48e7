//! Malformed input gets a JSON 4xx, never a 5xx or a panic, and the server
//! stays healthy (SPEC §5).

mod common;

use common::*;
use serde_json::{json, Value};

/// Sends raw bytes and returns (status, body).
fn raw(s: &TestServer, request: &[u8]) -> (u16, String) {
    let (status, text) = raw_http(&s.url(""), request);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

#[test]
fn malformed_bodies_get_clear_json_errors() {
    let s = TestServer::start();
    let key = s.tenant_with_key("victim", "starter");
    let post = |path: &str, ct: Option<&str>, body: Vec<u8>| {
        let mut r = s.http.post(s.url(path)).bearer_auth(&key).body(body);
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        r.send().unwrap()
    };
    let json_ct = Some("application/json");
    // (path, content type, body, expected status, expected code)
    type Case<'a> = (&'a str, Option<&'a str>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "/api/v1/authorize",
            json_ct,
            b"{not json".to_vec(),
            400,
            "invalid_json",
        ),
        (
            "/api/v1/authorize",
            json_ct,
            b"{\"cost\": \"one\"}".to_vec(),
            422,
            "invalid_request",
        ),
        (
            "/api/v1/authorize",
            json_ct,
            b"{\"cost\": -1}".to_vec(),
            422,
            "invalid_request",
        ),
        (
            "/api/v1/authorize",
            json_ct,
            b"{\"cost\": 1.5}".to_vec(),
            422,
            "invalid_request",
        ),
        (
            "/api/v1/authorize",
            json_ct,
            b"{\"cost\": 18446744073709551616}".to_vec(),
            422,
            "invalid_request",
        ),
        (
            "/api/v1/authorize",
            json_ct,
            b"{\"cost\": 9007199254740993}".to_vec(),
            422,
            "invalid_request",
        ),
        (
            "/api/v1/authorize",
            json_ct,
            b"{\"unknownField\": 1}".to_vec(),
            422,
            "invalid_request",
        ),
        (
            "/api/v1/authorize",
            json_ct,
            b"{\"endpoint\": \"\xff\xfe\"}".to_vec(),
            400,
            "invalid_json",
        ),
        (
            "/api/v1/authorize",
            Some("text/plain"),
            b"{}".to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "/api/v1/usage",
            None,
            b"{\"endpoint\":\"/a\"}".to_vec(),
            415,
            "unsupported_media_type",
        ),
        ("/api/v1/usage", json_ct, b"".to_vec(), 400, "invalid_json"),
        (
            "/api/v1/usage",
            json_ct,
            b"[{\"endpoint\": 5}]".to_vec(),
            422,
            "invalid_request",
        ),
        (
            "/api/v1/usage",
            json_ct,
            b"{\"endpoint\":\"/a\",\"responseTime\":-3}".to_vec(),
            422,
            "invalid_request",
        ),
        (
            "/api/v1/usage",
            json_ct,
            b"{\"endpoint\":\"/a\",\"promptTokens\":1e400}".to_vec(),
            400,
            "invalid_json",
        ),
        (
            "/api/v1/usage",
            json_ct,
            b"{\"endpoint\":\"/a\",\"timestamp\":\"2001-01-01T00:00:00Z\"}".to_vec(),
            422,
            "invalid_request",
        ),
        (
            "/api/chat",
            json_ct,
            b"null".to_vec(),
            422,
            "invalid_request",
        ),
        (
            "/api/v1/usage",
            json_ct,
            vec![b'['; 100_000],
            400,
            "invalid_json",
        ),
        (
            "/api/chat",
            json_ct,
            vec![b'['; 100_000],
            422,
            "invalid_request",
        ),
    ];
    for (path, ct, body, status, code) in cases {
        let shown = String::from_utf8_lossy(&body)
            .chars()
            .take(60)
            .collect::<String>();
        let r = post(path, ct, body);
        assert_eq!(r.status().as_u16(), status, "{path} {shown}");
        let body: Value = r.json().unwrap();
        assert_eq!(
            (body["status"].as_u64(), body["code"].as_str()),
            (Some(status as u64), Some(code)),
            "{path} {shown}"
        );
    }
    // Over the 1 MiB cap.
    let big = format!("{{\"endpoint\": \"{}\"}}", "a".repeat(1 << 20));
    error_body(
        post("/api/v1/usage", json_ct, big.into_bytes()),
        413,
        "payload_too_large",
    );
    // Query parameters are named in our words, not the framework's.
    for (path, says) in [
        (
            "/api/billing/api-usage?nope=1",
            "query string: unknown parameter `nope`",
        ),
        (
            "/api/billing/api-usage/export?keyid=x",
            "query string: unknown parameter `keyid`",
        ),
    ] {
        let body = error_body(s.tenant(&key, "GET", path, None), 422, "invalid_request");
        let text = body["error"].as_str().unwrap();
        assert!(
            text.starts_with(says) && !text.contains("deserialize"),
            "{text}"
        );
    }
    let usage: Value = s
        .tenant(&key, "GET", "/api/billing/usage", None)
        .json()
        .unwrap();
    assert_eq!(
        usage["calls"]["used"], 0,
        "nothing was taken from bad requests"
    );
}

#[test]
fn raw_protocol_abuse_is_answered_without_harm() {
    let s = TestServer::start();
    let key = s.tenant_with_key("raw", "starter");
    // CRLF smuggled into a header value is a protocol error: the header never splits.
    let (status, _) = raw(
        &s,
        format!("GET /api/billing/usage HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\rInjected: 1\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert!((400..500).contains(&status), "status {status}");
    // Path traversal never escapes: unknown routes are JSON 404s.
    let (status, body) = raw(
        &s,
        b"GET /dashboard/../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 404);
    assert!(body.contains("\"not_found\""), "{body}");
    // A non-UTF-8 key header is refused as unreadable credentials.
    let (status, body) = raw(&s, b"GET /api/billing/usage HTTP/1.1\r\nHost: x\r\nX-API-Key: \xff\xfe\r\nConnection: close\r\n\r\n");
    assert_eq!(status, 401, "{body}");
    // Lying Content-Length above the cap is refused before reading.
    let (status, _) = raw(
        &s,
        format!("POST /api/v1/usage HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: 99999999\r\nConnection: close\r\n\r\n{{}}").as_bytes(),
    );
    assert_eq!(status, 413);
    // Garbage in the request line.
    let (status, _) = raw(&s, b"\x00\x01\x02 garbage\r\n\r\n");
    assert!(
        status == 0 || (400..500).contains(&status),
        "status {status}"
    );
    let health: Value = s.health();
    assert_eq!(health["status"], "ok");
    assert_eq!(
        s.tenant(&key, "POST", "/api/v1/authorize", Some(json!({})))
            .status(),
        200
    );
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn routes() -> Vec<(&'static str, &'static str)> {
        vec![
            ("POST", "/api/v1/authorize"),
            ("POST", "/api/v1/check"),
            ("POST", "/api/v1/usage"),
            ("POST", "/api/chat"),
            ("GET", "/api/billing/usage"),
            ("GET", "/api/billing/api-usage"),
            ("GET", "/api/billing/api-usage/export"),
            ("POST", "/api/admin/plans"),
            ("PATCH", "/api/admin/plans/free"),
            ("POST", "/api/admin/tenants"),
            ("PATCH", "/api/admin/tenants/victim"),
            ("DELETE", "/api/admin/tenants/victim/keys/x"),
            ("PUT", "/api/chat"),
        ]
    }

    /// JSON-shaped noise: real field names with hostile values, or raw bytes.
    fn body() -> impl Strategy<Value = Vec<u8>> {
        let field = prop::sample::select(vec![
            "cost",
            "endpoint",
            "method",
            "statusCode",
            "responseTime",
            "promptTokens",
            "tokensUsed",
            "calls",
            "metadata",
            "timestamp",
            "message",
            "botId",
            "model",
            "id",
            "planId",
            "monthlyCalls",
            "rateLimit",
            "status",
        ]);
        let value = prop::sample::select(vec![
            "-1",
            "1e400",
            "18446744073709551616",
            "9007199254740993",
            "\"\\u0000\"",
            "null",
            "[]",
            "{}",
            "true",
            "\"2026-02-30T00:00:00Z\"",
            "\"\\ud800\"",
            "\"GET\\r\\nX: y\"",
            "0.5",
            "\"../../etc\"",
            "{\"a\":[[[[[]]]]]}",
        ]);
        prop_oneof![
            prop::collection::vec((field, value), 0..6).prop_map(|kv| {
                let inner: Vec<String> = kv.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!("{{{}}}", inner.join(",")).into_bytes()
            }),
            prop::collection::vec(any::<u8>(), 0..200),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]
        // Every answer to arbitrary input is below 500, and every 4xx is the JSON error body.
        #[test]
        fn arbitrary_requests_never_get_a_5xx(
            route in prop::sample::select(routes()),
            body in body(),
            query in "[a-z=&%0-9]{0,30}",
            as_admin in any::<bool>(),
            content_type in prop::sample::select(vec!["application/json", "text/plain", "application/x-www-form-urlencoded", ""]),
        ) {
            let s = server();
            let mut req = s.http.request(route.0.parse().unwrap(), format!("{}?{query}", s.url(route.1))).body(body);
            req = req.bearer_auth(if as_admin { ADMIN } else { key() });
            if !content_type.is_empty() {
                req = req.header("content-type", content_type);
            }
            let r = req.send().unwrap();
            let status = r.status().as_u16();
            prop_assert!(status < 500, "{} {} -> {}", route.0, route.1, status);
            if status >= 400 {
                let v: Value = r.json().unwrap();
                prop_assert_eq!(v["status"].as_u64(), Some(status as u64));
                prop_assert!(v["code"].is_string());
            }
        }
    }

    static SERVER: std::sync::OnceLock<(TestServer, String)> = std::sync::OnceLock::new();

    fn shared() -> &'static (TestServer, String) {
        SERVER.get_or_init(|| {
            let s = TestServer::start();
            let key = s.tenant_with_key("victim", "starter");
            (s, key)
        })
    }

    fn server() -> &'static TestServer {
        &shared().0
    }

    fn key() -> &'static str {
        &shared().1
    }

    #[test]
    fn the_fuzzed_server_is_still_healthy() {
        arbitrary_requests_never_get_a_5xx();
        let h: Value = server().health();
        assert_eq!(h["status"], "ok");
    }
}
