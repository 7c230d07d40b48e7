//! Usage analytics: rollup cells written with the records ([`rollup`]),
//! latency percentiles ([`histogram`]), and the answers of
//! `/api/billing/api-usage` computed from cells, never from raw records
//! ([`query`], [`forecast`]).

pub mod forecast;
pub mod histogram;
pub mod query;
pub mod rollup;
