//! The sled engine's room: [`SledStore`] (`reopen.rs`), the resilience
//! wrapper that refuses writes short of a full disk and reopens a failed
//! database; `engine.rs`, `SledEngine`, the [`Store`](super::Store) on one
//! open sled 0.34 database with its keys, layout and format upgrade; and
//! `deadline.rs`, every sled flush on one worker thread with a deadline.
//! Nothing outside this room knows sled.

mod deadline;
mod engine;
mod reopen;

pub use deadline::within;
pub use reopen::{SledOptions, SledStore};
