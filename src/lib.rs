//! Tollgate: meters every API request of a multi-tenant API business, enforces
//! each tenant's plan limits with standard rate-limit headers, tracks tokens
//! and cost, and answers usage analytics - one binary, no external database.
//!
//! # Layout
//!
//! - [`quota`]: the enforcement engine - calendar-month [`quota::period`]s,
//!   the packed [`quota::counter::PeriodCounter`], the [`quota::gcra`] burst
//!   limit, the [`quota::counters::Counters`] seam, leases of a shared
//!   quota ([`quota::lease`]), token reservations, and
//!   [`quota::TenantState::acquire`] (lock-free, allocation-free).
//! - [`metering`]: the one path of a metered request in no transport's
//!   terms - [`metering::Metering`] (what every edge shares), key → tenant,
//!   [`metering::Meter`] (decide, record, enqueue), [`metering::Refused`]
//!   (why not, which every edge maps exhaustively to its wire) and the
//!   rate-limit header values.
//! - [`registry`]: plans, tenants and keys; lock-free sharded lookup tables
//!   for the request path, a mutex-guarded catalog for admin writes;
//!   [`registry::follow`] follows another instance's changes.
//! - [`cluster`]: quotas shared by several instances through Redis (leases,
//!   the Lua script, the sync loop, the breaker, and a seeded simulation).
//! - [`usage`]: the bounded queue to the flusher thread, which writes records
//!   and period totals to the store in batches; history import (the
//!   export's formats read back, each record written once).
//! - [`rollup`]: pre-aggregated usage cells (minute, hour, day) and latency
//!   histograms, which the store keeps and the analytics read.
//! - [`store`]: persistence by concept - the engine traits, the
//!   engine-neutral [`store::Ledger`] (the [`store::Store`] over any engine:
//!   write numbering, rollup book, checkpoint, journal replay), the sled
//!   engine ([`store::sled`]), PostgreSQL ([`store::postgres`], with its
//!   local spool) and the in-memory reference ([`store::memory`]).
//! - [`analytics`]: usage, forecasts, insights and anomalies from rollup
//!   cells (domain values that [`http`] renders).
//! - The edges, each over [`metering`]: [`http`] (actix-web: the API's
//!   routes, extractors, bodies, JSON errors, rate-limit headers,
//!   reported usage counted once, forward-auth, the gateway and the chat
//!   upstream client) and [`grpc`]
//!   (tonic: Envoy's rate-limit and external-authorization services).
//! - [`alerts`]: threshold and anomaly alerts - what fires, the typed
//!   event, and its delivery through a channel (webhook, e-mail).
//! - [`model`]: domain types; [`auth`]: key hashing and the admin token;
//!   [`pricing`]: model prices and costs; [`geo`]: countries from client
//!   addresses; [`dashboard`]: the embedded pages; [`demo`]: `serve
//!   --demo`'s data; [`files`]: the private data directory; [`config`],
//!   [`clock`]; [`stack_text`]: text written on the stack;
//!   [`telemetry`]: per-thread slots, request metrics and event counters;
//!   [`alloc`]: the allocator's settings.
//! - [`app`]: wiring and graceful stop; [`signals`]: stop signals before
//!   serving; [`cli`]: the command line.

#![deny(unreachable_pub)]

pub(crate) mod alerts;
pub mod alloc;
pub mod analytics;
pub mod app;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub(crate) mod demo;
pub(crate) mod files;
pub(crate) mod geo;
pub mod grpc;
pub mod http;
pub mod metering;
pub mod model;
pub mod pricing;
pub mod quota;
pub mod registry;
pub mod rollup;
pub(crate) mod signals;
pub(crate) mod stack_text;
pub mod store;
pub mod telemetry;
pub mod usage;
