//! `deploy/tollgate.service` and `deploy/tollgate.env` as systemd would run
//! them: the unit's ExecStart, with the environment file's variables (the
//! data directory and the port moved to a temporary place), starts the real
//! binary, which answers `/healthz` and stops cleanly on the unit's
//! KillSignal within its TimeoutStopSec.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn directive<'a>(unit: &'a str, name: &str) -> Option<&'a str> {
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .map(str::trim)
}

#[test]
fn the_systemd_unit_starts_serves_and_stops_cleanly() {
    let root = env!("CARGO_MANIFEST_DIR");
    let unit = std::fs::read_to_string(format!("{root}/deploy/tollgate.service")).unwrap();
    let env_file = std::fs::read_to_string(format!("{root}/deploy/tollgate.env")).unwrap();
    for d in [
        "User",
        "Group",
        "EnvironmentFile",
        "StateDirectory",
        "Restart",
        "WorkingDirectory",
    ] {
        assert!(directive(&unit, d).is_some(), "the unit sets {d}");
    }
    assert_eq!(
        directive(&unit, "EnvironmentFile"),
        Some("/etc/tollgate/tollgate.env")
    );
    assert_eq!(directive(&unit, "KillSignal"), Some("SIGTERM"));
    let stop: u64 = directive(&unit, "TimeoutStopSec").unwrap().parse().unwrap();
    let state = format!("/var/lib/{}", directive(&unit, "StateDirectory").unwrap());
    assert_eq!(directive(&unit, "ReadWritePaths"), Some(state.as_str()));

    let dir = tempfile::tempdir().unwrap();
    let here = dir.path().to_str().unwrap();
    let exec = directive(&unit, "ExecStart").unwrap().replace(&state, here);
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/tollgate"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    cmd.args(words)
        .current_dir(here)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut vars = 0;
    for line in env_file.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line.split_once('=').expect("KEY=value");
        // A free port instead of the file's 8080.
        let v = if k == "TOLLGATE_BIND" {
            "127.0.0.1:0"
        } else {
            v
        };
        cmd.env(k, v);
        vars += 1;
    }
    assert!(
        vars >= 3,
        "the environment file sets the listener and the logs"
    );
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = loop {
        let line = lines.next().expect("the service started").unwrap();
        if let Some(addr) = line.strip_prefix("Tollgate listening on ") {
            break addr.trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let health = reqwest::blocking::get(format!("{base}/healthz")).unwrap();
    assert_eq!(health.status(), 200);
    // The admin token was generated into the state directory, private.
    let token = dir.path().join("admin-token");
    assert!(token.exists());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&token).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // systemd's stop: SIGTERM, then at most TimeoutStopSec.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(stop),
            "stopped within TimeoutStopSec"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "a clean stop: {status}");
}
