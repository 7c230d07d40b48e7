//! The data directory is the operator's alone: usage records carry user ids
//! and metadata, and the admin token lives there. [`private_dir`] makes it
//! (or tightens it to) mode 0700 with files 0600, and the process's umask
//! is set to 077 so that what sled creates later is private too.

use std::path::Path;

/// Creates `dir` (and its parents) if needed, and makes it and everything
/// in it private: directories 0700, files 0600. Sets the umask to 077.
/// The `admin-token` file is left as it is: if others could read it, the
/// token may have leaked, and `AdminToken::load_or_create` refuses it.
pub(crate) fn private_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        // SAFETY: umask only sets the process's file-creation mask.
        unsafe {
            libc::umask(0o077);
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            tighten(&d, 0o700)?;
            for entry in std::fs::read_dir(&d)? {
                let entry = entry?;
                let kind = entry.file_type()?;
                if kind.is_dir() {
                    todo.push(entry.path());
                } else if kind.is_file() && entry.file_name() != "admin-token" {
                    tighten(&entry.path(), 0o600)?;
                }
            }
        }
        fn tighten(path: &Path, mode: u32) -> std::io::Result<()> {
            let current = std::fs::symlink_metadata(path)?.permissions().mode() & 0o777;
            if current & 0o077 != 0 {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
            }
            Ok(())
        }
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)?;
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    /// Regression (hostile tenant, finding 8): the data dir was 0755 and
    /// sled's files 0644, readable by every user of the machine.
    #[test]
    fn the_data_dir_and_its_files_become_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        std::fs::create_dir_all(dir.join("db")).unwrap();
        std::fs::write(dir.join("db/conf"), "x").unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(dir.join("db/conf"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("db")), 0o700);
        assert_eq!(mode(&dir.join("db/conf")), 0o600);
        let fresh = root.path().join("fresh/nested");
        private_dir(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);
        std::fs::write(fresh.join("later"), "y").unwrap();
        assert_eq!(mode(&fresh.join("later")), 0o600, "the umask is 077");
    }
}
