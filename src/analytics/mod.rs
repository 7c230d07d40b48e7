//! Usage analytics: the answers of `/api/billing/api-usage`, computed from
//! rollup cells ([`crate::rollup`]), never from raw records ([`query`],
//! [`forecast`]).

pub mod forecast;
pub mod query;
