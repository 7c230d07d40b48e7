//! [`Check`]: what the store knew it held, kept beside sled's files, so
//! that a damaged store refuses to start rather than starting silently
//! with data gone (issue 37, finding 6).
//!
//! After a flush returns (the data is on disk), the store notes - at most
//! once a second, in `tollgate-check` inside sled's directory, written
//! whole and renamed into place - the last usage write it had made
//! durable and whether it held plans and tenants. At the next open:
//!
//! - sled's main file (`db`) missing or empty while a note exists: the
//!   files were deleted or truncated (sled would start an empty store);
//! - the last usage write below the noted one, or no tenants (or plans)
//!   where some were noted: sled recovered an older state from a cut file.
//!
//! Either refuses to start with what is wrong and what to do, unless the
//! operator starts with `--recover` (`[store] recover`): then the store
//! opens on what is left, the loss is logged, and the note starts over.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::store::StoreError;

const FILE: &str = "tollgate-check";
/// Notes are written at most this often.
const EVERY: Duration = Duration::from_secs(1);

/// What the store last knew was on disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Held {
    /// The last usage write made durable.
    pub(crate) seq: u64,
    pub plans: bool,
    pub tenants: bool,
}

#[derive(Debug)]
pub(super) struct Check {
    path: PathBuf,
    last: Mutex<(Option<Instant>, Held)>,
}

impl Check {
    /// Before sled opens `dir`: the note, and whether sled's files are
    /// there to match it (refused unless `recover`).
    pub(super) fn before_open(
        dir: &Path,
        recover: bool,
    ) -> Result<(Check, Option<Held>), StoreError> {
        let path = dir.join(FILE);
        let held = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Held>(&b).ok());
        if let Some(h) = held {
            let main = dir.join("db");
            let size = std::fs::metadata(&main).map(|m| m.len()).unwrap_or(0);
            if size == 0 && (h.seq > 0 || h.tenants || h.plans) {
                let what = format!(
                    "the store's main file {} is missing or empty, but the store held {} (usage \
                     write {})",
                    main.display(),
                    held_text(&h),
                    h.seq
                );
                damaged(&what, recover)?;
            }
        }
        let check = Check {
            path,
            last: Mutex::new((None, held.unwrap_or_default())),
        };
        Ok((check, held))
    }

    /// After sled opened: what it holds against the note (refused unless
    /// `recover`; then the note starts over from what is there).
    pub(super) fn after_open(
        &self,
        noted: Option<Held>,
        now: Held,
        recover: bool,
    ) -> Result<(), StoreError> {
        if let Some(h) = noted {
            let lost_usage = now.seq < h.seq;
            let lost_catalog = (h.tenants && !now.tenants) || (h.plans && !now.plans);
            if lost_usage || lost_catalog {
                let what = format!(
                    "the store holds less than it did: usage writes up to {} of {} noted, and {} \
                     where it held {} - a file of it was cut short or replaced",
                    now.seq,
                    h.seq,
                    held_text(&now),
                    held_text(&h)
                );
                damaged(&what, recover)?;
            }
        }
        if recover || noted.is_none() {
            self.write(now);
        }
        Ok(())
    }

    /// The store made `held` durable: noted, at most once a second.
    pub(super) fn note(&self, held: Held) {
        {
            let mut last = self.last.lock();
            let due = last.0.is_none_or(|t| t.elapsed() >= EVERY);
            if !due || last.1 == held {
                return;
            }
            *last = (Some(Instant::now()), held);
        }
        self.write(held);
    }

    fn write(&self, held: Held) {
        let tmp = self.path.with_extension("tmp");
        let written = serde_json::to_vec(&held)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            tracing::debug!(error = %e, "cannot write the store's check file");
        }
    }
}

fn held_text(h: &Held) -> &'static str {
    match (h.plans, h.tenants) {
        (true, true) => "plans and tenants",
        (true, false) => "plans and no tenant",
        (false, true) => "tenants and no plan",
        (false, false) => "no plan and no tenant",
    }
}

/// Refuses to start, or (`recover`) says what was lost and goes on.
fn damaged(what: &str, recover: bool) -> Result<(), StoreError> {
    if recover {
        tracing::error!(
            "store damaged, started with --recover: {what}; what is missing is lost (restore the \
             data directory from a backup to get it back)"
        );
        return Ok(());
    }
    Err(StoreError::Damaged(format!(
        "{what}. Restore the data directory from a backup (stop Tollgate, copy the backup's \
         tollgate-data over it, start again), or start with --recover to run on what is left \
         (what was lost is logged)"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_is_kept_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let (c, noted) = Check::before_open(dir.path(), false).unwrap();
        assert_eq!(noted, None);
        let held = Held {
            seq: 9,
            plans: true,
            tenants: true,
        };
        c.after_open(None, Held::default(), false).unwrap();
        c.note(held);
        std::fs::write(dir.path().join("db"), b"x").unwrap();
        let (c, noted) = Check::before_open(dir.path(), false).unwrap();
        assert_eq!(noted, Some(held));
        assert!(c.after_open(noted, held, false).is_ok());
        let older = Held { seq: 3, ..held };
        let e = c.after_open(noted, older, false).unwrap_err();
        assert!(e.to_string().contains("--recover"), "{e}");
        assert!(c.after_open(noted, older, true).is_ok(), "recover goes on");
        std::fs::remove_file(dir.path().join("db")).unwrap();
        let (_, noted) = Check::before_open(dir.path(), true).unwrap();
        assert_eq!(noted, Some(older), "the note started over");
        assert!(
            Check::before_open(dir.path(), false).is_err(),
            "no main file"
        );
    }
}
