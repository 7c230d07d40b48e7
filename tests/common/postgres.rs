//! A throw-away PostgreSQL cluster for tests: Debian's `initdb` and
//! `postgres` on a free loopback port under a temporary directory, as a
//! non-root user when the tests run as root (PostgreSQL refuses root),
//! one per test process, a fresh database per test. Nothing needs a
//! running service; a missing PostgreSQL fails the test (`scripts/test`
//! installs it) - it never skips.
//!
//! The server is started from a keeper thread that lives as long as the
//! process, with the parent-death signal set, so it goes when the test
//! process does, however that ends. Directories of earlier, dead test
//! processes are removed on the next start.
//!
//! Shared by the library's unit tests (`#[path]`) and the integration
//! tests (`tests/common`); it uses only std and libc.
#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

pub(crate) struct PgCluster {
    bin: PathBuf,
    root: PathBuf,
    pub port: u16,
    /// (uid, gid) the server runs as.
    user: Option<(u32, u32)>,
    /// Whether commits reach the disk (PostgreSQL's defaults, as served)
    /// or not (`fsync=off`, the tests' default: quicker, and a test's
    /// cluster dies with it anyway).
    durable: bool,
    server: Mutex<Option<Child>>,
}

static CLUSTER: OnceLock<PgCluster> = OnceLock::new();
static DATABASES: AtomicU64 = AtomicU64::new(0);

/// The process's cluster, started on first use.
pub(crate) fn cluster() -> &'static PgCluster {
    CLUSTER.get_or_init(|| PgCluster::start_new(false).unwrap_or_else(|e| panic!("{e}")))
}

/// A cluster of the test's own, to stop and start without disturbing
/// the other tests of its binary (stopped and removed when dropped).
pub(crate) fn own_cluster() -> PgCluster {
    PgCluster::start_new(false).unwrap_or_else(|e| panic!("{e}"))
}

/// A cluster of the test's own that commits to disk as a served
/// PostgreSQL does (`fsync` and full-page writes on): for measuring what
/// a transaction costs in production.
pub(crate) fn own_durable_cluster() -> PgCluster {
    PgCluster::start_new(true).unwrap_or_else(|e| panic!("{e}"))
}

/// A fresh, empty database on the process's cluster: its URL.
pub(crate) fn fresh_database() -> String {
    cluster().fresh_database()
}

/// The directory holding Debian's PostgreSQL programs (the newest version).
fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b)
}

/// The uid and gid of `name`.
fn user(name: &str) -> Option<(u32, u32)> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: getpwnam returns a pointer to static storage or null; it is
    // read at once, on this thread.
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    if pw.is_null() {
        return None;
    }
    // SAFETY: non-null, as checked.
    let pw = unsafe { &*pw };
    Some((pw.pw_uid, pw.pw_gid))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Runs `cmd` as `user` (when set), with SIGQUIT (PostgreSQL's immediate
/// shutdown) sent when the spawning thread - the keeper, which lives as
/// long as the process - dies.
fn as_user(cmd: &mut Command, user: Option<(u32, u32)>, tied: bool) {
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if let Some((uid, gid)) = user {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if tied && libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

type Spawn = (Command, Sender<std::io::Result<Child>>);

/// Spawns on the keeper thread (see the module's comment).
fn spawn_kept(cmd: Command) -> std::io::Result<Child> {
    static KEEPER: OnceLock<Mutex<Sender<Spawn>>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = channel::<Spawn>();
        std::thread::Builder::new()
            .name("pg-keeper".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("the keeper thread");
        Mutex::new(tx)
    });
    let (tx, rx) = channel();
    keeper
        .lock()
        .unwrap()
        .send((cmd, tx))
        .expect("the keeper is alive");
    rx.recv().expect("the keeper answers")
}

/// Removes the clusters of test processes that are gone.
fn sweep(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("tollgate-pg-"))
            .and_then(|p| p.split('-').next()?.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

impl PgCluster {
    fn start_new(durable: bool) -> Result<PgCluster, String> {
        let bin = bin_dir().ok_or(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): \
             run scripts/test, which installs Debian's postgresql package",
        )?;
        // SAFETY: geteuid has no preconditions.
        let root_user = unsafe { libc::geteuid() } == 0;
        let user = if root_user {
            Some(
                user("postgres")
                    .or_else(|| user("nobody"))
                    .ok_or("running as root, and neither user postgres nor nobody exists")?,
            )
        } else {
            None
        };
        let tmp = std::env::temp_dir();
        sweep(&tmp);
        // One directory per cluster: a test may start one of its own.
        static CLUSTERS: AtomicU64 = AtomicU64::new(0);
        let n = CLUSTERS.fetch_add(1, Ordering::Relaxed);
        let root = tmp.join(format!("tollgate-pg-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("sock")).map_err(|e| e.to_string())?;
        if let Some((uid, gid)) = user {
            for p in [root.clone(), root.join("sock")] {
                std::os::unix::fs::chown(&p, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
            }
        }
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .args(["-D"])
            .arg(root.join("data"))
            .args(["-U", "tollgate", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .args(["--locale=C"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        as_user(&mut initdb, user, false);
        let out = initdb.output().map_err(|e| format!("initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let cluster = PgCluster {
            bin,
            root,
            port: free_port(),
            user,
            durable,
            server: Mutex::new(None),
        };
        cluster.start()?;
        Ok(cluster)
    }

    /// Starts the server (again, after [`stop`](Self::stop)) and waits
    /// until it answers.
    pub(crate) fn start(&self) -> Result<(), String> {
        let mut server = self.server.lock().unwrap();
        if server.is_some() {
            return Ok(());
        }
        let mut cmd = Command::new(self.bin.join("postgres"));
        cmd.arg("-D")
            .arg(self.root.join("data"))
            .args(["-p", &self.port.to_string()])
            .arg("-k")
            .arg(self.root.join("sock"))
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "max_connections=300"])
            .args(if self.durable {
                ["-c", "fsync=on", "-c", "full_page_writes=on"]
            } else {
                ["-c", "fsync=off", "-c", "full_page_writes=off"]
            })
            .args(["-c", "shared_buffers=128MB"])
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(self.root.join("server.log"))
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            );
        as_user(&mut cmd, self.user, true);
        *server = Some(spawn_kept(cmd).map_err(|e| format!("postgres: {e}"))?);
        drop(server);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.psql("postgres", "SELECT 1").is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(self.root.join("server.log")).unwrap_or_default();
                return Err(format!("PostgreSQL did not start within 60 s: {log}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (a fast shutdown: connections are closed).
    pub(crate) fn stop(&self) {
        if let Some(mut child) = self.server.lock().unwrap().take() {
            // SAFETY: signalling our own child.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGINT);
            }
            let _ = child.wait();
        }
    }

    /// Runs one SQL command with `psql` on `database`; its output.
    pub(crate) fn psql(&self, database: &str, sql: &str) -> Result<String, String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args([
                "-U", "tollgate", "-d", database, "-X", "-q", "-A", "-t", "-v",
            ])
            .arg("ON_ERROR_STOP=1")
            .args(["-c", sql])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).to_string())
        }
    }

    pub(crate) fn url(&self, database: &str) -> String {
        format!("postgres://tollgate@127.0.0.1:{}/{database}", self.port)
    }

    /// A new empty database: its URL.
    pub(crate) fn fresh_database(&self) -> String {
        let n = DATABASES.fetch_add(1, Ordering::Relaxed);
        let name = format!("t{}_{n}", std::process::id());
        self.psql("postgres", &format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        self.url(&name)
    }
}
