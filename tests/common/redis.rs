//! A throw-away Redis for tests: Debian's `redis-server` on a free loopback
//! port in a temporary directory, nothing persisted, killed with the
//! thread that started it (the parent-death signal). A missing Redis fails
//! the test (`scripts/test` installs it) - it never skips.
#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Redis {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Mutex<Option<Child>>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Redis {
    /// Starts a server and waits until it answers.
    pub fn start() -> Redis {
        assert!(
            std::path::Path::new("/usr/bin/redis-server").exists(),
            "redis-server is not installed: run scripts/test, which installs Debian's \
             redis-server package"
        );
        let r = Redis {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: Mutex::new(None),
        };
        r.launch();
        r
    }

    fn launch(&self) {
        let mut cmd = Command::new("/usr/bin/redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: only an async-signal-safe call between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        *self.child.lock().unwrap() = Some(cmd.spawn().expect("redis-server starts"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.try_cli(&["PING"]).as_deref() != Some("PONG") {
            assert!(Instant::now() < deadline, "redis-server never answered");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn try_cli(&self, args: &[&str]) -> Option<String> {
        let raw = if args.first() == Some(&"--raw") {
            "--raw"
        } else {
            "--no-raw"
        };
        let args = args.strip_prefix(&["--raw"]).unwrap_or(args);
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), raw])
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
            .map(|s| s.trim_matches('"').to_string())
    }

    /// One command through `redis-cli`: its answer, unquoted.
    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args).expect("redis-cli answers")
    }

    /// A field of a hash as a number (0 when absent).
    pub fn hget(&self, key: &str, field: &str) -> i64 {
        let v = self.cli(&["HGET", key, field]);
        v.trim_start_matches("(integer) ").parse().unwrap_or(0)
    }

    /// The sum of a hash's fields whose names start with `prefix`.
    pub fn field_sum(&self, key: &str, prefix: &str) -> i64 {
        let all = self.cli(&["--raw", "HGETALL", key]);
        let lines: Vec<&str> = all.lines().collect();
        lines
            .chunks(2)
            .filter(|kv| kv.len() == 2 && kv[0].starts_with(prefix))
            .map(|kv| kv[1].trim().parse::<i64>().unwrap_or(0))
            .sum()
    }

    /// What a tenant-period's hash counts as held by the instances whose
    /// member names start with `member` ("" for all): granted, less what
    /// they reported spent or gave back.
    pub fn holding(&self, key: &str, member: &str) -> i64 {
        let sum = |field: &str| self.field_sum(key, &format!("{field}:{member}"));
        sum("g") - sum("s") - sum("b")
    }

    fn signal(&self, sig: i32) {
        if let Some(c) = self.child.lock().unwrap().as_ref() {
            // SAFETY: a signal to our own child.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    /// Kills the server and starts an empty one on the same port (its
    /// data lost).
    pub fn restart_empty(&self) {
        self.resume();
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.launch();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.resume();
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A TCP relay to a Redis that a test can cut - every connection through it
/// closed, new ones refused - and restore: one instance cut off from Redis
/// while the others still reach it.
pub struct Relay {
    pub port: u16,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    conns: std::sync::Arc<Mutex<Vec<std::net::TcpStream>>>,
}

impl Relay {
    /// Relays 127.0.0.1:`port` (a free one) to 127.0.0.1:`target`.
    pub fn start(target: u16) -> Relay {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::Arc;
        let listener = TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
        let port = listener.local_addr().unwrap().port();
        let open = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<std::net::TcpStream>>> = Arc::default();
        let (o, c) = (open.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if !o.load(Ordering::SeqCst) {
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let pipe = |mut from: std::net::TcpStream, mut to: std::net::TcpStream| {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                };
                let mut held = c.lock().unwrap();
                held.push(client.try_clone().unwrap());
                held.push(server.try_clone().unwrap());
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                pipe(server, client);
            }
        });
        Relay { port, open, conns }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Closes every connection through the relay and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Relays again.
    pub fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}
