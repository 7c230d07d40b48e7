//! `tollgate plans|tenants|keys`: the admin CLI against a real server
//! (the binary on a real socket and sled files): the token read from the
//! data directory's file as the server wrote it, each command's JSON
//! answer printed, the server's errors as messages with exit status 1,
//! and the key a created secret opens working at once.

#[path = "common/binary.rs"]
mod binary;

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Runs `tollgate <args>` against `base`, the token from `dir`: exit
/// success, stdout, stderr.
fn cli(base: &str, dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .args(["--url", base, "--data-dir"])
        .arg(dir)
        .env_remove("TOLLGATE_ADMIN_TOKEN")
        .env_remove("TOLLGATE_URL")
        .env_remove("TOLLGATE_DATA_DIR")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

#[test]
fn the_admin_cli_manages_plans_tenants_and_keys_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    // No admin token given: the server writes one into the data directory.
    let server = binary::start(dir.path(), &[], &[], None);
    let base = server.base.clone();
    let run = |args: &[&str]| cli(&base, dir.path(), args);

    let plan = dir.path().join("plan.json");
    std::fs::write(
        &plan,
        r#"{"id": "cli", "name": "CLI", "monthlyCalls": 2,
            "limits": [{"name": "per-user", "scope": "user", "measure": "calls", "window": "day", "amount": 5}]}"#,
    )
    .unwrap();
    let (ok, out, err) = run(&["plans", "create", plan.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(json(&out)["id"], "cli");
    let (ok, out, _) = run(&["plans", "list"]);
    assert!(ok);
    assert!(json(&out)["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["id"] == "cli"));

    let (ok, out, err) = run(&[
        "tenants", "create", "acme", "--plan", "cli", "--name", "Acme Inc",
    ]);
    assert!(ok, "{err}");
    assert_eq!(json(&out)["planId"], "cli");
    let (ok, out, err) = run(&["keys", "create", "acme", "--name", "web"]);
    assert!(ok, "{err}");
    let key = json(&out);
    let (secret, key_id) = (key["key"].as_str().unwrap(), key["id"].as_str().unwrap());
    // The secret works at once: the plan allows two calls.
    let http = reqwest::blocking::Client::new();
    let authorize = || {
        http.post(format!("{base}/api/v1/authorize"))
            .bearer_auth(secret)
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(authorize(), 200);
    let (ok, out, _) = run(&["tenants", "usage", "acme"]);
    assert!(ok);
    assert_eq!(json(&out)["calls"]["used"], 1);
    // Search by name, any case.
    let (ok, out, _) = run(&["tenants", "list", "--search", "ACME"]);
    assert!(ok);
    assert_eq!(json(&out)["data"].as_array().unwrap().len(), 1);
    let (ok, out, _) = run(&["tenants", "list", "--search", "nobody"]);
    assert!(ok);
    assert_eq!(json(&out)["data"].as_array().unwrap().len(), 0);
    // Suspended, the key is refused; resumed, it works again.
    assert!(run(&["tenants", "suspend", "acme"]).0);
    assert_eq!(authorize(), 403);
    assert!(run(&["tenants", "resume", "acme"]).0);
    assert_eq!(authorize(), 200);
    // Rotation with no overlap: the old secret stops, the new one works.
    let (ok, out, err) = run(&["keys", "rotate", "acme", key_id, "--overlap-seconds", "0"]);
    assert!(ok, "{err}");
    assert_ne!(json(&out)["key"].as_str().unwrap(), secret);
    assert_eq!(authorize(), 401);
    let (ok, out, _) = run(&["keys", "list", "acme"]);
    assert!(ok);
    assert_eq!(json(&out)["data"][0]["name"], "web");
    assert!(run(&["keys", "revoke", "acme", key_id]).0);

    // The server's errors, said in its words, exit 1.
    let (ok, _, err) = run(&["plans", "delete", "cli"]);
    assert!(!ok);
    assert!(err.contains("409"), "{err}");
    let (ok, _, err) = run(&["tenants", "show", "nobody"]);
    assert!(!ok);
    assert!(err.contains("404"), "{err}");
    // A delete that purges asks to be sure.
    let (ok, _, err) = run(&["tenants", "delete", "acme"]);
    assert!(!ok && err.contains("--yes"), "{err}");
    assert!(run(&["tenants", "delete", "acme", "--yes"]).0);
    // A wrong token is refused by the server; no server is said plainly.
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["plans", "list", "--url", &base, "--token", "wrong"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args([
            "plans",
            "list",
            "--url",
            "http://127.0.0.1:9",
            "--token",
            "x",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach Tollgate"));
}
