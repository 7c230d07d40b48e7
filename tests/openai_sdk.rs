//! The gateway speaks its clients' dialect: the official `openai` Python
//! package (installed by `scripts/test`) through a `[[proxy]]` with
//! `dialect = "openai"` - a plain call with the rate-limit headers, a
//! stream with and without `stream_options.include_usage` (without it, no
//! usage chunk reaches the SDK's `chunk.choices[0]` loop), a spent quota
//! raised as `RateLimitError` (code `insufficient_quota`, Tollgate's
//! message, `Retry-After`) and an unknown key as `AuthenticationError`;
//! the Responses API plain and streamed, and embeddings, with their tokens
//! (cached and reasoning included) counted (`tests/openai/sdk_check.py`).
//! A missing package fails the test.

mod common;
#[path = "common/fake_http.rs"]
mod fake_http;

use std::sync::Arc;

use common::TestServer;
use fake_http::FakeHttp;
use serde_json::json;
use tollgate::clock::SystemClock;
use tollgate::config::{Dialect, ProxyConfig};

/// A documented Responses API object: "hello world", 3 input tokens (2 of
/// them cached) and 4 output tokens (1 of them reasoning).
fn response(status: &str, with_usage: bool) -> serde_json::Value {
    let mut r = json!({"id": "resp_1", "object": "response", "created_at": 1, "status": status,
        "model": "gpt-4o-mini", "parallel_tool_calls": true, "tool_choice": "auto", "tools": [],
        "output": [], "usage": null});
    if with_usage {
        r["output"] = json!([{"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": "hello world", "annotations": []}]}]);
        r["usage"] = json!({"input_tokens": 3, "input_tokens_details": {"cached_tokens": 2},
            "output_tokens": 4, "output_tokens_details": {"reasoning_tokens": 1}, "total_tokens": 7});
    }
    r
}

fn upstream() -> FakeHttp {
    FakeHttp::start(|_, req, conn| {
        let body = req.json();
        if req.target.ends_with("/embeddings") {
            let e = json!({"object": "list", "model": "text-embedding-3-small",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -0.25]}],
                "usage": {"prompt_tokens": 5, "total_tokens": 5}});
            return fake_http::reply(conn, 200, "application/json", &e.to_string());
        }
        if req.target.ends_with("/responses") {
            if body["stream"] != true {
                let r = response("completed", true);
                return fake_http::reply(conn, 200, "application/json", &r.to_string());
            }
            fake_http::start_chunked(conn, 200, "text/event-stream");
            let events = [
                json!({"type": "response.created", "sequence_number": 0, "response": response("in_progress", false)}),
                json!({"type": "response.output_text.delta", "sequence_number": 1, "item_id": "msg_1",
                    "output_index": 0, "content_index": 0, "delta": "hello", "logprobs": []}),
                json!({"type": "response.output_text.delta", "sequence_number": 2, "item_id": "msg_1",
                    "output_index": 0, "content_index": 0, "delta": " world", "logprobs": []}),
                json!({"type": "response.completed", "sequence_number": 3, "response": response("completed", true)}),
            ];
            for e in events {
                fake_http::chunk(
                    conn,
                    &format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()),
                );
            }
            return fake_http::end(conn);
        }
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
    // The three chat calls were counted, the stream whose usage chunk was
    // kept from the client included (7 tokens each), the two Responses
    // calls (7 each) and the embedding (5).
    common::wait_until(|| {
        s.tenant(&key, "GET", "/api/billing/usage", None)
            .json::<serde_json::Value>()
            .unwrap()["tokens"]["used"]
            == 40
    });
    // The Responses calls' cached and reasoning tokens were read, plain
    // and streamed.
    let export = s
        .tenant(
            &key,
            "GET",
            "/api/billing/api-usage/export?format=ndjson",
            None,
        )
        .text()
        .unwrap();
    let responses: Vec<serde_json::Value> = export
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["endpoint"] == "/responses")
        .collect();
    assert_eq!(responses.len(), 2, "{export}");
    for r in &responses {
        assert_eq!(
            (
                &r["promptTokens"],
                &r["cachedPromptTokens"],
                &r["completionTokens"],
                &r["reasoningTokens"]
            ),
            (&json!(3), &json!(2), &json!(4), &json!(1)),
            "{r}"
        );
    }
    assert!(
        export.contains("\"endpoint\":\"/embeddings\"")
            && export.contains("text-embedding-3-small"),
        "{export}"
    );
}
