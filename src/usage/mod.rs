//! The usage pipeline: records leave the request path through a bounded
//! queue ([`queue`]) and reach the store in batches ([`flusher`]); a
//! reported batch with record ids is written by its request, with its
//! claims (`http::api::tenant`).

pub(crate) mod flusher;
pub(crate) mod import;
pub(crate) mod key_use;
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

/// Told of each tenant whose reported usage a request wrote itself (a
/// batch with record ids, written with its claims), as the flusher's hook
/// sees the batches it writes: the alerts watch usage this way.
pub(crate) type UsageWatch = Arc<dyn Fn(&TenantState) + Send + Sync>;
