//! Why a metered request is refused.

use crate::quota::Outcome;

/// Why a metered request is refused: what each edge answers in its own
/// terms (an HTTP status and JSON error, a gRPC code, an Envoy status).
/// An edge matches on it without a catch-all arm, so that a new reason
/// cannot pass unmapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// No key was sent.
    MissingKey,
    /// The credential is not a bearer key (`Authorization: Basic …`).
    MalformedCredentials,
    /// The key is unknown or revoked.
    UnknownKey,
    /// The tenant is suspended.
    Suspended,
    /// The burst limit (requests per window).
    RateLimited,
    /// The monthly call quota is spent.
    QuotaExceeded,
    /// The monthly token quota is spent.
    TokenQuotaExceeded,
    /// The quota is shared through Redis, which cannot be reached, and
    /// this instance's lease is spent.
    ClusterUnavailable,
    /// The tenant has as many requests in flight as it may.
    TooManyInFlight,
}

impl Refusal {
    /// Every reason, for tables and tests that go through them all.
    pub const ALL: [Refusal; 9] = [
        Refusal::MissingKey,
        Refusal::MalformedCredentials,
        Refusal::UnknownKey,
        Refusal::Suspended,
        Refusal::RateLimited,
        Refusal::QuotaExceeded,
        Refusal::TokenQuotaExceeded,
        Refusal::ClusterUnavailable,
        Refusal::TooManyInFlight,
    ];

    /// The refusal a decision's outcome is, if it is one.
    pub fn of(outcome: Outcome) -> Option<Refusal> {
        match outcome {
            Outcome::Allowed => None,
            Outcome::Suspended => Some(Refusal::Suspended),
            Outcome::RateLimited => Some(Refusal::RateLimited),
            Outcome::QuotaExceeded => Some(Refusal::QuotaExceeded),
            Outcome::TokenQuotaExceeded => Some(Refusal::TokenQuotaExceeded),
            Outcome::ClusterUnavailable => Some(Refusal::ClusterUnavailable),
        }
    }

    /// The error code every edge names it by (docs/API.md).
    pub fn code(self) -> &'static str {
        match self {
            Refusal::MissingKey => "missing_api_key",
            Refusal::MalformedCredentials => "invalid_credentials",
            Refusal::UnknownKey => "invalid_api_key",
            Refusal::Suspended => "tenant_suspended",
            Refusal::RateLimited => "rate_limited",
            Refusal::QuotaExceeded => "quota_exceeded",
            Refusal::TokenQuotaExceeded => "token_quota_exceeded",
            Refusal::ClusterUnavailable => "cluster_unavailable",
            Refusal::TooManyInFlight => "too_many_in_flight",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusing_outcome_is_a_refusal_with_its_own_code() {
        assert_eq!(Refusal::of(Outcome::Allowed), None);
        let mut codes: Vec<&str> = Refusal::ALL.iter().map(|r| r.code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), Refusal::ALL.len());
        for o in [
            Outcome::Suspended,
            Outcome::RateLimited,
            Outcome::QuotaExceeded,
            Outcome::TokenQuotaExceeded,
            Outcome::ClusterUnavailable,
        ] {
            assert!(Refusal::of(o).is_some(), "{o:?}");
        }
    }
}
