//! The real `tollgate` binary as a child process, for the tests that stop,
//! kill and restart it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Proc {
    pub child: Child,
    pub base: String,
    /// What it printed up to "Tollgate listening on ...".
    pub stdout: Vec<String>,
    /// Everything it wrote to stderr, read continuously so a chatty log
    /// never fills the pipe.
    pub logs: Arc<Mutex<String>>,
}

/// Starts `tollgate serve` on `127.0.0.1:0` with `dir` as data directory and
/// waits until it is healthy. `admin` sets `TOLLGATE_ADMIN_TOKEN` (unset otherwise).
/// `TOLLGATE_TEST_BINARY` names another build to run (to show that a
/// regression test fails on the build before its fix).
/// Reads `child`'s stderr as it comes, into the returned text (the thread
/// ends with the stream).
pub fn collect_stderr(child: &mut Child) -> (Arc<Mutex<String>>, std::thread::JoinHandle<()>) {
    let logs: Arc<Mutex<String>> = Arc::default();
    let mut stderr = child.stderr.take().unwrap();
    let sink = logs.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    (logs, reader)
}

pub fn start(dir: &Path, args: &[&str], env: &[(&str, &str)], admin: Option<&str>) -> Proc {
    let binary = std::env::var_os("TOLLGATE_TEST_BINARY")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_tollgate").into());
    let mut cmd = Command::new(binary);
    cmd.args(["serve", "--bind", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .args(args)
        .env_remove("TOLLGATE_ADMIN_TOKEN")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(a) = admin {
        cmd.env("TOLLGATE_ADMIN_TOKEN", a);
    }
    let mut child = cmd.spawn().unwrap();
    let (logs, _) = collect_stderr(&mut child);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stdout = Vec::new();
    let base = loop {
        match lines.next() {
            Some(Ok(line)) => {
                stdout.push(line.clone());
                if let Some(addr) = line.strip_prefix("Tollgate listening on ") {
                    break addr.trim().to_string();
                }
            }
            _ => {
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                let err = logs.lock().unwrap().clone();
                panic!("the server did not start (a store that refuses to reopen after kill -9?): {err}");
            }
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let p = Proc {
        child,
        base,
        stdout,
        logs,
    };
    let client = reqwest::blocking::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client
        .get(p.url("/healthz"))
        .send()
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "the server never became healthy");
        std::thread::sleep(Duration::from_millis(10));
    }
    p
}

impl Proc {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends `sig` and waits for the exit.
    pub fn signal(&mut self, sig: i32) -> std::process::ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, sig) };
        self.child.wait().unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
