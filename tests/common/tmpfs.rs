//! A small tmpfs mounted over a temporary directory, for the tests that need
//! a real file system to fill up or turn read-only. Mounting needs root.
//! Without it, [`mount`] returns `None` and the test says SKIPPED - except
//! under `CI=true`, where CI runs as root and a test that cannot mount
//! fails: a test that skips itself there could never catch anything.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `12m`) on `dir`.
    pub fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "cannot mount a tmpfs on {} under CI=true (CI runs as root and must run this test)",
                dir.display()
            );
            eprintln!("SKIPPED: cannot mount a tmpfs here (not root?)");
        }
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }

    /// Remounts with other options (`size=512m`, `ro`).
    pub fn remount(&self, options: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.0)
            .status()
            .unwrap()
            .success();
        assert!(ok, "remount {options}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
