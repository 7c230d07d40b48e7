//! The gateway speaks its clients' dialect: the official `openai` Python
//! package (installed by `scripts/test`) through a `[[proxy]]` with
//! `dialect = "openai"` - a plain call with the rate-limit headers, a
//! stream with and without `stream_options.include_usage` (without it, no
//! usage chunk reaches the SDK's `chunk.choices[0]` loop), a spent quota
//! raised as `RateLimitError` (code `insufficient_quota`, Tollgate's
//! message, `Retry-After`) and an unknown key as `AuthenticationError`
//! (`tests/openai/sdk_check.py`). A missing package fails the test.

mod common;
#[path = "common/fake_http.rs"]
mod fake_http;

use std::sync::Arc;

use common::TestServer;
use fake_http::FakeHttp;
use serde_json::json;
use tollgate::clock::SystemClock;
use tollgate::config::{Dialect, ProxyConfig};

fn upstream() -> FakeHttp {
    FakeHttp::start(|_, req, conn| {
        let body = req.json();
        let usage = json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7});
        if body["stream"] != true {
            let c = json!({"id": "c1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hello world"}}],
                "usage": usage});
            return fake_http::reply(conn, 200, "application/json", &c.to_string());
        }
        fake_http::start_chunked(conn, 200, "text/event-stream");
        for piece in ["hello", " world"] {
            let c = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
                "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": null}]});
            fake_http::chunk(conn, &format!("data: {c}\n\n"));
        }
        if body["stream_options"]["include_usage"] == true {
            let c = json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
                "choices": [], "usage": usage});
            fake_http::chunk(conn, &format!("data: {c}\n\n"));
        }
        fake_http::chunk(conn, "data: [DONE]\n\n");
        fake_http::end(conn);
    })
}

#[test]
fn the_openai_sdk_shows_tollgates_reasons() {
    let up = upstream();
    let proxies = vec![ProxyConfig {
        prefix: "/v1".into(),
        upstream: up.url.parse().unwrap(),
        upstream_auth_env: String::new(),
        timeout_ms: 5_000,
        idle_timeout_ms: 5_000,
        cost: 1,
        dialect: Dialect::Openai,
        name: String::new(),
    }];
    let s = TestServer::start_with(move |c| c.proxy = proxies, Arc::new(SystemClock));
    let key = common::run_sdk_check(&s, "openai", "/v1", None);
    // The three calls were counted, the stream whose usage chunk was kept
    // from the client included: 7 tokens each.
    common::wait_until(|| {
        s.tenant(&key, "GET", "/api/billing/usage", None)
            .json::<serde_json::Value>()
            .unwrap()["tokens"]["used"]
            == 21
    });
}
