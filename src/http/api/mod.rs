//! The API's routes: enforcement and ingest (`tenant.rs`), the admin
//! catalog (`admin.rs`), analytics (`analytics.rs`, `export.rs`,
//! `report.rs`), `/metrics`, the chat bot and its upstream (`chat.rs`),
//! and their bodies (`types.rs`, `catalog.rs`, `batch.rs`).

pub mod admin;
pub mod analytics;
pub mod batch;
pub mod catalog;
pub mod chat;
pub mod export;
pub mod metrics;
pub mod report;
pub mod tenant;
pub mod types;
