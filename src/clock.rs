//! Time, passed in rather than read deep inside logic, and its one wire format.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};

use crate::quota::period::{Nanos, NANOS_PER_SEC};

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
            Ok(d) => d.as_nanos().min(i64::MAX as u128) as i64,
            Err(_) => 0,
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
        self.0.load(Ordering::SeqCst)
    }
}

pub fn nanos_to_utc(ns: Nanos) -> DateTime<Utc> {
    Utc.timestamp_opt(
        ns.div_euclid(NANOS_PER_SEC),
        ns.rem_euclid(NANOS_PER_SEC) as u32,
    )
    .single()
    .unwrap_or_default()
}

pub fn ms_to_utc(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

/// RFC 3339, UTC, milliseconds: `2026-12-01T00:00:00.000Z`.
pub fn fmt_ms(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// [`fmt_ms`] written into `w`, with no `String` of its own (the
/// rate-limit headers write it on the stack), for years 0 to 9999.
pub fn write_ms(w: &mut impl std::fmt::Write, t: DateTime<Utc>) -> std::fmt::Result {
    use chrono::{Datelike, Timelike};
    write!(
        w,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.timestamp_subsec_millis()
    )
}

/// Serde for `DateTime<Utc>` in the wire format above.
pub mod serde_ms {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
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

        pub fn serialize<S: Serializer>(
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
        ] {
            let mut written = String::new();
            write_ms(&mut written, t).unwrap();
            assert_eq!(written, fmt_ms(t));
        }
    }
}
