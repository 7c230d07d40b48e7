//! `tollgate backup` (through a running server) and `tollgate restore`
//! (into a stopped one's data directory).

use std::path::PathBuf;

use super::admin::Conn;
use crate::app::StartError;
use crate::config::Config;

#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// A backup's directory, as `tollgate backup` printed it (the one
    /// holding `db`).
    pub backup: PathBuf,
    /// Configuration file (TOML); every key also reads a TOLLGATE_* variable.
    #[arg(long, env = "TOLLGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory [default: the config's `data_dir`, TOLLGATE_DATA_DIR,
    /// else ./tollgate-data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// `tollgate backup`: asks the server for a consistent copy of its store.
pub fn backup(conn: Conn) -> Result<(), StartError> {
    super::admin::post(&conn, "/api/admin/backup")
}

/// `tollgate restore`: the data directory's store replaced by the backup's
/// (the replaced one kept beside it). The server must be stopped.
pub fn restore(args: RestoreArgs) -> Result<(), StartError> {
    let mut config = Config::load(args.config.as_deref(), std::env::vars())?;
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    let from = if args.backup.join("db").join("conf").exists() {
        args.backup.join("db")
    } else if args.backup.join("conf").exists() {
        args.backup.clone()
    } else {
        return Err(StartError::Refused(format!(
            "{} holds no backup (no db/conf in it): give the directory `tollgate backup` printed",
            args.backup.display()
        )));
    };
    let db = config.data_dir.join("db");
    if db.exists() && crate::store::sled::in_use(&db) {
        return Err(StartError::Refused(format!(
            "a Tollgate serves {}: stop it before restoring",
            config.data_dir.display()
        )));
    }
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let aside = config.data_dir.join(format!("db.before-restore-{stamp}"));
    if db.exists() {
        std::fs::rename(&db, &aside).map_err(|source| StartError::Io {
            context: format!("cannot set {} aside", db.display()),
            source,
        })?;
    } else {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::Io {
            context: format!("cannot make {}", config.data_dir.display()),
            source,
        })?;
    }
    let bytes = crate::store::sled::copy_tree(&from, &db).map_err(|source| StartError::Io {
        context: format!("cannot copy {} to {}", from.display(), db.display()),
        source,
    })?;
    println!(
        "restored {} ({bytes} bytes) into {}",
        from.display(),
        db.display()
    );
    if aside.exists() {
        println!("the store it replaced is kept as {}", aside.display());
    }
    Ok(())
}
