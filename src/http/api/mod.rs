//! The API's routes: enforcement and ingest (`tenant.rs`), the admin
//! catalog (`admin.rs`), analytics (`analytics.rs`, `export.rs`,
//! `report.rs`), `/metrics`, the chat bot and its upstream (`chat.rs`),
//! and their bodies (`types.rs`, `catalog.rs`, `batch.rs`).

pub(crate) mod admin;
pub mod analytics;
pub(crate) mod backup;
pub mod batch;
pub(crate) mod catalog;
pub(crate) mod chat;
mod claimed;
pub(crate) mod export;
pub(crate) mod import;
pub(crate) mod limits;
pub(crate) mod metrics;
pub mod report;
pub(crate) mod tenant;
pub mod types;
