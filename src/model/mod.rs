//! Domain types: plans ([`plan`]), tenants and API keys ([`tenant`]), usage
//! records ([`record`]) and the tokens an answer reports ([`tokens`]).
//!
//! No JSON and no stored form here: the API's bodies are `http::api::catalog`
//! and `http::api::types`, each engine has rows of its own (sled's in
//! `store/sled/rows.rs`), so the API, the domain and the stored format
//! change independently.

pub use compact_str::CompactString;

mod limit;
mod plan;
mod record;
mod tenant;
mod tokens;

pub use limit::*;
pub use plan::*;
pub use record::*;
pub use tenant::*;
pub use tokens::*;

/// The largest limit or count a plan may name (2^48 - 1): what a period
/// counter holds (`quota::counter` checks that the two agree).
pub(crate) const MAX_COUNT: u64 = (1 << 48) - 1;

/// Why a plan or tenant definition is refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ModelError {
    #[error("{0} must match ^[a-z0-9][a-z0-9_-]{{0,63}}$")]
    BadId(&'static str),
    #[error("{0}")]
    Invalid(String),
}

/// Tenant and plan ids: `^[a-z0-9][a-z0-9_-]{0,63}$`.
pub(crate) fn valid_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(rate: Option<RateLimit>, ingest: Option<IngestRate>) -> Plan {
        Plan {
            id: "p".into(),
            name: "P".into(),
            monthly_calls: None,
            monthly_tokens: None,
            rate_limit: rate,
            price_usd_monthly: 0.0,
            ingest_rate: ingest,
            reserve_tokens: None,
            reservation_ttl_seconds: None,
            reserve_usd: None,
            limits: Vec::new(),
        }
    }

    /// Regression (hostile tenant): `{requests: 1, perSeconds: 2678400,
    /// burst: 10000}` overflowed the GCRA's capacity (a saturated u64), which
    /// disabled the burst limit; validation accepted it.
    #[test]
    fn rate_limits_the_gcra_cannot_represent_are_refused() {
        let rate = |requests, per_seconds, burst| {
            plan(
                Some(RateLimit {
                    requests,
                    per_seconds,
                    burst,
                }),
                None,
            )
            .validate()
        };
        assert!(rate(1, 2_678_400, 10_000).is_err());
        assert!(rate(1, 2_678_400, 1_000).is_ok());
        assert!(rate(5, 1, 10).is_ok());
        assert!(rate(0, 1, 10).is_err());
        let ingest = |records, burst| {
            plan(
                None,
                Some(IngestRate {
                    records,
                    per_seconds: 1,
                    burst,
                }),
            )
            .validate()
        };
        assert!(ingest(5_000, 10_000).is_ok());
        assert!(ingest(5_000, 100).is_err(), "a batch could never pass");
        assert!(ingest(10, 10).is_ok());
    }

    #[test]
    fn the_ingest_rate_is_derived_from_the_burst_limit() {
        let p = plan(
            Some(RateLimit {
                requests: 5,
                per_seconds: 1,
                burst: 10,
            }),
            None,
        );
        assert_eq!(
            p.effective_ingest_rate(),
            Some(IngestRate {
                records: 5_000,
                per_seconds: 1,
                burst: 10_000
            })
        );
        assert_eq!(plan(None, None).effective_ingest_rate(), None);
    }

    /// Regression (hostile tenant, finding 7): `prompt + completion` was
    /// added unchecked (2^63 + 2^63 gave 0 tokens and a 1.15e14 bill),
    /// u64::MAX pinned the month's counter, and a total alone cost $0.
    #[test]
    fn upstream_token_counts_are_capped_and_never_overflow() {
        let t = TokenCounts::from_upstream(1 << 63, 1 << 63, 0);
        assert_eq!(
            (t.prompt, t.completion, t.total, t.capped),
            (
                MAX_UPSTREAM_TOKENS,
                MAX_UPSTREAM_TOKENS,
                2 * MAX_UPSTREAM_TOKENS,
                true
            )
        );
        let t = TokenCounts::from_upstream(0, 0, u64::MAX);
        assert_eq!(
            (t.prompt, t.total),
            (MAX_UPSTREAM_TOKENS, MAX_UPSTREAM_TOKENS)
        );
        let t = TokenCounts::from_upstream(0, 0, 120);
        assert_eq!(
            (t.prompt, t.completion, t.total, t.capped),
            (120, 0, 120, false)
        );
        let t = TokenCounts::from_upstream(3, 5, 0);
        assert_eq!((t.prompt, t.completion, t.total), (3, 5, 8));
    }

    #[test]
    fn ids() {
        for ok in ["a", "acme", "0-x_y", &"a".repeat(64)] {
            assert!(valid_id(ok), "{ok}");
        }
        for bad in ["", "-a", "_a", "A", "a b", "a/b", "é", &"a".repeat(65)] {
            assert!(!valid_id(bad), "{bad}");
        }
    }
}
