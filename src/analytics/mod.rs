//! Usage analytics: the answers of `/api/billing/api-usage`, computed from
//! rollup cells ([`crate::rollup`]) - for one API key's report, cells made
//! from its records ([`key_cells`]) - ([`query`],
//! [`forecast`] with the weekly [`rhythm`], [`anomaly`] over [`hours`]).

pub(crate) mod anomaly;
pub(crate) mod forecast;
pub(crate) mod hours;
pub mod insights;
pub mod key_cells;
pub mod query;
pub mod rhythm;
pub(crate) mod words;
