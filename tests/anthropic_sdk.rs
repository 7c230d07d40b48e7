//! The gateway speaks Anthropic's dialect: the official `anthropic` Python
//! package (installed by `scripts/test`) through a `[[proxy]]` with
//! `dialect = "anthropic"` - a plain call with the rate-limit headers, a
//! stream read by the SDK's own helper, a spent quota raised as
//! `RateLimitError` (Anthropic's `rate_limit_error`, Tollgate's message,
//! `Retry-After`) and an unknown key as `AuthenticationError`
//! (`tests/anthropic/sdk_check.py`). The upstream gets the operator's
//! credential as `x-api-key` (never the tenant's key), the client's
//! `anthropic-version`, and the request as the client sent it; cached
//! prompt tokens count. A missing package fails the test.

mod common;
#[path = "common/fake_http.rs"]
mod fake_http;

use std::sync::Arc;

use common::TestServer;
use fake_http::FakeHttp;
use serde_json::json;
use tollgate::clock::SystemClock;
use tollgate::config::{Dialect, ProxyConfig};

const OPERATOR_KEY: &str = "sk-ant-operator-secret";

fn upstream() -> FakeHttp {
    FakeHttp::start(|_, req, conn| {
        let body = req.json();
        let model = "claude-3-5-haiku-latest";
        if body["stream"] != true {
            let m = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": "hello world"}],
                "stop_reason": "end_turn", "stop_sequence": null,
                "usage": {"input_tokens": 3, "output_tokens": 4, "cache_read_input_tokens": 10}});
            return fake_http::reply(conn, 200, "application/json", &m.to_string());
        }
        fake_http::start_chunked(conn, 200, "text/event-stream");
        let events = [
            json!({"type": "message_start", "message": {"id": "msg_2", "type": "message",
                "role": "assistant", "model": model, "content": [], "stop_reason": null,
                "stop_sequence": null, "usage": {"input_tokens": 3, "output_tokens": 1,
                    "cache_creation_input_tokens": 6, "cache_read_input_tokens": 0,
                    "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 6}}}}),
            json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": "hello"}}),
            json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": " world"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn",
                "stop_sequence": null}, "usage": {"output_tokens": 4}}),
            json!({"type": "message_stop"}),
        ];
        for e in events {
            let name = e["type"].as_str().unwrap().to_string();
            fake_http::chunk(conn, &format!("event: {name}\ndata: {e}\n\n"));
        }
        fake_http::end(conn);
    })
}

#[test]
fn the_anthropic_sdk_shows_tollgates_reasons() {
    let up = upstream();
    std::env::set_var("TG_TEST_ANTHROPIC_KEY", OPERATOR_KEY);
    let proxies = vec![ProxyConfig {
        prefix: "/anthropic".into(),
        upstream: up.url.parse().unwrap(),
        upstream_auth_env: "TG_TEST_ANTHROPIC_KEY".into(),
        timeout_ms: 5_000,
        idle_timeout_ms: 5_000,
        cost: 1,
        dialect: Dialect::Anthropic,
        name: String::new(),
    }];
    let s = TestServer::start_with(move |c| c.proxy = proxies, Arc::new(SystemClock));
    let key = common::run_sdk_check(&s, "anthropic", "/anthropic", Some(1_000_000));
    // The upstream saw the operator's credential, the client's version
    // header, and each request as the client sent it.
    assert_eq!(
        up.count(),
        2,
        "the refused calls never reached the upstream"
    );
    for n in 0..2 {
        let r = up.request(n);
        assert_eq!(r.target, "/v1/messages");
        assert_eq!(r.header("x-api-key"), Some(OPERATOR_KEY));
        assert_eq!(r.header("authorization"), None);
        assert!(r.header("anthropic-version").is_some(), "{:?}", r.headers);
        assert!(r.json().get("stream_options").is_none(), "{:?}", r.json());
    }
    // Both calls counted: 3 + 10 read from the cache + 4, then 3 + 6
    // written to the cache for an hour + 4.
    common::wait_until(|| {
        s.tenant(&key, "GET", "/api/billing/usage", None)
            .json::<serde_json::Value>()
            .unwrap()["tokens"]["used"]
            == 30
    });
    // Each with its kinds.
    let export = s
        .tenant(
            &key,
            "GET",
            "/api/billing/api-usage/export?format=ndjson",
            None,
        )
        .text()
        .unwrap();
    let kinds: Vec<(u64, u64, u64, u64)> = export
        .lines()
        .map(|l| {
            let r: serde_json::Value = serde_json::from_str(l).unwrap();
            let n = |k: &str| r[k].as_u64().unwrap();
            (
                n("promptTokens"),
                n("cachedPromptTokens"),
                n("cacheWriteTokens"),
                n("cacheWrite1hTokens"),
            )
        })
        .filter(|k| k.0 > 0)
        .collect();
    assert_eq!(kinds, vec![(13, 10, 0, 0), (9, 0, 6, 6)], "{export}");
}
