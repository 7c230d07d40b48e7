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
        upstream: up.url.clone(),
        upstream_auth_env: String::new(),
        timeout_ms: 5_000,
        idle_timeout_ms: 5_000,
        cost: 1,
        dialect: Dialect::Openai,
        name: String::new(),
    }];
    let s = TestServer::start_with(move |c| c.proxy = proxies, Arc::new(SystemClock));
    s.plan("sdk", Some(1000), None, None);
    s.plan("one", Some(1), None, None);
    let key = s.tenant_with_key("sdk", "sdk");
    let spent = s.tenant_with_key("spent", "one");
    let r = s.tenant(&spent, "POST", "/api/v1/authorize", None);
    assert_eq!(r.status(), 200);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openai/sdk_check.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(s.url("/v1"))
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
        "the SDK check failed (scripts/test installs the openai package): {text}"
    );
    // The three calls were counted, the stream whose usage chunk was kept
    // from the client included: 7 tokens each.
    common::wait_until(|| {
        s.tenant(&key, "GET", "/api/billing/usage", None)
            .json::<serde_json::Value>()
            .unwrap()["tokens"]["used"]
            == 21
    });
    // The gateway's own answers are Tollgate's shape elsewhere.
    let r = s.tenant(&spent, "POST", "/api/v1/authorize", None);
    let body: serde_json::Value = r.json().unwrap();
    assert_eq!(body["code"], "quota_exceeded", "{body}");
}
