//! What Tollgate says about itself: per-thread slot numbers ([`slot`], also
//! the queue's lanes), the request path's metrics ([`metrics`]) and the
//! counters of rare events ([`stats`]), read by `/healthz` and `/metrics`.

pub(crate) mod metrics;
pub(crate) mod slot;
pub mod stats;
