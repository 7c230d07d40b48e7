//! Limits of SPEC §12: a name, a scope, a measure, a window and an amount.
//!
//! A plan's four fields of before (`monthlyCalls`, `monthlyTokens`,
//! `rateLimit`, `ingestRate`) are limits of this model under reserved
//! names ([`BUILT_IN`]); every other limit is a [`Limit`] in a plan's,
//! a tenant's or a key's `limits`.

use super::{CompactString, ModelError, MAX_COUNT};

/// Whose use a limit counts: the tenant's, or each key's, end user's,
/// bot's or model's of the tenant separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    Tenant,
    Key,
    User,
    Bot,
    Model,
}

/// What a limit counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Measure {
    /// Cost units, as a request's `cost`.
    Calls,
    Tokens,
    /// Micro-dollars, priced from the price table.
    SpendUsd,
    /// Requests being served at once.
    InFlight,
}

/// Over what time a limit counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Window {
    /// GCRA: `amount` per `per_seconds`, up to `burst` at once.
    Burst,
    Minute,
    Hour,
    /// A UTC day.
    Day,
    /// A calendar month in UTC.
    Month,
    /// A month from the tenant's billing day (1 to 28) at 00:00 UTC.
    BillingMonth,
    /// No window: requests in flight.
    None,
}

/// The longest limit name: it is held inline (a decision that names it
/// copies it without allocating).
pub const MAX_NAME: usize = 24;
/// Limits one plan, one tenant or one key may set.
pub const MAX_LIMITS: usize = 16;
/// The names of the plan fields of before, as `RateLimit-Policy` names them.
pub const BUILT_IN: [&str; 5] = ["month", "tokens", "burst", "ingest", "in-flight"];

/// One limit. `amount` in the measure's unit (micro-dollars for
/// [`Measure::SpendUsd`]); `None` is unlimited (a tenant's or a key's way
/// to lift a plan's limit of the same name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limit {
    pub name: CompactString,
    pub scope: Scope,
    pub measure: Measure,
    pub window: Window,
    pub amount: Option<u64>,
    /// [`Window::Burst`] only: the seconds `amount` is counted over, and
    /// how many may pass at once.
    pub per_seconds: u64,
    pub burst: u64,
}

impl Scope {
    pub const ALL: [Scope; 5] = [
        Scope::Tenant,
        Scope::Key,
        Scope::User,
        Scope::Bot,
        Scope::Model,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Tenant => "tenant",
            Scope::Key => "key",
            Scope::User => "user",
            Scope::Bot => "bot",
            Scope::Model => "model",
        }
    }
}

impl Measure {
    pub const ALL: [Measure; 4] = [
        Measure::Calls,
        Measure::Tokens,
        Measure::SpendUsd,
        Measure::InFlight,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Measure::Calls => "calls",
            Measure::Tokens => "tokens",
            Measure::SpendUsd => "spendUsd",
            Measure::InFlight => "inFlight",
        }
    }
}

impl Window {
    pub const ALL: [Window; 7] = [
        Window::Burst,
        Window::Minute,
        Window::Hour,
        Window::Day,
        Window::Month,
        Window::BillingMonth,
        Window::None,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Window::Burst => "burst",
            Window::Minute => "minute",
            Window::Hour => "hour",
            Window::Day => "day",
            Window::Month => "month",
            Window::BillingMonth => "billingMonth",
            Window::None => "none",
        }
    }
}

/// The value of `T::ALL` whose name is `s`.
pub fn parse_name<T: Copy>(all: &[T], name: impl Fn(T) -> &'static str, s: &str) -> Option<T> {
    all.iter().copied().find(|&v| name(v) == s)
}

/// `^[a-z0-9][a-z0-9_-]{0,23}$`
fn valid_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_NAME
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

impl Limit {
    /// A limit from its parts as the API and the plans file write them
    /// (`amount` in US dollars for `spendUsd`), or what is wrong with it
    /// (`check_limits` checks the rest).
    #[allow(clippy::too_many_arguments)]
    pub fn parse(
        name: &str,
        scope: &str,
        measure: &str,
        window: &str,
        amount: Option<f64>,
        per_seconds: Option<u64>,
        burst: Option<u64>,
    ) -> Result<Limit, String> {
        let unknown = |field: &str, v: &str, all: String| {
            format!("limit '{}': {field} {v:?} is not one of {all}", name)
        };
        let names = |v: Vec<&str>| v.join(", ");
        let scope = parse_name(&Scope::ALL, Scope::as_str, scope).ok_or_else(|| {
            unknown(
                "scope",
                scope,
                names(Scope::ALL.map(Scope::as_str).to_vec()),
            )
        })?;
        let measure = parse_name(&Measure::ALL, Measure::as_str, measure).ok_or_else(|| {
            unknown(
                "measure",
                measure,
                names(Measure::ALL.map(Measure::as_str).to_vec()),
            )
        })?;
        let window = parse_name(&Window::ALL, Window::as_str, window).ok_or_else(|| {
            unknown(
                "window",
                window,
                names(Window::ALL.map(Window::as_str).to_vec()),
            )
        })?;
        let amount = match amount {
            None => None,
            Some(a) if !a.is_finite() || a <= 0.0 => {
                return Err(format!(
                    "limit '{}': amount must be a number above 0 (or null for unlimited)",
                    name
                ))
            }
            Some(a) if measure == Measure::SpendUsd => Some((a * 1e6).round() as u64),
            Some(a) if a.fract() != 0.0 || a > super::MAX_COUNT as f64 => {
                return Err(format!(
                    "limit '{}': amount of {} must be a whole number up to {}",
                    name,
                    measure.as_str(),
                    super::MAX_COUNT
                ))
            }
            Some(a) => Some(a as u64),
        };
        Ok(Limit {
            name: name.into(),
            scope,
            measure,
            window,
            amount,
            per_seconds: per_seconds.unwrap_or(0),
            burst: burst.unwrap_or(0),
        })
    }

    /// A limit with no burst parameters.
    pub fn new(
        name: &str,
        scope: Scope,
        measure: Measure,
        window: Window,
        amount: Option<u64>,
    ) -> Limit {
        Limit {
            name: name.into(),
            scope,
            measure,
            window,
            amount,
            per_seconds: 0,
            burst: 0,
        }
    }

    /// The seconds a fixed window lasts (a month's: 31 days, its longest).
    pub fn window_secs(&self) -> u64 {
        match self.window {
            Window::Burst => self.per_seconds,
            Window::Minute => 60,
            Window::Hour => 3_600,
            Window::Day => 86_400,
            Window::Month | Window::BillingMonth => 31 * 86_400,
            Window::None => 0,
        }
    }

    /// Which of the plan's own fields this limit stands for, when it has a
    /// built-in name and that field's shape: `month` (calls a month),
    /// `tokens` (tokens a month) or `burst` (calls in a burst window), all
    /// the tenant's. A tenant's limit of that name replaces the field.
    pub fn plan_field(&self) -> Option<&'static str> {
        let shape = (self.scope, self.measure, self.window);
        match self.name.as_str() {
            "month" if shape == (Scope::Tenant, Measure::Calls, Window::Month) => Some("month"),
            "tokens" if shape == (Scope::Tenant, Measure::Tokens, Window::Month) => Some("tokens"),
            "burst" if shape == (Scope::Tenant, Measure::Calls, Window::Burst) => Some("burst"),
            _ => None,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::Invalid(format!("limit '{}': {m}", self.name)));
        if !valid_name(&self.name) {
            return Err(ModelError::Invalid(format!(
                "limit name {:?} must match ^[a-z0-9][a-z0-9_-]{{0,23}}$",
                self.name.as_str()
            )));
        }
        if BUILT_IN.contains(&self.name.as_str()) && self.plan_field().is_none() {
            return bad(format!(
                "the names {} are the plan's own fields (monthlyCalls, monthlyTokens, \
                 rateLimit, ingestRate, the in-flight cap): month, tokens and burst may \
                 only have those fields' shape (tenant calls a month, tenant tokens a month, \
                 tenant calls in a burst window); choose another name",
                BUILT_IN.join(", ")
            ));
        }
        if let Some(a) = self.amount {
            if a == 0 || a > MAX_COUNT {
                return bad(format!(
                    "amount must be above 0 and at most {MAX_COUNT} (or null for unlimited)"
                ));
            }
        }
        match (self.measure, self.window) {
            (Measure::InFlight, Window::None) => {}
            (Measure::InFlight, _) | (_, Window::None) => {
                return bad("inFlight goes with the window \"none\", and only it".into())
            }
            (Measure::Calls, Window::Burst) => {
                if self.per_seconds == 0 || self.per_seconds > 31 * 86_400 {
                    return bad("a burst window needs perSeconds from 1 to 2678400".into());
                }
                if self.burst == 0 || self.burst > MAX_COUNT {
                    return bad("a burst window needs burst of at least 1".into());
                }
                if let Some(requests) = self.amount {
                    let rate = super::RateLimit {
                        requests,
                        per_seconds: self.per_seconds,
                        burst: self.burst,
                    };
                    super::plan::check_rate(&self.name, "amount", &rate)?;
                }
            }
            (_, Window::Burst) => {
                return bad("the burst window counts calls; use minute for tokens or spend".into())
            }
            _ => {}
        }
        if self.window != Window::Burst && (self.per_seconds != 0 || self.burst != 0) {
            return bad("perSeconds and burst belong to the burst window".into());
        }
        Ok(())
    }
}

/// Checks a list of limits set in one place: each valid, at most
/// [`MAX_LIMITS`], names unique; `scopes`: those allowed there.
pub(crate) fn check_limits(limits: &[Limit], scopes: &[Scope]) -> Result<(), ModelError> {
    check_limits_where(limits, scopes, false)
}

/// [`check_limits`] for a tenant, whose limits may also replace its plan's
/// own fields (`month`, `tokens`, `burst`, in their shape).
pub(crate) fn check_tenant_limits(limits: &[Limit]) -> Result<(), ModelError> {
    check_limits_where(limits, &Scope::ALL, true)
}

fn check_limits_where(
    limits: &[Limit],
    scopes: &[Scope],
    plan_fields: bool,
) -> Result<(), ModelError> {
    if limits.len() > MAX_LIMITS {
        return Err(ModelError::Invalid(format!(
            "at most {MAX_LIMITS} limits in one place"
        )));
    }
    for (i, l) in limits.iter().enumerate() {
        if l.plan_field().is_some() && !plan_fields {
            return Err(ModelError::Invalid(format!(
                "limit '{}' is a plan's own field: set it as monthlyCalls, monthlyTokens or \
                 rateLimit (a tenant may replace it by this name)",
                l.name
            )));
        }
        l.validate()?;
        if !scopes.contains(&l.scope) {
            return Err(ModelError::Invalid(format!(
                "limit '{}': scope \"{}\" cannot be set here (allowed: {})",
                l.name,
                l.scope.as_str(),
                scopes
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if limits[..i].iter().any(|o| o.name == l.name) {
            return Err(ModelError::Invalid(format!(
                "limit name '{}' is used twice",
                l.name
            )));
        }
    }
    Ok(())
}

/// A tenant's billing day: 1 to 28 (so that every month has it).
pub(crate) fn check_billing_day(day: Option<u8>) -> Result<(), ModelError> {
    match day {
        Some(d) if !(1..=28).contains(&d) => Err(ModelError::Invalid(
            "billingDay must be from 1 to 28 (or null for the 1st)".into(),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked() {
        let ok = Limit::new(
            "daily-user",
            Scope::User,
            Measure::Tokens,
            Window::Day,
            Some(5),
        );
        assert!(check_limits(std::slice::from_ref(&ok), &Scope::ALL).is_ok());
        let mut bad = ok.clone();
        bad.name = "Month".into();
        assert!(bad.validate().is_err());
        bad.name = "month".into();
        assert!(bad.validate().is_err(), "a built-in name");
        bad.name = "x".repeat(25).into();
        assert!(bad.validate().is_err());
        let mut w = ok.clone();
        w.window = Window::None;
        assert!(w.validate().is_err());
        w.measure = Measure::InFlight;
        assert!(w.validate().is_ok());
        let mut b = ok.clone();
        b.window = Window::Burst;
        assert!(b.validate().is_err(), "tokens in a burst window");
        b.measure = Measure::Calls;
        assert!(b.validate().is_err(), "no perSeconds");
        b.per_seconds = 1;
        b.burst = 5;
        assert!(b.validate().is_ok());
        assert!(check_limits(&[ok.clone(), ok.clone()], &Scope::ALL).is_err());
        assert!(check_limits(&[ok], &[Scope::Key]).is_err());
        assert!(check_billing_day(Some(29)).is_err());
        assert!(check_billing_day(Some(28)).is_ok());
    }
}
