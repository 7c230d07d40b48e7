//! Open-loop load at a fixed rate for `scripts/load.sh`: sends
//! `POST /api/v1/authorize` at RATE requests/s over CONNS keep-alive
//! connections for SECONDS, and prints the latency percentiles. Requests are
//! scheduled on a fixed timetable, so a slow answer delays the measurement
//! of the ones behind it (no coordinated omission).
//!
//!   cargo run --release --example loadgen -- HOST:PORT KEY RATE SECONDS [CONNS] [PATH]
//!
//! PATH (default `/api/v1/authorize`) points it elsewhere - through an edge
//! proxy, say (`scripts/forward-auth-latency.sh`). `LOADGEN_BODY` replaces
//! the request's JSON body (a chat completion, for `scripts/gateway-load.sh`).
//! Chunked answers (a streamed completion) are read to their end; the
//! tokens they stream (`"delta":{"content"` events) are counted and given
//! per second of the run. RATE 0 sends each connection's next request as
//! soon as its last is answered (a closed loop: throughput, not latency).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let (addr, key) = (a[0].clone(), a[1].clone());
    let rate: f64 = a[2].parse().unwrap();
    let seconds: f64 = a[3].parse().unwrap();
    let conns: usize = a.get(4).and_then(|c| c.parse().ok()).unwrap_or(16);
    let path = a
        .get(5)
        .cloned()
        .unwrap_or_else(|| "/api/v1/authorize".into());
    let body =
        std::env::var("LOADGEN_BODY").unwrap_or_else(|_| r#"{"endpoint":"/v1/search"}"#.into());
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let start = Instant::now() + Duration::from_millis(200);
    let closed = rate == 0.0;
    let per_conn = rate / conns as f64;
    let total_per_conn = if closed {
        u64::MAX
    } else {
        (per_conn * seconds) as u64
    };
    let end = start + Duration::from_secs_f64(seconds);
    let handles: Vec<_> = (0..conns)
        .map(|c| {
            let (addr, request) = (addr.clone(), request.clone());
            std::thread::spawn(move || {
                let stream = TcpStream::connect(&addr).unwrap();
                stream.set_nodelay(true).unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                let mut lat = Vec::with_capacity(if closed {
                    1 << 16
                } else {
                    total_per_conn as usize
                });
                let offset = if closed {
                    Duration::ZERO
                } else {
                    Duration::from_secs_f64(c as f64 / rate)
                };
                let mut errors = 0u64;
                let mut tokens = 0u64;
                let mut b = Vec::new();
                for i in 0..total_per_conn {
                    let due = if closed {
                        Instant::now().max(start)
                    } else {
                        start + offset + Duration::from_secs_f64(i as f64 / per_conn)
                    };
                    if closed && due >= end {
                        break;
                    }
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    writer.write_all(request.as_bytes()).unwrap();
                    let mut line = String::new();
                    // The server closed the connection: stop, say so.
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        eprintln!("connection {c} closed by the server after {i} requests");
                        errors += total_per_conn - i;
                        break;
                    }
                    if !line.contains(" 200 ") {
                        errors += 1;
                    }
                    let (mut len, mut chunked) = (0usize, false);
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                            break;
                        }
                        let h = h.to_ascii_lowercase();
                        if let Some(v) = h.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap();
                        }
                        chunked |= h.starts_with("transfer-encoding:") && h.contains("chunked");
                    }
                    b.clear();
                    if chunked {
                        loop {
                            let mut size = String::new();
                            reader.read_line(&mut size).unwrap();
                            let n =
                                usize::from_str_radix(size.trim().split(';').next().unwrap(), 16)
                                    .unwrap();
                            let at = b.len();
                            b.resize(at + n + 2, 0);
                            reader.read_exact(&mut b[at..]).unwrap();
                            b.truncate(at + n);
                            if n == 0 {
                                break;
                            }
                        }
                    } else {
                        b.resize(len, 0);
                        reader.read_exact(&mut b).unwrap();
                    }
                    lat.push(Instant::now().duration_since(due).as_micros() as u64);
                    const TOKEN: &[u8] = b"\"delta\":{\"content\"";
                    tokens += b.windows(TOKEN.len()).filter(|w| *w == TOKEN).count() as u64;
                }
                (lat, errors, tokens)
            })
        })
        .collect();
    let mut all = Vec::new();
    let (mut errors, mut tokens) = (0, 0);
    for h in handles {
        let (l, e, t) = h.join().unwrap();
        all.extend(l);
        errors += e;
        tokens += t;
    }
    let wall = Instant::now().duration_since(start).as_secs_f64();
    all.sort_unstable();
    let p = |q: f64| {
        all[((q * all.len() as f64).ceil() as usize).clamp(1, all.len()) - 1] as f64 / 1000.0
    };
    let rate = if closed {
        all.len() as f64 / wall
    } else {
        rate
    };
    print!(
        "requests {} non-200 {} rate {:.0}/s  p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms",
        all.len(), errors, rate, p(0.50), p(0.90), p(0.99), p(0.999), p(1.0)
    );
    if tokens > 0 {
        print!("  tokens {tokens} ({:.0}/s)", tokens as f64 / wall);
    }
    println!();
}
