//! The upstream of `scripts/gateway-load.sh`: an OpenAI-compatible
//! `POST /v1/chat/completions` on actix-web that waits a fixed think time
//! and answers - as JSON with its `usage`, or, when the request asks
//! `"stream": true`, as server-sent events: CHUNKS chunks of one token each,
//! then the usage chunk and `data: [DONE]`, as OpenAI streams them with
//! `stream_options.include_usage`.
//!
//!   cargo run --release --example fake_llm -- 127.0.0.1:18190 [THINK_MS] [CHUNKS] [workers]

use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use bytes::Bytes;

const ANSWER: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1765000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"The answer is forty-two."},"finish_reason":"stop"}],"usage":{"prompt_tokens":24,"completion_tokens":8,"total_tokens":32}}"#;

/// One streamed token.
const CHUNK: &str = "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1765000000,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tok \"},\"finish_reason\":null}]}\n\n";

#[derive(Clone, Copy)]
struct Shape {
    think: Duration,
    chunks: usize,
}

async fn completions(shape: web::Data<Shape>, body: web::Bytes) -> HttpResponse {
    if !shape.think.is_zero() {
        actix_web::rt::time::sleep(shape.think).await;
    }
    let has = |n: &[u8]| body.windows(n.len()).any(|w| w == n);
    let stream = has(b"\"stream\":true") || has(b"\"stream\": true");
    if !stream {
        return HttpResponse::Ok()
            .content_type("application/json")
            .body(ANSWER);
    }
    let n = shape.chunks;
    let last = format!(
        "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1765000000,\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{{\"prompt_tokens\":24,\"completion_tokens\":{n},\"total_tokens\":{}}}}}\n\ndata: [DONE]\n\n",
        n + 24
    );
    // Sixteen tokens a write, as a provider's stream arrives in bursts.
    let body = futures_util::stream::iter(
        (0..n.div_ceil(16))
            .map(move |i| {
                let k = 16.min(n - i * 16);
                Ok::<_, actix_web::Error>(Bytes::from(CHUNK.repeat(k)))
            })
            .chain(std::iter::once(Ok(Bytes::from(last)))),
    );
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .streaming(body)
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let bind = args.next().unwrap_or_else(|| "127.0.0.1:18190".into());
    let think: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let chunks: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let workers: usize = args.next().and_then(|w| w.parse().ok()).unwrap_or(2);
    let shape = Shape {
        think: Duration::from_millis(think),
        chunks,
    };
    HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(shape))
            .route("/v1/chat/completions", web::post().to(completions))
    })
    .workers(workers)
    .bind(bind)?
    .run()
    .await
}
