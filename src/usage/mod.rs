//! The usage pipeline: records leave the request path through a bounded
//! queue ([`queue`]) and reach the store in batches ([`flusher`]).

pub(crate) mod flusher;
pub mod queue;
pub(crate) mod retention;
pub(crate) mod unrecorded;

use std::sync::Arc;

use crate::model::UsageRecord;
use crate::quota::TenantState;

/// A record on its way to the store, with the tenant it belongs to.
pub struct Queued {
    pub tenant: Arc<TenantState>,
    pub record: UsageRecord,
}
