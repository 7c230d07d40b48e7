//! Closed-loop load on a decision, over gRPC or JSON, from the same tool so
//! that the two compare (`scripts/grpc-load.sh`; `ghz` is not installable
//! here). One tokio thread (like `wrk -t1`) keeps CONCURRENCY calls in
//! flight for SECONDS and prints the calls/s and latency percentiles.
//!
//!   cargo run --release --example grpc_loadgen -- MODE ADDR KEY SECONDS [CONCURRENCY] [CONNECTIONS]
//!
//! MODE: `rls` (Envoy's ShouldRateLimit, one `api_key` descriptor), `authz`
//! (Envoy's ext_authz Check) or `http` (`POST /api/v1/authorize` over
//! HTTP/1.1 keep-alive, CONCURRENCY connections). gRPC calls share
//! CONNECTIONS HTTP/2 connections (default 4), as Envoy's do.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tollgate::grpc::conn::Coalescing;
use tonic::transport::Channel;

struct Tally {
    ok: u64,
    errors: u64,
    latencies_us: Vec<u32>,
}

fn rls_request(key: &str) -> RateLimitRequest {
    RateLimitRequest {
        domain: "edge".into(),
        descriptors: vec![RateLimitDescriptor {
            entries: [
                ("api_key", key),
                ("endpoint", "/v1/search"),
                ("method", "POST"),
            ]
            .iter()
            .map(|(k, v)| Entry {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect(),
            limit: None,
            hits_addend: None,
        }],
        hits_addend: 1,
    }
}

fn check_request(key: &str) -> CheckRequest {
    CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "POST".into(),
                    path: "/v1/search".into(),
                    headers: HashMap::from([(
                        "authorization".to_string(),
                        format!("Bearer {key}"),
                    )]),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// One worker's loop: `call` until `until`, timing each.
async fn drive<F, Fut>(until: Instant, mut call: F) -> Tally
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut t = Tally {
        ok: 0,
        errors: 0,
        latencies_us: Vec::with_capacity(1 << 16),
    };
    while Instant::now() < until {
        let sent = Instant::now();
        if call().await {
            t.ok += 1;
            t.latencies_us.push(sent.elapsed().as_micros() as u32);
        } else {
            t.errors += 1;
        }
    }
    t
}

/// One HTTP/1.1 keep-alive connection posting `request` until `until`.
async fn http_worker(addr: String, request: Arc<Vec<u8>>, until: Instant) -> Tally {
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut line = String::new();
    let mut body = Vec::new();
    let read = &mut read;
    let write = &mut write;
    let line = &mut line;
    let body = &mut body;
    let mut t = Tally {
        ok: 0,
        errors: 0,
        latencies_us: Vec::with_capacity(1 << 16),
    };
    while Instant::now() < until {
        let sent = Instant::now();
        write.write_all(&request).await.unwrap();
        let mut length = 0usize;
        let mut status_ok = false;
        let mut first = true;
        loop {
            line.clear();
            if read.read_line(line).await.unwrap() == 0 {
                eprintln!("the server closed a connection");
                return t;
            }
            if first {
                status_ok = line.contains(" 200 ");
                first = false;
            } else if line == "\r\n" {
                break;
            } else if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        body.resize(length, 0);
        read.read_exact(body).await.unwrap();
        if status_ok {
            t.ok += 1;
            t.latencies_us.push(sent.elapsed().as_micros() as u32);
        } else {
            t.errors += 1;
        }
    }
    t
}

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() < 4 {
        eprintln!(
            "usage: grpc_loadgen rls|authz|http ADDR KEY SECONDS [CONCURRENCY] [CONNECTIONS]"
        );
        std::process::exit(2);
    }
    let (mode, addr, key) = (a[0].clone(), a[1].clone(), a[2].clone());
    let seconds: f64 = a[3].parse().unwrap();
    let concurrency: usize = a.get(4).and_then(|c| c.parse().ok()).unwrap_or(32);
    let connections: usize = a.get(5).and_then(|c| c.parse().ok()).unwrap_or(4);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tallies: Vec<Tally> = rt.block_on(async move {
        let mut channels = Vec::new();
        if mode != "http" {
            for _ in 0..connections.max(1) {
                let ch = Channel::from_shared(format!("http://{addr}"))
                    .unwrap()
                    .connect_with_connector(tower::service_fn(|uri: tonic::transport::Uri| {
                        let target = format!(
                            "{}:{}",
                            uri.host().unwrap_or("127.0.0.1"),
                            uri.port_u16().unwrap_or(80)
                        );
                        async move {
                            let s = tokio::net::TcpStream::connect(target).await?;
                            s.set_nodelay(true)?;
                            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(Coalescing(s)))
                        }
                    }))
                    .await
                    .unwrap();
                channels.push(ch);
            }
        }
        let body = r#"{"endpoint":"/v1/search"}"#;
        let http = Arc::new(
            format!(
                "POST /api/v1/authorize HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        );
        let until = Instant::now() + Duration::from_secs_f64(seconds);
        let mut tasks = Vec::new();
        for i in 0..concurrency {
            let key = key.clone();
            let task = match mode.as_str() {
                "rls" => {
                    let c = RateLimitServiceClient::new(channels[i % channels.len()].clone());
                    let req = rls_request(&key);
                    tokio::spawn(async move {
                        drive(until, || {
                            let mut c = c.clone();
                            let req = req.clone();
                            async move {
                                c.should_rate_limit(req)
                                    .await
                                    .is_ok_and(|r| r.into_inner().overall_code == 1)
                            }
                        })
                        .await
                    })
                }
                "authz" => {
                    let c = AuthorizationClient::new(channels[i % channels.len()].clone());
                    let req = check_request(&key);
                    tokio::spawn(async move {
                        drive(until, || {
                            let mut c = c.clone();
                            let req = req.clone();
                            async move {
                                c.check(req).await.is_ok_and(|r| {
                                    r.into_inner().status.is_some_and(|s| s.code == 0)
                                })
                            }
                        })
                        .await
                    })
                }
                "http" => tokio::spawn(http_worker(addr.clone(), http.clone(), until)),
                other => panic!("unknown mode {other}"),
            };
            tasks.push(task);
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    let ok: u64 = tallies.iter().map(|t| t.ok).sum();
    let errors: u64 = tallies.iter().map(|t| t.errors).sum();
    let mut lat: Vec<u32> = tallies.into_iter().flat_map(|t| t.latencies_us).collect();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "{:.0} calls/s  errors {errors}  p50 {} us  p99 {} us",
        ok as f64 / seconds,
        pct(0.50),
        pct(0.99)
    );
}
