//! Key → tenant: the tenant whose key a request presents, for every edge.

use std::sync::Arc;

use super::{Metering, Refusal, Refused};
use crate::model::CompactString;
use crate::quota::TenantState;
use crate::registry::KeyProblem;
use crate::telemetry::metrics::DecisionLabel;

impl Metering {
    /// The tenant whose key a request presents - `authorization` (`Bearer
    /// <key>`) or else `api_key` (`X-API-Key`), each the header's value -
    /// or why not (counted for `/metrics`); with it, the id of the key
    /// (held inline: no allocation).
    pub(crate) fn tenant_of(
        &self,
        authorization: Option<&str>,
        api_key: Option<&str>,
    ) -> Result<(Arc<TenantState>, CompactString), Refused> {
        let secret = match (authorization, api_key) {
            (Some(v), _) => v
                .strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
                .ok_or_else(|| {
                    self.unauthorized(
                        Refusal::MalformedCredentials,
                        "use Authorization: Bearer <key>",
                    )
                })?,
            (None, Some(v)) => v,
            (None, None) => {
                return Err(self.unauthorized(
                    Refusal::MissingKey,
                    "send your API key as Authorization: Bearer <key> or X-API-Key",
                ))
            }
        };
        let now_ms = self.clock.now_nanos().millis().0;
        self.registry
            .key_of(secret.trim(), now_ms)
            .map_err(|problem| match problem {
                KeyProblem::Unknown => {
                    self.unauthorized(Refusal::UnknownKey, "the API key is unknown or revoked")
                }
                KeyProblem::Expired => self.unauthorized(
                    Refusal::KeyExpired,
                    "the API key has expired: use a new key (or the secret it was rotated to)",
                ),
            })
    }

    /// A credential that cannot be used, counted for `/metrics`.
    pub fn unauthorized(&self, refusal: Refusal, message: &str) -> Refused {
        self.metrics.decision(DecisionLabel::Unauthorized);
        Refused::new(refusal, message)
    }
}
