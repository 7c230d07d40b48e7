//! The rate-limit headers of SPEC §6, rendered from a [`Decision`] for
//! every edge that shows them (HTTP responses, Envoy's headers).
//!
//! - `X-RateLimit-Limit/Remaining/Reset`: the monthly call quota (left out
//!   when unlimited), Reset as an RFC 3339 instant.
//! - `RateLimit-Policy` / `RateLimit` (draft-ietf-httpapi-ratelimit-headers):
//!   one item per active limit: `"month"` (calls), `"tokens"`, `"burst"`.
//! - `Retry-After` (seconds) on every refusal (never on a 2xx).

use std::fmt::Write;

use crate::clock::{nanos_to_utc, MsText, Nanos};
use crate::model::Window;
use crate::quota::scoped::View;
use crate::quota::{Decision, Outcome};
use crate::stack_text::StackText;

/// A header a decision is shown by (and the request id, which an edge
/// adds to the same buffer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Header {
    Limit,
    Remaining,
    Reset,
    Policy,
    RateLimit,
    RetryAfter,
    RequestId,
}

impl Header {
    /// The header's name, lower case.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Header::Limit => "x-ratelimit-limit",
            Header::Remaining => "x-ratelimit-remaining",
            Header::Reset => "x-ratelimit-reset",
            Header::Policy => "ratelimit-policy",
            Header::RateLimit => "ratelimit",
            Header::RetryAfter => "retry-after",
            Header::RequestId => "x-request-id",
        }
    }
}

/// Room for the longest set of values (three policies of 20-digit
/// numbers and a dozen named limits fit).
const ROOM: usize = 2048;

/// Every header value of an answer, in one buffer on the stack: no
/// allocation until an edge copies them out.
pub(crate) struct Values {
    buf: StackText<ROOM>,
    items: [(Header, usize, usize); 7],
    count: usize,
}

impl Values {
    pub(crate) fn empty() -> Values {
        Values {
            buf: StackText::new(),
            items: [(Header::RequestId, 0, 0); 7],
            count: 0,
        }
    }

    /// The headers of `d` and of the tenant's other limits (SPEC §12) the
    /// decision met (`views`): each named in `RateLimit-Policy` and
    /// `RateLimit`, and `X-RateLimit-*` showing whichever limit has the
    /// least left of it. `Retry-After` only when `success` is false and
    /// `d` refused (not on a 2xx, such as `POST /api/v1/check` saying a
    /// request would be refused).
    pub(crate) fn with_limits(d: &Decision, views: &[View], success: bool) -> Values {
        let mut v = Values::empty();
        let reset_secs = d.period_reset_secs();
        let window = d.period.length_secs().unsigned_abs(); // a period is never negative
        let month = d.calls_limit.zip(d.calls_remaining());
        let tokens = d.tokens_limit.zip(d.tokens_remaining());
        // The most constraining: the smallest share left.
        let share = |remaining: u64, limit: u64| remaining as f64 / limit.max(1) as f64;
        let tightest = views
            .iter()
            .filter(|l| l.window != Window::None)
            .min_by(|a, b| {
                share(a.remaining(), a.amount).total_cmp(&share(b.remaining(), b.amount))
            })
            .filter(|l| {
                month.is_none_or(|(lim, rem)| share(l.remaining(), l.amount) < share(rem, lim))
            });
        if let Some(l) = tightest {
            v.add(Header::Limit, |w| w.num(l.amount));
            v.add(Header::Remaining, |w| w.num(l.remaining()));
            let end = MsText::of(nanos_to_utc(Nanos(
                d.now.0.saturating_add(l.reset_ms.saturating_mul(1_000_000)),
            )));
            v.add(Header::Reset, |w| w.write_str(end.as_str()));
        } else if let Some((limit, remaining)) = month {
            v.add(Header::Limit, |w| w.num(limit));
            v.add(Header::Remaining, |w| w.num(remaining));
            let end = MsText::of(d.period.end());
            v.add(Header::Reset, |w| w.write_str(end.as_str()));
        }
        let policies = [
            month.map(|(limit, _)| ("month", limit, window)),
            tokens.map(|(limit, _)| ("tokens", limit, window)),
            d.burst.map(|b| ("burst", b.requests, b.per_seconds)),
        ];
        let states = [
            month.map(|(_, remaining)| ("month", remaining, reset_secs)),
            tokens.map(|(_, remaining)| ("tokens", remaining, reset_secs)),
            d.burst
                .map(|b| ("burst", b.remaining, b.reset_ns.div_ceil(1_000_000_000))),
        ];
        if policies.iter().any(Option::is_some) || !views.is_empty() {
            v.add(Header::Policy, |w| {
                let named = views
                    .iter()
                    .map(|l| (l.name.as_str(), l.amount, l.window_secs));
                items(w, ("q", "w"), policies.into_iter().flatten().chain(named))
            });
            v.add(Header::RateLimit, |w| {
                let named = views.iter().map(|l| {
                    (
                        l.name.as_str(),
                        l.remaining(),
                        (l.reset_ms.max(0) as u64).div_ceil(1_000),
                    )
                });
                items(w, ("r", "t"), states.into_iter().flatten().chain(named))
            });
        }
        if !success
            && matches!(
                d.outcome,
                Outcome::RateLimited
                    | Outcome::QuotaExceeded
                    | Outcome::TokenQuotaExceeded
                    | Outcome::ClusterUnavailable
                    | Outcome::BudgetExceeded
                    | Outcome::InFlightFull
            )
        {
            let secs = d.retry_after_secs();
            v.add(Header::RetryAfter, |w| w.num(secs));
        }
        v
    }

    /// Writes one value; a value that does not fit is left out whole.
    pub(crate) fn add(
        &mut self,
        header: Header,
        value: impl FnOnce(&mut StackText<ROOM>) -> std::fmt::Result,
    ) {
        let start = self.buf.len();
        if value(&mut self.buf).is_ok() && self.count < self.items.len() {
            self.items[self.count] = (header, start, self.buf.len());
            self.count += 1;
        } else {
            self.buf.truncate(start);
        }
    }

    /// Every value written, one after another (ASCII).
    pub(crate) fn text(&self) -> &[u8] {
        self.buf.text()
    }

    /// Each header with its value's range in [`text`](Self::text).
    pub(crate) fn items(&self) -> &[(Header, usize, usize)] {
        &self.items[..self.count]
    }

    /// Each header with its value.
    pub(crate) fn each(&self) -> impl Iterator<Item = (&'static str, &str)> {
        let text = self.text();
        self.items().iter().map(move |&(h, start, end)| {
            // The buffer holds only what `of` and `add` put there: ASCII.
            (
                h.name(),
                std::str::from_utf8(&text[start..end]).unwrap_or(""),
            )
        })
    }
}

/// The items of `RateLimit-Policy` or `RateLimit`, those present joined
/// by `, `: each `"name";k=v;k=v` with `keys` as its two parameters.
fn items<'a>(
    w: &mut StackText<ROOM>,
    keys: (&str, &str),
    items: impl Iterator<Item = (&'a str, u64, u64)>,
) -> std::fmt::Result {
    let mut sep = "";
    for (name, a, b) in items {
        for part in [sep, "\"", name, "\";", keys.0, "="] {
            w.write_str(part)?;
        }
        w.num(a)?;
        for part in [";", keys.1, "="] {
            w.write_str(part)?;
        }
        w.num(b)?;
        sep = ", ";
    }
    Ok(())
}
