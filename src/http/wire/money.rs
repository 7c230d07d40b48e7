//! Amounts of money in the API's JSON and CSV: a plain decimal with at
//! most ten places and no trailing zeros - `0.00000345`, not `3.45e-6`,
//! and `0.003295`, not `0.0032949999999999998`.

use serde::{Serialize, Serializer};

/// The most decimals an amount keeps (a token of the cheapest model costs
/// about 1e-8 USD).
const PLACES: usize = 10;

/// `usd` as a plain decimal: at most ten places, trailing zeros dropped.
pub(crate) fn decimal(usd: f64) -> String {
    if !usd.is_finite() {
        return "0".into();
    }
    let mut s = format!("{usd:.PLACES$}");
    if s.contains('.') {
        while s.ends_with('0') {
            s.pop();
        }
        if s.ends_with('.') {
            s.pop();
        }
    }
    if s == "-0" {
        s = "0".into();
    }
    s
}

/// An amount that serialises as a JSON number in [`decimal`] form (when the
/// value itself is serialised: a `serde_json::Value` made of it holds a
/// float again).
#[derive(Clone, Copy, Debug, Default, PartialEq, PartialOrd)]
pub struct Money(pub f64);

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // A raw JSON number: serde_json is the API's only format (another
        // serializer would see serde_json's raw-value marker). `decimal`
        // always makes a valid number, so the float is only a fallback.
        match serde_json::value::RawValue::from_string(decimal(self.0)) {
            Ok(raw) => raw.serialize(s),
            Err(_) => s.serialize_f64(self.0),
        }
    }
}

impl utoipa::PartialSchema for Money {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        <f64 as utoipa::PartialSchema>::schema()
    }
}

impl utoipa::ToSchema for Money {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_plain_decimals() {
        assert_eq!(decimal(0.0032949999999999998), "0.003295");
        assert_eq!(decimal(3.45e-6), "0.00000345");
        assert_eq!(decimal(3.32), "3.32");
        assert_eq!(decimal(0.0), "0");
        assert_eq!(decimal(12.0), "12");
        assert_eq!(decimal(-0.0), "0");
        assert_eq!(decimal(1e-12), "0");
        assert_eq!(
            serde_json::to_string(&[Money(3.45e-6)]).unwrap(),
            "[0.00000345]"
        );
        let back: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&[Money(0.1 + 0.2), Money(2.5)]).unwrap())
                .unwrap();
        assert_eq!(back, serde_json::json!([0.3, 2.5]));
    }
}
