//! Numbers in the sentences the analytics write (insights, plan
//! recommendations): counts and dollars with thousands separators, as the
//! dashboard shows them.

/// `12,345`.
pub(crate) fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `$12,345.67`, `-$3.10`.
pub(crate) fn usd(x: f64) -> String {
    let cents = (x * 100.0).round() as i64;
    let (whole, frac) = (cents.unsigned_abs() / 100, cents.unsigned_abs() % 100);
    let sign = if cents < 0 { "-" } else { "" };
    format!("{sign}${}.{frac:02}", count(whole))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(12_000), "12,000");
        assert_eq!(count(u64::MAX), "18,446,744,073,709,551,615");
        assert_eq!(usd(1234567.891), "$1,234,567.89");
        assert_eq!(usd(0.004), "$0.00");
        assert_eq!(usd(-3.1), "-$3.10");
        assert_eq!(usd(49.0), "$49.00");
    }
}
