//! Time, passed in rather than read deep inside logic, and its one wire format.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};

/// Nanoseconds in a second.
pub(crate) const NANOS_PER_SEC: i64 = 1_000_000_000;

/// An instant in nanoseconds since the Unix epoch: what a clock reads and
/// a decision is made at. A type of its own, so that milliseconds cannot
/// pass for it ([`Millis`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Nanos(pub i64);

/// An instant in milliseconds since the Unix epoch: what a usage record,
/// a reservation's expiry and the analytics are timed in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millis(pub i64);

impl Nanos {
    /// The same instant in milliseconds (rounded down).
    #[inline]
    pub fn millis(self) -> Millis {
        Millis(self.0.div_euclid(1_000_000))
    }
}

/// An instant some nanoseconds later (a duration, in nanoseconds).
impl std::ops::Add<i64> for Nanos {
    type Output = Nanos;
    #[inline]
    fn add(self, ns: i64) -> Nanos {
        Nanos(self.0 + ns)
    }
}

/// An instant some nanoseconds earlier.
impl std::ops::Sub<i64> for Nanos {
    type Output = Nanos;
    #[inline]
    fn sub(self, ns: i64) -> Nanos {
        Nanos(self.0 - ns)
    }
}

/// The nanoseconds from one instant to another.
impl std::ops::Sub for Nanos {
    type Output = i64;
    #[inline]
    fn sub(self, earlier: Nanos) -> i64 {
        self.0 - earlier.0
    }
}

impl Millis {
    /// The same instant in nanoseconds (saturating).
    #[inline]
    pub fn nanos(self) -> Nanos {
        Nanos(self.0.saturating_mul(1_000_000))
    }
}

pub trait Clock: Send + Sync {
    fn now_nanos(&self) -> Nanos;

    fn now(&self) -> DateTime<Utc> {
        nanos_to_utc(self.now_nanos())
    }
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[inline]
    fn now_nanos(&self) -> Nanos {
        match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => Nanos(d.as_nanos().min(i64::MAX as u128) as i64),
            Err(_) => Nanos(0),
        }
    }
}

/// A clock that moves only when told (tests, the demo loader).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn at(t: DateTime<Utc>) -> ManualClock {
        ManualClock(AtomicI64::new(t.timestamp_nanos_opt().unwrap_or(0)))
    }
    pub fn set(&self, t: DateTime<Utc>) {
        self.0
            .store(t.timestamp_nanos_opt().unwrap_or(0), Ordering::SeqCst);
    }
    pub fn advance_ms(&self, ms: i64) {
        self.0.fetch_add(ms * 1_000_000, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_nanos(&self) -> Nanos {
        Nanos(self.0.load(Ordering::SeqCst))
    }
}

pub(crate) fn nanos_to_utc(ns: Nanos) -> DateTime<Utc> {
    Utc.timestamp_opt(
        ns.0.div_euclid(NANOS_PER_SEC),
        ns.0.rem_euclid(NANOS_PER_SEC) as u32,
    )
    .single()
    .unwrap_or_default()
}

pub(crate) fn ms_to_utc(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// RFC 3339, UTC, milliseconds: `2026-12-01T00:00:00.000Z`.
pub(crate) fn fmt_ms(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// [`fmt_ms`] rendered on the stack, with no `String` of its own (the
/// rate-limit headers and the authorize answer write it per request):
/// digits placed directly for years 0 to 9999, `core::fmt` only outside
/// them. Serializes as the string it holds.
#[derive(Clone, Copy)]
pub(crate) struct MsText {
    bytes: [u8; 32],
    len: u8,
}

impl MsText {
    pub(crate) fn of(t: DateTime<Utc>) -> MsText {
        use chrono::{Datelike, Timelike};
        let mut m = MsText {
            bytes: [0; 32],
            len: 0,
        };
        let year = t.year();
        if !(0..=9999).contains(&year) || t.nanosecond() >= 1_000_000_000 {
            // Outside 0-9999 (chrono's years reach 262,143: 27 bytes at
            // most), or a leap second: as chrono writes it.
            use std::fmt::Write;
            let _ = write!(m, "{}", fmt_ms(t));
            return m;
        }
        // Each field's digits, then the character after it.
        let fields = [
            (year as u32, 4, b'-'),
            (t.month(), 2, b'-'),
            (t.day(), 2, b'T'),
            (t.hour(), 2, b':'),
            (t.minute(), 2, b':'),
            (t.second(), 2, b'.'),
            (t.timestamp_subsec_millis(), 3, b'Z'),
        ];
        let mut at = 0;
        for (mut v, digits, after) in fields {
            for i in (at..at + digits).rev() {
                m.bytes[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
            m.bytes[at + digits] = after;
            at += digits + 1;
        }
        m.len = at as u8;
        m
    }

    pub(crate) fn as_str(&self) -> &str {
        // Only ASCII digits and punctuation are ever written.
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }
}

impl std::fmt::Write for MsText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let start = self.len as usize;
        let end = start + s.len();
        if end > self.bytes.len() {
            return Err(std::fmt::Error);
        }
        self.bytes[start..end].copy_from_slice(s.as_bytes());
        self.len = end as u8;
        Ok(())
    }
}

impl std::fmt::Debug for MsText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

impl serde::Serialize for MsText {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Serde for `DateTime<Utc>` in the wire format above.
pub mod serde_ms {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::fmt_ms(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }

    pub mod option {
        use super::*;

        pub(crate) fn serialize<S: Serializer>(
            t: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_some(&super::super::fmt_ms(*t)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|s| {
                    DateTime::parse_from_rfc3339(&s)
                        .map(|t| t.with_timezone(&Utc))
                        .map_err(serde::de::Error::custom)
                })
                .transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_change_unit_only_through_their_types() {
        let t = Nanos(1_795_000_000_123_456_789);
        assert_eq!(t.millis(), Millis(1_795_000_000_123));
        assert_eq!(t.millis().nanos(), Nanos(1_795_000_000_123_000_000));
        // Before the epoch a millisecond rounds down too.
        assert_eq!(Nanos(-1).millis(), Millis(-1));
        assert_eq!(Millis(i64::MAX).nanos(), Nanos(i64::MAX));
        assert_eq!((t + 1_000) - t, 1_000);
        assert_eq!(t - 1_000 + 1_000, t);
    }

    #[test]
    fn wire_format_has_milliseconds_and_z() {
        let t = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
        assert_eq!(fmt_ms(t), "2026-12-01T00:00:00.000Z");
        let c = ManualClock::at(t);
        c.advance_ms(1_500);
        assert_eq!(fmt_ms(c.now()), "2026-12-01T00:00:01.500Z");
        for t in [
            t,
            c.now(),
            Utc.with_ymd_and_hms(1999, 1, 9, 23, 5, 7).unwrap(),
            Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap()
                + chrono::Duration::milliseconds(999),
            Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(-1, 6, 30, 12, 0, 0).unwrap(),
            chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
                .unwrap()
                .and_hms_milli_opt(23, 59, 59, 1_500)
                .unwrap()
                .and_utc(),
        ] {
            assert_eq!(MsText::of(t).as_str(), fmt_ms(t));
        }
        // Every millisecond offset of a few seconds, and a spread of days.
        for ms in (0..3_000).chain((0..400).map(|d| d * 86_400_123)) {
            let t = ms_to_utc(1_764_547_200_000 + ms);
            assert_eq!(MsText::of(t).as_str(), fmt_ms(t));
        }
        let json = serde_json::to_string(&MsText::of(t)).unwrap();
        assert_eq!(json, "\"2026-12-01T00:00:00.000Z\"");
    }
}
