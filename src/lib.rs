//! Tollgate: meters every API request of a multi-tenant API business, enforces
//! each tenant's plan limits with standard rate-limit headers, tracks tokens
//! and cost, and answers usage analytics - one binary, no external database.
//!
//! # Layout
//!
//! - [`quota`]: the enforcement engine - calendar-month [`quota::period`]s,
//!   the packed [`quota::counter::PeriodCounter`], the [`quota::gcra`] burst
//!   limit, the [`quota::counters::Counters`] seam, and
//!   [`quota::TenantState::acquire`] (lock-free, allocation-free).
//! - [`registry`]: plans, tenants and keys; lock-free sharded lookup tables
//!   for the request path, a mutex-guarded catalog for admin writes.
//! - [`usage`]: the bounded queue to the flusher thread, which writes records
//!   and period totals to the store in batches.
//! - [`rollup`]: pre-aggregated usage cells (minute, hour, day) and latency
//!   histograms, which the store keeps and the analytics read.
//! - [`store`]: persistence by concept - the engine traits, the
//!   engine-neutral [`store::Ledger`] (the [`store::Store`] over any engine:
//!   write numbering, rollup book, checkpoint, journal replay), the sled
//!   engine ([`store::sled`]) and the in-memory reference ([`store::memory`]).
//! - [`analytics`]: usage and forecasts from rollup cells (domain values
//!   that [`http`] renders).
//! - [`http`]: everything that speaks HTTP and JSON - actix-web routes,
//!   extractors, the API's bodies, JSON errors, rate-limit headers, the
//!   gateway, the chat upstream client and the webhook deliveries.
//! - [`metering`]: [`metering::Refusal`], why a metered request is refused,
//!   which every edge maps to its wire.
//! - [`model`]: domain types; [`auth`]:
//!   key hashing and the admin token; [`pricing`]: model prices and costs;
//!   [`dashboard`]: the embedded usage page; [`demo`]: `serve --demo`'s data;
//!   [`files`]: the private data directory; [`config`], [`clock`];
//!   [`telemetry`]: per-thread slots, request metrics and event counters.
//! - [`alerts`]: what fires a threshold webhook; [`alloc`]: the allocator's settings.
//! - [`app`]: wiring and graceful stop; [`signals`]: stop signals before
//!   serving; [`cli`]: the command line.

pub mod alerts;
pub mod alloc;
pub mod analytics;
pub mod app;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod dashboard;
pub mod demo;
pub mod files;
pub mod geo;
pub mod grpc;
pub mod http;
pub mod metering;
pub mod model;
pub mod pricing;
pub mod quota;
pub mod registry;
pub mod rollup;
pub mod signals;
pub mod store;
pub mod telemetry;
pub mod usage;
