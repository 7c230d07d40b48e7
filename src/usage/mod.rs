//! The usage pipeline: records leave the request path through a bounded
//! queue ([`queue`]) and reach the store in batches ([`flusher`]).

pub mod flusher;
pub mod queue;
pub mod retention;
pub mod unrecorded;

use std::sync::Arc;

use crate::model::UsageRecord;
use crate::quota::TenantState;

/// A record on its way to the store, with the tenant it belongs to.
pub struct Queued {
    pub tenant: Arc<TenantState>,
    pub record: UsageRecord,
}
