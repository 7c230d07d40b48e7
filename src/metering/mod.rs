//! What metering decides, in no transport's terms. The first piece of the
//! metering room (issue 38): [`Refusal`], the typed reason a metered
//! request is refused, which every edge (the HTTP API, the gateway,
//! forward-auth, ext_authz and the rate-limit service) maps exhaustively
//! to its wire. The rest of the metering path still lives in `http/meter.rs`.

mod refusal;

pub use refusal::Refusal;
