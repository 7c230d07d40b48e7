//! Golden costs: for each provider and API, plain and streamed, a usage
//! payload in the provider's documented format goes through the gateway
//! (or the ingest API), and the record's cost and token kinds are checked
//! against figures computed here, from the providers' published prices
//! per million tokens (written out below, not read from Tollgate's
//! table), to the micro-dollar. The LiteLLM cost bugs are cases:
//!
//! - #9812: Anthropic cache writes billed twice (here: once, at the write price);
//! - #9833: Claude cache reads 10x off (here: at the read price, a tenth of the input's);
//! - #11789: a stream counting cache reads as input, 7x over (here: streamed reads at the read price);
//! - #33772: cache writes a relay reports beside `prompt_tokens` dropped (here: counted, at the write price);
//! - reasoning counted twice or missed (browser-use #4065, opencode #17566,
//!   LibreChat #4194): here part of the completion, priced once.

mod common;
#[path = "common/fake_http.rs"]
mod fake_http;

use std::sync::Arc;

use common::{wait_until, TestServer};
use fake_http::FakeHttp;
use serde_json::{json, Value};
use tollgate::clock::SystemClock;
use tollgate::config::{Dialect, ProxyConfig};

/// USD per million tokens, as the providers publish them.
struct Price {
    input: f64,
    output: f64,
    cache_read: f64,
    cache_write_5m: f64,
    cache_write_1h: f64,
}

const fn p(input: f64, output: f64, cache_read: f64, w5: f64, w1: f64) -> Price {
    Price {
        input,
        output,
        cache_read,
        cache_write_5m: w5,
        cache_write_1h: w1,
    }
}

const GPT_4O: Price = p(2.50, 10.0, 1.25, 2.50, 2.50);
const O3: Price = p(2.0, 8.0, 0.50, 2.0, 2.0);
const GPT_5: Price = p(1.25, 10.0, 0.125, 1.25, 1.25);
const GPT_5_MINI: Price = p(0.25, 2.0, 0.025, 0.25, 0.25);
const EMBED_3_SMALL: Price = p(0.02, 0.0, 0.02, 0.02, 0.02);
const SONNET_4_5: Price = p(3.0, 15.0, 0.30, 3.75, 6.0);
const HAIKU_4_5: Price = p(1.0, 5.0, 0.10, 1.25, 2.0);
const GEMINI_2_5_FLASH: Price = p(0.30, 2.50, 0.03, 0.30, 0.30);
/// Gemini 2.5 Pro above 200,000 prompt tokens.
const GEMINI_2_5_PRO_LONG: Price = p(2.50, 15.0, 0.25, 2.50, 2.50);
const MISTRAL_SMALL: Price = p(0.10, 0.30, 0.10, 0.10, 0.10);

/// What a record should say: its tokens by kind and its cost.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Want {
    /// The whole prompt (uncached, cache reads and cache writes).
    prompt: u64,
    completion: u64,
    cached: u64,
    write_5m: u64,
    write_1h: u64,
    reasoning: u64,
}

impl Want {
    /// The cost, computed independently: each kind at its own price,
    /// reasoning inside the completion.
    fn cost(&self, p: &Price) -> f64 {
        let uncached = self.prompt - self.cached - self.write_5m - self.write_1h;
        (uncached as f64 * p.input
            + self.cached as f64 * p.cache_read
            + self.write_5m as f64 * p.cache_write_5m
            + self.write_1h as f64 * p.cache_write_1h
            + self.completion as f64 * p.output)
            / 1e6
    }
}

struct Case {
    name: &'static str,
    dialect: &'static str,
    path: &'static str,
    stream: bool,
    /// The upstream's answer: a JSON body, or the events of a stream.
    answer: Vec<Value>,
    model: &'static str,
    price: &'static Price,
    want: Want,
}

fn w(prompt: u64, completion: u64, cached: u64, w5: u64, w1: u64, reasoning: u64) -> Want {
    Want {
        prompt,
        completion,
        cached,
        write_5m: w5,
        write_1h: w1,
        reasoning,
    }
}

fn chunk(model: &str, usage: Option<Value>) -> Value {
    let mut c = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
        "model": model, "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": null}]});
    if let Some(u) = usage {
        c["choices"] = json!([]);
        c["usage"] = u;
    }
    c
}

fn completion(model: &str, usage: Value) -> Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Hi"}}],
        "usage": usage})
}

fn cases() -> Vec<Case> {
    vec![
        // OpenAI chat completions: cached prompt tokens in
        // prompt_tokens_details, part of prompt_tokens.
        Case {
            name: "openai chat, cached prompt",
            dialect: "openai",
            path: "/v1/chat/completions",
            stream: false,
            answer: vec![completion(
                "gpt-4o-2024-08-06",
                json!({"prompt_tokens": 2006, "completion_tokens": 300, "total_tokens": 2306,
                    "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
                    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                        "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}),
            )],
            model: "gpt-4o",
            price: &GPT_4O,
            want: w(2006, 300, 1920, 0, 0, 0),
        },
        // A streamed o3 answer: reasoning tokens are part of
        // completion_tokens and priced once.
        Case {
            name: "openai chat streamed, reasoning",
            dialect: "openai",
            path: "/v1/chat/completions",
            stream: true,
            answer: vec![
                chunk("o3-2025-04-16", None),
                chunk(
                    "o3-2025-04-16",
                    Some(
                        json!({"prompt_tokens": 1000, "completion_tokens": 5000, "total_tokens": 6000,
                        "prompt_tokens_details": {"cached_tokens": 0},
                        "completion_tokens_details": {"reasoning_tokens": 4000}}),
                    ),
                ),
            ],
            model: "o3",
            price: &O3,
            want: w(1000, 5000, 0, 0, 0, 4000),
        },
        // OpenAI Responses: input_tokens_details / output_tokens_details.
        Case {
            name: "openai responses",
            dialect: "openai",
            path: "/v1/responses",
            stream: false,
            answer: vec![
                json!({"id": "resp_1", "object": "response", "created_at": 1, "status": "completed",
                "model": "gpt-5-2025-08-07", "output": [],
                "usage": {"input_tokens": 5000, "input_tokens_details": {"cached_tokens": 4096},
                    "output_tokens": 1200, "output_tokens_details": {"reasoning_tokens": 1024},
                    "total_tokens": 6200}}),
            ],
            model: "gpt-5",
            price: &GPT_5,
            want: w(5000, 1200, 4096, 0, 0, 1024),
        },
        Case {
            name: "openai responses streamed",
            dialect: "openai",
            path: "/v1/responses",
            stream: true,
            answer: vec![
                json!({"type": "response.created", "sequence_number": 0,
                    "response": {"id": "resp_2", "object": "response", "status": "in_progress",
                        "model": "gpt-5-mini-2025-08-07", "output": [], "usage": null}}),
                json!({"type": "response.output_text.delta", "sequence_number": 1, "item_id": "msg_1",
                    "output_index": 0, "content_index": 0, "delta": "Hi"}),
                json!({"type": "response.completed", "sequence_number": 2,
                    "response": {"id": "resp_2", "object": "response", "status": "completed",
                        "model": "gpt-5-mini-2025-08-07", "output": [],
                        "usage": {"input_tokens": 30000, "input_tokens_details": {"cached_tokens": 25600},
                            "output_tokens": 800, "output_tokens_details": {"reasoning_tokens": 512},
                            "total_tokens": 30800}}}),
            ],
            model: "gpt-5-mini",
            price: &GPT_5_MINI,
            want: w(30000, 800, 25600, 0, 0, 512),
        },
        Case {
            name: "openai embeddings",
            dialect: "openai",
            path: "/v1/embeddings",
            stream: false,
            answer: vec![json!({"object": "list", "model": "text-embedding-3-small",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.1, -0.2]}],
                "usage": {"prompt_tokens": 8000, "total_tokens": 8000}})],
            model: "text-embedding-3-small",
            price: &EMBED_3_SMALL,
            want: w(8000, 0, 0, 0, 0, 0),
        },
        // Anthropic Messages: input_tokens excludes the cache; reads and
        // writes are priced apart (LiteLLM #9812, #9833).
        Case {
            name: "anthropic messages, cache read and write",
            dialect: "anthropic",
            path: "/v1/messages",
            stream: false,
            answer: vec![
                json!({"id": "msg_1", "type": "message", "role": "assistant",
                "model": "claude-sonnet-4-5-20250929", "content": [{"type": "text", "text": "Hi"}],
                "stop_reason": "end_turn", "stop_sequence": null,
                "usage": {"input_tokens": 50, "cache_creation_input_tokens": 2000,
                    "cache_read_input_tokens": 10000, "output_tokens": 500,
                    "cache_creation": {"ephemeral_5m_input_tokens": 2000, "ephemeral_1h_input_tokens": 0},
                    "service_tier": "standard"}}),
            ],
            model: "claude-sonnet-4-5",
            price: &SONNET_4_5,
            want: w(12050, 500, 10000, 2000, 0, 0),
        },
        // A streamed Anthropic answer with both cache tiers: the input in
        // message_start, the output (and, in newer versions, the input
        // again) in message_delta - counted once (LiteLLM #11789).
        Case {
            name: "anthropic messages streamed, both cache tiers",
            dialect: "anthropic",
            path: "/v1/messages",
            stream: true,
            answer: vec![
                json!({"type": "message_start", "message": {"id": "msg_2", "type": "message",
                    "role": "assistant", "model": "claude-haiku-4-5-20251001", "content": [],
                    "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": 20, "cache_creation_input_tokens": 3000,
                        "cache_read_input_tokens": 7000, "output_tokens": 1,
                        "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000}}}}),
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
                json!({"type": "content_block_stop", "index": 0}),
                json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                    "usage": {"input_tokens": 20, "cache_creation_input_tokens": 3000,
                        "cache_read_input_tokens": 7000, "output_tokens": 400}}),
                json!({"type": "message_stop"}),
            ],
            model: "claude-haiku-4-5",
            price: &HAIKU_4_5,
            want: w(10020, 400, 7000, 1000, 2000, 0),
        },
        // A relay's chat completion for a Claude model: prompt_tokens is
        // the whole prompt, with Anthropic's cache fields beside it
        // (LiteLLM #33772: the writes were dropped).
        Case {
            name: "relayed chat completion with cache writes",
            dialect: "openai",
            path: "/v1/chat/completions",
            stream: false,
            answer: vec![completion(
                "claude-sonnet-4-5",
                json!({"prompt_tokens": 5000, "completion_tokens": 100, "total_tokens": 5100,
                    "prompt_tokens_details": {"cached_tokens": 1000},
                    "cache_creation_input_tokens": 3000, "cache_read_input_tokens": 1000}),
            )],
            model: "claude-sonnet-4-5",
            price: &SONNET_4_5,
            want: w(5000, 100, 1000, 3000, 0, 0),
        },
        // Google, through its OpenAI-compatible endpoint.
        Case {
            name: "google gemini chat, cached",
            dialect: "openai",
            path: "/v1beta/openai/chat/completions",
            stream: false,
            answer: vec![completion(
                "gemini-2.5-flash",
                json!({"prompt_tokens": 3000, "completion_tokens": 700, "total_tokens": 3700,
                    "prompt_tokens_details": {"cached_tokens": 2000}}),
            )],
            model: "gemini-2.5-flash",
            price: &GEMINI_2_5_FLASH,
            want: w(3000, 700, 2000, 0, 0, 0),
        },
        // A long prompt takes Gemini 2.5 Pro's prices above 200,000 tokens.
        Case {
            name: "google gemini streamed, long prompt and thinking",
            dialect: "openai",
            path: "/v1beta/openai/chat/completions",
            stream: true,
            answer: vec![
                chunk("gemini-2.5-pro", None),
                chunk(
                    "gemini-2.5-pro",
                    Some(
                        json!({"prompt_tokens": 250000, "completion_tokens": 2000, "total_tokens": 252000,
                        "completion_tokens_details": {"reasoning_tokens": 1500}}),
                    ),
                ),
            ],
            model: "gemini-2.5-pro",
            price: &GEMINI_2_5_PRO_LONG,
            want: w(250000, 2000, 0, 0, 0, 1500),
        },
        Case {
            name: "mistral chat",
            dialect: "openai",
            path: "/v1/chat/completions",
            stream: false,
            answer: vec![completion(
                "mistral-small-latest",
                json!({"prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500}),
            )],
            model: "mistral-small-latest",
            price: &MISTRAL_SMALL,
            want: w(1200, 300, 0, 0, 0, 0),
        },
        Case {
            name: "mistral chat streamed",
            dialect: "openai",
            path: "/v1/chat/completions",
            stream: true,
            answer: vec![
                chunk("mistral-small-latest", None),
                chunk(
                    "mistral-small-latest",
                    Some(
                        json!({"prompt_tokens": 900, "completion_tokens": 250, "total_tokens": 1150}),
                    ),
                ),
            ],
            model: "mistral-small-latest",
            price: &MISTRAL_SMALL,
            want: w(900, 250, 0, 0, 0, 0),
        },
    ]
}

/// The upstream answers each request with the case its `x-case` header names.
fn upstream() -> FakeHttp {
    FakeHttp::start(|_, req, conn| {
        let n: usize = req.header("x-case").unwrap().parse().unwrap();
        let case = &cases()[n];
        if !case.stream {
            return fake_http::reply(conn, 200, "application/json", &case.answer[0].to_string());
        }
        fake_http::start_chunked(conn, 200, "text/event-stream");
        for e in &case.answer {
            let event = e["type"].as_str().filter(|_| case.dialect == "anthropic");
            let line = match event {
                Some(t) => format!("event: {t}\ndata: {e}\n\n"),
                None => format!("data: {e}\n\n"),
            };
            fake_http::chunk(conn, &line);
        }
        if case.dialect == "openai" && case.path != "/v1/responses" {
            fake_http::chunk(conn, "data: [DONE]\n\n");
        }
        fake_http::end(conn);
    })
}

fn proxy(prefix: &str, up: &FakeHttp, dialect: Dialect) -> ProxyConfig {
    ProxyConfig {
        prefix: prefix.into(),
        upstream: up.url.parse().unwrap(),
        upstream_auth_env: String::new(),
        timeout_ms: 5_000,
        idle_timeout_ms: 5_000,
        cost: 1,
        dialect,
        name: String::new(),
    }
}

/// The one record of `key`'s tenant, from the export.
fn the_record(s: &TestServer, key: &str) -> Value {
    let mut line = Value::Null;
    wait_until(|| {
        let text = s
            .tenant(
                key,
                "GET",
                "/api/billing/api-usage/export?format=ndjson",
                None,
            )
            .text()
            .unwrap();
        match text.lines().next() {
            Some(l) => {
                line = serde_json::from_str(l).unwrap();
                true
            }
            None => false,
        }
    });
    line
}

fn check(name: &str, r: &Value, want: &Want, price: &Price) {
    let n = |k: &str| {
        r[k].as_u64()
            .unwrap_or_else(|| panic!("{name}: {k} in {r}"))
    };
    let got = (
        n("promptTokens"),
        n("completionTokens"),
        n("cachedPromptTokens"),
        n("cacheWriteTokens") - n("cacheWrite1hTokens"),
        n("cacheWrite1hTokens"),
        n("reasoningTokens"),
    );
    let wanted = (
        want.prompt,
        want.completion,
        want.cached,
        want.write_5m,
        want.write_1h,
        want.reasoning,
    );
    assert_eq!(got, wanted, "{name}: tokens by kind in {r}");
    assert_eq!(
        n("tokensUsed"),
        want.prompt + want.completion,
        "{name}: reasoning is not added to the total"
    );
    let cost = r["costUsd"].as_f64().unwrap();
    let expected = want.cost(price);
    assert!(
        (cost - expected).abs() < 0.5e-6,
        "{name}: cost {cost}, computed {expected}"
    );
    // The cost by kind adds up to it.
    let parts: f64 = [
        "uncachedPromptCostUsd",
        "cachedPromptCostUsd",
        "cacheWriteCostUsd",
        "completionCostUsd",
    ]
    .iter()
    .map(|k| r[*k].as_f64().unwrap())
    .sum();
    assert!(
        (parts - cost).abs() < 1e-6,
        "{name}: parts {parts} of {cost}"
    );
    let cached = r["cachedPromptCostUsd"].as_f64().unwrap();
    assert!(
        (cached - want.cached as f64 * price.cache_read / 1e6).abs() < 0.5e-6,
        "{name}: cached prompt cost {cached}"
    );
}

#[test]
fn every_provider_and_api_costs_what_its_prices_say() {
    let up = upstream();
    let proxies = vec![
        proxy("/openai", &up, Dialect::Openai),
        proxy("/anthropic", &up, Dialect::Anthropic),
    ];
    let s = TestServer::start_with(move |c| c.proxy = proxies, Arc::new(SystemClock));
    s.plan("open", None, None, None);
    let http = reqwest::blocking::Client::new();
    for (i, case) in cases().iter().enumerate() {
        let key = s.tenant_with_key(&format!("golden-{i}"), "open");
        let mut body = json!({"model": case.model, "stream": case.stream});
        match case.path {
            "/v1/embeddings" => body["input"] = json!("hello"),
            "/v1/responses" => body["input"] = json!("hello"),
            _ => body["messages"] = json!([{"role": "user", "content": "hello"}]),
        }
        if case.dialect == "anthropic" {
            body["max_tokens"] = json!(1024);
        }
        let url = s.url(&format!("/{}{}", case.dialect, case.path));
        let req = http.post(url).header("x-case", i.to_string()).json(&body);
        let req = if case.dialect == "anthropic" {
            req.header("x-api-key", &key)
                .header("anthropic-version", "2023-06-01")
        } else {
            req.bearer_auth(&key)
        };
        let r = req.send().unwrap();
        assert_eq!(r.status(), 200, "{}", case.name);
        let _ = r.bytes().unwrap();
        let record = the_record(&s, &key);
        check(case.name, &record, &case.want, case.price);
        assert_eq!(
            record["model"],
            case.answer
                .iter()
                .find_map(|a| {
                    a["model"]
                        .as_str()
                        .or_else(|| a.pointer("/message/model").and_then(Value::as_str))
                        .or_else(|| a.pointer("/response/model").and_then(Value::as_str))
                })
                .unwrap(),
            "{}",
            case.name
        );
    }
}

/// Reported usage with token kinds is priced the same way, and the
/// analytics answer the kinds, their costs and the cache hit rate.
#[test]
fn reported_kinds_are_priced_and_broken_down() {
    let s = TestServer::start_with(|c| c.flush.checkpoint_ms = 50, Arc::new(SystemClock));
    s.plan("open", None, None, None);
    let key = s.tenant_with_key("reporter", "open");
    let records = json!([
        // Anthropic's figures reported whole: 12,050 prompt tokens of
        // which 10,000 read from the cache and 2,000 written for an hour.
        {"endpoint": "/v1/messages", "model": "claude-sonnet-4-5", "promptTokens": 12050,
         "completionTokens": 500, "cachedPromptTokens": 10000, "cacheWriteTokens": 2000,
         "cacheWriteTtl": "1h"},
        {"endpoint": "/v1/chat/completions", "model": "o3", "promptTokens": 1000,
         "completionTokens": 5000, "reasoningTokens": 4000},
        // An older client: no kinds.
        {"endpoint": "/v1/chat/completions", "model": "gpt-4o", "promptTokens": 100,
         "completionTokens": 10}
    ]);
    let r = s.tenant(&key, "POST", "/api/v1/usage", Some(records));
    assert_eq!(r.status(), 202, "{}", r.text().unwrap());
    let sonnet = w(12050, 500, 10000, 0, 2000, 0).cost(&SONNET_4_5);
    let o3 = w(1000, 5000, 0, 0, 0, 4000).cost(&O3);
    let gpt = w(100, 10, 0, 0, 0, 0).cost(&GPT_4O);
    let mut report = Value::Null;
    wait_until(|| {
        report = s
            .tenant(&key, "GET", "/api/billing/api-usage?range=day", None)
            .json()
            .unwrap();
        report["summary"]["totalRequests"] == 3
    });
    let sum = &report["summary"];
    let close = |v: &Value, want: f64, what: &str| {
        let got = v.as_f64().unwrap_or_else(|| panic!("{what}: {v}"));
        assert!(
            (got - want).abs() < 1.5e-6,
            "{what}: got {got}, want {want}"
        );
    };
    close(&sum["estimatedCostUsd"], sonnet + o3 + gpt, "cost");
    let t = &sum["tokensByKind"];
    assert_eq!(
        (
            t["uncachedPrompt"].as_u64(),
            t["cachedPrompt"].as_u64(),
            t["cacheWrite"].as_u64(),
            t["cacheWrite1h"].as_u64(),
            t["completion"].as_u64(),
            t["reasoning"].as_u64()
        ),
        (
            Some(50 + 1000 + 100),
            Some(10000),
            Some(2000),
            Some(2000),
            Some(5510),
            Some(4000)
        ),
        "{t}"
    );
    let c = &sum["costByKind"];
    close(
        &c["cachedPrompt"],
        10000.0 * 0.30 / 1e6,
        "cached prompt cost",
    );
    close(&c["cacheWrite"], 2000.0 * 6.0 / 1e6, "1-hour writes");
    close(&c["reasoning"], 4000.0 * 8.0 / 1e6, "reasoning");
    close(&c["unsplit"], 0.0, "every record is split");
    // Rates are answered to four places.
    let rate = |v: &Value, want: f64, what: &str| {
        let got = v.as_f64().unwrap();
        assert!(
            (got - want).abs() <= 0.5e-4,
            "{what}: got {got}, want {want}"
        );
    };
    rate(&sum["cacheHitRate"], 10000.0 / 13150.0, "hit rate");
    let models = report["models"].as_array().unwrap();
    let sonnet_row = models
        .iter()
        .find(|m| m["model"] == "claude-sonnet-4-5")
        .unwrap();
    rate(
        &sonnet_row["cacheHitRate"],
        10000.0 / 12050.0,
        "sonnet hit rate",
    );
    close(&sonnet_row["costUsd"], sonnet, "sonnet cost");
    assert_eq!(sonnet_row["priced"], true);
    // Kinds that do not fit their figure are refused, with the reason.
    for (bad, says) in [
        (
            json!({"endpoint": "/x", "promptTokens": 10, "cachedPromptTokens": 8, "cacheWriteTokens": 3}),
            "at most promptTokens",
        ),
        (
            json!({"endpoint": "/x", "completionTokens": 10, "reasoningTokens": 11}),
            "reasoning is part of the completion",
        ),
        (
            json!({"endpoint": "/x", "promptTokens": 10, "cacheWriteTokens": 5, "cacheWriteTtl": "1d"}),
            "cacheWriteTtl",
        ),
    ] {
        let r = s.tenant(&key, "POST", "/api/v1/usage", Some(json!([bad])));
        assert_eq!(r.status(), 422);
        let text = r.text().unwrap();
        assert!(text.contains(says), "{text}");
    }
}

fn admin_import(s: &TestServer, tenant: &str, body: String) -> Value {
    let r = s
        .http
        .post(s.url(&format!("/api/admin/tenants/{tenant}/import")))
        .bearer_auth(common::ADMIN)
        .header("Content-Type", "application/x-ndjson")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().unwrap()
}

fn costs(s: &TestServer, tenant: &str) -> Vec<f64> {
    let text = s
        .http
        .get(s.url(&format!(
            "/api/admin/tenants/{tenant}/api-usage/export?format=ndjson&from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z"
        )))
        .bearer_auth(common::ADMIN)
        .send()
        .unwrap()
        .text()
        .unwrap();
    let mut out: Vec<(String, f64)> = text
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["timestamp"].as_str().unwrap().to_string(),
                v["costUsd"].as_f64().unwrap(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out.into_iter().map(|(_, c)| c).collect()
}

/// A price change takes effect on its date: each record is priced with
/// the price of its own time, a record imported without its cost is
/// priced the same way, and adding a later price changes no history.
#[test]
fn prices_change_on_their_date_and_history_prices_the_same() {
    use chrono::{Duration, Utc};
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("prices.json");
    let today = Utc::now().date_naive();
    let change = today - Duration::days(2);
    let write_table = |later: bool| {
        let mut entries = vec![
            json!({"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}),
            json!({"input_cost_per_token": 4e-6, "output_cost_per_token": 8e-6,
                   "effectiveFrom": change.to_string()}),
        ];
        if later {
            entries.push(
                json!({"input_cost_per_token": 4e-5, "output_cost_per_token": 8e-5,
                "effectiveFrom": (today + Duration::days(1)).to_string()}),
            );
        }
        std::fs::write(&table, json!({"m-dated": entries}).to_string()).unwrap();
    };
    write_table(false);
    let path = table.display().to_string();
    let tune = move |c: &mut tollgate::config::Config| c.prices = path.clone();
    let mut s = TestServer::start_with(tune.clone(), Arc::new(SystemClock));
    s.plan("open", None, None, None);
    let key = s.tenant_with_key("dated", "open");
    let at = |days: i64| (Utc::now() - Duration::days(days)).to_rfc3339();
    let r = s.tenant(
        &key,
        "POST",
        "/api/v1/usage",
        Some(json!([
            {"timestamp": at(3), "endpoint": "/v1/chat", "model": "m-dated", "promptTokens": 1000, "completionTokens": 1000},
            {"timestamp": at(1), "endpoint": "/v1/chat", "model": "m-dated", "promptTokens": 1000, "completionTokens": 1000}
        ])),
    );
    assert_eq!(r.status(), 202);
    // Three days ago: $1 + $2 per million; yesterday: $4 + $8.
    let want = vec![0.003, 0.012];
    wait_until(|| costs(&s, "dated").len() == 2);
    let close = |got: Vec<f64>| {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 0.5e-6, "got {got:?}, want {want:?}");
        }
    };
    close(costs(&s, "dated"));
    // The export without its costs, imported: priced at each record's time.
    let export = s
        .http
        .get(s.url("/api/admin/tenants/dated/api-usage/export?format=ndjson&from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z"))
        .bearer_auth(common::ADMIN)
        .send()
        .unwrap()
        .text()
        .unwrap();
    let costless: String = export
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().unwrap();
            o.retain(|k, _| !k.ends_with("CostUsd") && k != "costUsd");
            format!("{v}\n")
        })
        .collect();
    s.tenant_with_key("repriced", "open");
    assert_eq!(
        admin_import(&s, "repriced", costless.clone())["imported"],
        2
    );
    close(costs(&s, "repriced"));
    // A later price is added: the history stays as it was, and pricing it
    // again gives the same figures.
    write_table(true);
    s.restart_with(tune, Arc::new(SystemClock));
    close(costs(&s, "dated"));
    s.tenant_with_key("again", "open");
    assert_eq!(admin_import(&s, "again", costless)["imported"], 2);
    close(costs(&s, "again"));
}

/// A model the price table does not know stays visible: in the report
/// (marked unpriced, its tokens counted) and in `/metrics`.
#[test]
fn unknown_models_stay_visible() {
    let s = TestServer::start_with(|c| c.flush.checkpoint_ms = 50, Arc::new(SystemClock));
    s.plan("open", None, None, None);
    let key = s.tenant_with_key("tinkerer", "open");
    let r = s.tenant(
        &key,
        "POST",
        "/api/v1/usage",
        Some(json!([{"endpoint": "/v1/chat", "model": "my-own-model", "promptTokens": 70, "completionTokens": 30}])),
    );
    assert_eq!(r.status(), 202);
    let mut report = Value::Null;
    wait_until(|| {
        report = s
            .tenant(&key, "GET", "/api/billing/api-usage?range=day", None)
            .json()
            .unwrap();
        report["summary"]["totalRequests"] == 1
    });
    let row = &report["models"][0];
    assert_eq!(
        (
            &row["model"],
            &row["priced"],
            &row["promptTokens"],
            &row["costUsd"]
        ),
        (&json!("my-own-model"), &json!(false), &json!(70), &json!(0)),
        "{row}"
    );
    let metrics = s.metrics();
    assert!(
        metrics.contains("tollgate_unknown_model_records_total{model=\"my-own-model\"} 1"),
        "{metrics}"
    );
}
