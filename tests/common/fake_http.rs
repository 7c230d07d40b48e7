//! A tiny HTTP/1.1 server on 127.0.0.1:0 for the tests' fake upstreams and
//! webhook receivers: one thread per connection, one request per
//! connection, every request kept for the test to inspect.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// Names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

pub struct FakeHttp {
    pub url: String,
    pub requests: Arc<Mutex<Vec<Request>>>,
}

impl FakeHttp {
    /// Serves with `respond(n, request, connection)`, `n` counting requests
    /// from 0; the handler writes the whole response.
    pub fn start(
        respond: impl Fn(usize, &Request, &mut TcpStream) + Send + Sync + 'static,
    ) -> FakeHttp {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let kept = requests.clone();
        let respond = Arc::new(respond);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let (kept, respond) = (kept.clone(), respond.clone());
                std::thread::spawn(move || {
                    let Some(req) = read_request(&mut conn) else {
                        return;
                    };
                    let n = {
                        let mut all = kept.lock().unwrap();
                        all.push(req.clone());
                        all.len() - 1
                    };
                    respond(n, &req, &mut conn);
                });
            }
        });
        FakeHttp { url, requests }
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    pub fn request(&self, n: usize) -> Request {
        self.requests.lock().unwrap()[n].clone()
    }
}

fn read_request(conn: &mut TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(conn.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split(' ');
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (name, value) = h.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let len = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        target,
        headers,
        body,
    })
}

/// Writes a whole response with a fixed length.
pub fn reply(conn: &mut TcpStream, status: u16, content_type: &str, body: &str) {
    let _ = write!(
        conn,
        "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.flush();
}

/// Starts a chunked response; send chunks with [`chunk`], end with [`end`].
pub fn start_chunked(conn: &mut TcpStream, status: u16, content_type: &str) {
    let _ = write!(
        conn,
        "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let _ = conn.flush();
}

pub fn chunk(conn: &mut TcpStream, data: &str) {
    let _ = write!(conn, "{:x}\r\n{data}\r\n", data.len());
    let _ = conn.flush();
}

pub fn end(conn: &mut TcpStream) {
    let _ = write!(conn, "0\r\n\r\n");
    let _ = conn.flush();
}
