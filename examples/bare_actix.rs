//! The baseline for `scripts/load.sh`: a bare actix-web server (same crate
//! version, same features, same worker count) whose `POST /api/v1/authorize`
//! reads the request body and returns a fixed body the size of Tollgate's answer.
//!
//!   cargo run --release --example bare_actix -- 127.0.0.1:18181 [workers]

use actix_web::{web, App, HttpResponse, HttpServer};

const BODY: &str = r#"{"allowed":true,"limit":100000000,"used":12345,"remaining":99987655,"resetAt":"2026-12-01T00:00:00.000Z","plan":"bench"}"#;

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let bind = args.next().unwrap_or_else(|| "127.0.0.1:18181".into());
    let workers: usize = args.next().and_then(|w| w.parse().ok()).unwrap_or(2);
    HttpServer::new(|| {
        App::new().route(
            "/api/v1/authorize",
            // The body is read (as Tollgate does): an unread body makes actix
            // close the connection after the answer.
            web::post().to(|_body: web::Bytes| async {
                HttpResponse::Ok()
                    .content_type("application/json")
                    .body(BODY)
            }),
        )
    })
    .workers(workers)
    .bind(bind)?
    .run()
    .await
}
