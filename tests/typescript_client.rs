//! The TypeScript client (`clients/typescript`): its node tests
//! (`node --test`, after `tsc` builds the ES module and CommonJS outputs)
//! against this build's real `tollgate` binary - checks and decisions,
//! batched usage, the Express middleware, the Next.js route handler and
//! edge middleware, failures and what they keep, typed answers, `npm
//! pack`, an install from the folder used from ESM and CommonJS (and their
//! TypeScript), and that the committed `dist/` is what `src/` builds to. `scripts/test`
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
    // The built files are committed (a folder install runs no build: npm
    // installs no devDependencies for it): they must be what the sources
    // build to, which `npm test` does first.
    let built = |dir: &Path| -> Vec<(String, Vec<u8>)> {
        let mut files = Vec::new();
        for sub in ["dist/esm", "dist/cjs"] {
            let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
                continue;
            };
            for e in entries.flatten() {
                let name = format!("{sub}/{}", e.file_name().to_string_lossy());
                files.push((name, std::fs::read(e.path()).unwrap()));
            }
        }
        files.sort();
        files
    };
    let committed = built(&dir);
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
    let names = |f: &[(String, Vec<u8>)]| f.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    let fresh = built(&dir);
    assert_eq!(names(&committed), names(&fresh), "clients/typescript/dist");
    for ((name, was), (_, now)) in committed.iter().zip(&fresh) {
        assert!(
            was == now,
            "clients/typescript/{name} is not what src/ builds to: run `npm run build` there and commit dist/"
        );
    }
}
