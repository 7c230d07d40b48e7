//! The baseline for `scripts/load.sh`: a bare actix-web server (same crate
//! version, same features, same worker count) whose `POST /api/v1/authorize`
//! reads the request body and returns a fixed body the size of Tollgate's answer.
//! With `headers` as its third argument it also sends, fixed, the six
//! headers Tollgate's answer carries (the same bytes on the wire): what the
//! headers cost the client and the kernel, apart from what Tollgate does.
//!
//!   cargo run --release --example bare_actix -- 127.0.0.1:18181 [workers] [headers]

use actix_web::{web, App, HttpResponse, HttpServer};

const BODY: &str = r#"{"allowed":true,"limit":100000000000000,"used":1,"remaining":99999999999999,"resetAt":"2027-01-01T00:00:00.000Z","plan":"bench"}"#;

/// The headers of Tollgate's answer to `scripts/load.sh`'s request.
const HEADERS: [(&str, &str); 6] = [
    ("x-ratelimit-reset", "2027-01-01T00:00:00.000Z"),
    ("x-ratelimit-limit", "100000000000000"),
    ("x-ratelimit-remaining", "99999999999999"),
    (
        "ratelimit",
        "\"month\";r=99999999999999;t=2406989, \"burst\";r=999999999;t=1",
    ),
    ("x-request-id", "3f8830180359625a"),
    (
        "ratelimit-policy",
        "\"month\";q=100000000000000;w=2678400, \"burst\";q=1000000000;w=1",
    ),
];

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let bind = args.next().unwrap_or_else(|| "127.0.0.1:18181".into());
    let workers: usize = args.next().and_then(|w| w.parse().ok()).unwrap_or(2);
    let headers = args.next().is_some_and(|a| a == "headers");
    HttpServer::new(move || {
        App::new().route(
            "/api/v1/authorize",
            // The body is read (as Tollgate does): an unread body makes actix
            // close the connection after the answer.
            web::post().to(move |_body: web::Bytes| async move {
                let mut res = HttpResponse::Ok();
                res.content_type("application/json");
                if headers {
                    for h in HEADERS {
                        res.insert_header(h);
                    }
                }
                res.body(BODY)
            }),
        )
    })
    .workers(workers)
    .bind(bind)?
    .run()
    .await
}
