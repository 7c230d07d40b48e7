//! The TypeScript client (`clients/typescript`): its node tests
//! (`node --test`, after `tsc` builds the ES module and CommonJS outputs)
//! against this build's real `tollgate` binary - checks and decisions,
//! batched usage, the Express middleware, the Next.js route handler and
//! edge middleware, and `require` of the CommonJS build. `scripts/test`
//! installs Node.js if it is missing and the package's one dev dependency
//! (TypeScript, `npm ci`); the test itself uses no network.

use std::path::Path;
use std::process::Command;

#[test]
fn the_typescript_client_passes_its_node_tests() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/typescript");
    assert!(
        dir.join("node_modules/typescript").exists(),
        "clients/typescript has no node_modules: run scripts/test (it runs npm ci there)"
    );
    let out = Command::new("npm")
        .arg("test")
        .current_dir(&dir)
        .env("TOLLGATE_BIN", env!("CARGO_BIN_EXE_tollgate"))
        .output()
        .expect("npm (scripts/test installs Node.js)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("# fail 0") && !text.contains("# pass 0"),
        "{text}"
    );
}
