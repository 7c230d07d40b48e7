//! A minimal W3C WebDriver client over chromedriver and Debian's headless
//! Chromium (installed by `.ci/run`), enough to drive the dashboard.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::blocking::Client;
use serde_json::{json, Value};

pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: Client,
    _profile: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    pub fn start() -> Browser {
        let driver_bin =
            std::env::var("TOLLGATE_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let chrome_bin =
            std::env::var("TOLLGATE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let port = free_port();
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {driver_bin} ({e}): install Debian's chromium and chromium-driver (.ci/run does)"));
        let base = format!("http://127.0.0.1:{port}");
        let http = Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while http
            .get(format!("{base}/status"))
            .send()
            .map(|r| !r.status().is_success())
            .unwrap_or(true)
        {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {"binary": chrome_bin, "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1280,1000", format!("--user-data-dir={}", profile.path().display())]}
        }}});
        let r: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {r}"))
            .to_string();
        Browser {
            driver,
            base,
            session,
            http,
            _profile: profile,
        }
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{}", self.base, self.session, path);
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body.unwrap_or(json!({}))),
        };
        let v: Value = req.send().unwrap().json().unwrap();
        v["value"].clone()
    }

    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({"url": url})));
    }

    /// Runs `script` (a function body; `arguments` available) in the page.
    pub fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
    }

    /// The text of the element with `data-testid`, or null.
    pub fn text(&self, testid: &str) -> Value {
        self.js(
            "const e = document.querySelector('[data-testid=\"' + arguments[0] + '\"]'); return e ? e.textContent : null;",
            vec![json!(testid)],
        )
    }

    /// Clicks the element with `data-testid`. A page that re-renders (the
    /// console reloads its lists after every action) can replace the
    /// element between the find and the click: that click fails as stale,
    /// and is tried again on the element found anew.
    pub fn click(&self, testid: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let e = self.cmd(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": format!("[data-testid=\"{testid}\"]")})),
            );
            let id = e
                .as_object()
                .filter(|o| !o.contains_key("error"))
                .and_then(|o| o.values().next())
                .and_then(|v| v.as_str())
                .map(str::to_string);
            if let Some(id) = id {
                let r = self.cmd("POST", &format!("/element/{id}/click"), None);
                if r.get("error").is_none() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "cannot click {testid}: {e}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Polls `script` until it returns true (10 s).
    pub fn wait(&self, what: &str, script: &str) {
        self.wait_for(what, script, Duration::from_secs(15))
    }

    /// [`Browser::wait`] with a deadline of its own.
    pub fn wait_for(&self, what: &str, script: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.js(script, vec![]) == json!(true) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A Chrome DevTools command (chromedriver's `goog/cdp/execute`), such
    /// as `Emulation.setEmulatedMedia` to ask for dark mode.
    pub fn cdp(&self, command: &str, params: Value) -> Value {
        self.cmd(
            "POST",
            "/goog/cdp/execute",
            Some(json!({"cmd": command, "params": params})),
        )
    }

    pub fn resize(&self, width: u32, height: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        );
    }

    /// Console messages of level SEVERE since the last call.
    pub fn console_errors(&self) -> Vec<String> {
        let v = self.cmd("POST", "/se/log", Some(json!({"type": "browser"})));
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter(|e| e["level"] == "SEVERE")
                    .map(|e| e["message"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn screenshot(&self, path: &std::path::Path) {
        use base64_png::decode;
        let v = self.cmd("GET", "/screenshot", None);
        if let Some(b64) = v.as_str() {
            let _ = std::fs::write(path, decode(b64));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Base64 for screenshots, without a dependency.
mod base64_png {
    pub fn decode(s: &str) -> Vec<u8> {
        let val = |c: u8| match c {
            b'A'..=b'Z' => Some(c - b'A'),
            b'a'..=b'z' => Some(c - b'a' + 26),
            b'0'..=b'9' => Some(c - b'0' + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        };
        let bits: Vec<u8> = s.bytes().filter_map(val).collect();
        bits.chunks(4)
            .flat_map(|c| {
                let n = c.iter().fold(0u32, |a, v| (a << 6) | *v as u32) << (6 * (4 - c.len()));
                let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
                bytes[..c.len().saturating_sub(1)].to_vec()
            })
            .collect()
    }
}
