//! The body of `POST /api/v1/usage`, read in one pass: a JSON record, a
//! JSON array of them, or NDJSON (one record per line). Each record is
//! deserialised straight into a [`UsageInput`] that borrows its strings from
//! the body and handed to the caller at once, so no `serde_json::Value`
//! and no second copy of the batch exists; NDJSON is parsed line by line as
//! the body arrives. An error names the record (`records[3]: ...`).

use std::fmt;

use actix_web::dev::Payload;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::types::UsageInput;
use crate::http::wire::error::ApiError;
use crate::http::wire::said;
use crate::model::MAX_BATCH_RECORDS;

/// Where a record is in its batch: `records[3]`, in NDJSON `records[3] (line 5)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub index: usize,
    pub line: Option<usize>,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "records[{}]", self.index)?;
        match self.line {
            Some(l) => write!(f, " (line {l})"),
            None => Ok(()),
        }
    }
}

/// What the caller does with each record: check it, keep what it needs.
/// The position is `None` for a body of one record.
pub trait Each<'de>: FnMut(Option<Position>, UsageInput<'de>) -> Result<(), ApiError> {}
impl<'de, F: FnMut(Option<Position>, UsageInput<'de>) -> Result<(), ApiError>> Each<'de> for F {}

fn too_many() -> ApiError {
    ApiError::invalid(format!(
        "at most {} records per request",
        crate::analytics::words::count(MAX_BATCH_RECORDS)
    ))
}

/// Parses a JSON body: one record (`Ok(false)`) or an array of them
/// (`Ok(true)`), each given to `each` in order. Malformed JSON is a 400,
/// a record of the wrong shape a 422 naming it.
pub fn json<'de>(body: &'de [u8], mut each: impl Each<'de>) -> Result<bool, ApiError> {
    let mut failed = None;
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = Body {
        each: &mut each,
        failed: &mut failed,
        body,
    }
    .deserialize(&mut de)
    .and_then(|batch| de.end().map(|()| batch));
    match parsed {
        Ok(batch) => Ok(batch),
        Err(e) if e.is_syntax() || e.is_eof() => {
            Err(ApiError::bad_json(format!("malformed JSON: {e}")))
        }
        // A record of the wrong shape, unless the JSON is broken further
        // on: malformed JSON anywhere is a 400, as for a whole-body parse
        // (checked again only on this error path).
        Err(e) => match serde_json::from_slice::<IgnoredAny>(body) {
            Err(s) if s.is_syntax() || s.is_eof() => {
                Err(ApiError::bad_json(format!("malformed JSON: {s}")))
            }
            _ => Err(failed.unwrap_or_else(|| ApiError::invalid(e.to_string()))),
        },
    }
}

/// How many records a JSON body holds (1 for an object, the length of an
/// array), by a scan that builds nothing; `None` when it is not valid JSON
/// of either shape (the full parse then says why).
pub fn count(body: &[u8]) -> Option<usize> {
    struct Count;
    impl<'de> Visitor<'de> for Count {
        type Value = usize;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object or an array")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<usize, A::Error> {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok(1)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
            let mut n = 0;
            while seq.next_element::<IgnoredAny>()?.is_some() {
                n += 1;
            }
            Ok(n)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let n = de.deserialize_any(Count).ok()?;
    de.end().ok()?;
    Some(n)
}

/// The top level: an object or an array, anything else refused.
struct Body<'a, F> {
    each: &'a mut F,
    failed: &'a mut Option<ApiError>,
    /// The whole body, read again (rarely) to say where a record is wrong.
    body: &'a [u8],
}

impl<'a, 'de, F: Each<'de>> DeserializeSeed<'de> for Body<'a, F> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'a, 'de, F: Each<'de>> Visitor<'de> for Body<'a, F> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("one usage record (an object) or an array of them")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<bool, A::Error> {
        let body = self.body;
        let input = UsageInput::deserialize(de::value::MapAccessDeserializer::new(map))
            .inspect_err(|e: &A::Error| {
                // Kept for the answer unless the JSON itself is broken.
                *self.failed = Some(ApiError::invalid(said::words_of::<UsageInput>(body, e)));
            })?;
        (self.each)(None, input).map_err(|e| stash(self.failed, e))?;
        Ok(false)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let mut i = 0;
        loop {
            if i as u64 == MAX_BATCH_RECORDS {
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    return Err(stash(self.failed, too_many()));
                }
                return Ok(true);
            }
            let at = Position {
                index: i,
                line: None,
            };
            match seq.next_element::<UsageInput<'de>>() {
                Ok(None) => return Ok(true),
                Ok(Some(input)) => {
                    (self.each)(Some(at), input).map_err(|e| stash(self.failed, e))?
                }
                Err(e) => {
                    // Kept for the answer unless the JSON itself is broken
                    // (then `json` answers 400 from the error's category).
                    let words = said::element_words::<UsageInput>(self.body, i, &e);
                    *self.failed = Some(ApiError::invalid(format!("{at}: {words}")));
                    return Err(e);
                }
            }
            i += 1;
        }
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        Err(self.refuse())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        Err(self.refuse())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        Err(self.refuse())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Err(self.refuse())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<bool, E> {
        Err(self.refuse())
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Err(self.refuse())
    }
}

impl<F> Body<'_, F> {
    fn refuse<E: de::Error>(self) -> E {
        stash(
            self.failed,
            ApiError::invalid("send one usage record (an object) or an array of them"),
        )
    }
}

/// Keeps `e` as the answer and stops the parse (its own error is not shown).
fn stash<E: de::Error>(failed: &mut Option<ApiError>, e: ApiError) -> E {
    *failed = Some(e);
    E::custom("refused")
}

/// Reads an NDJSON body as it arrives, with the caps of
/// [`crate::http::wire::extract::stream_body`]: each non-blank line is one record,
/// parsed when its newline (or the body's end) comes, so only the line
/// being received is buffered. Returns how many records there were.
pub async fn ndjson(
    payload: Payload,
    declared: Option<usize>,
    limit: usize,
    timeout: std::time::Duration,
    mut each: impl FnMut(Option<Position>, UsageInput<'_>) -> Result<(), ApiError>,
) -> Result<usize, ApiError> {
    let mut pending: Vec<u8> = Vec::new();
    let (mut line_no, mut records) = (0usize, 0usize);
    let mut line = |bytes: &[u8], line_no: usize, records: &mut usize| -> Result<(), ApiError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        if *records as u64 == MAX_BATCH_RECORDS {
            return Err(too_many());
        }
        let at = Position {
            index: *records,
            line: Some(line_no),
        };
        *records += 1;
        let input = serde_json::from_slice::<UsageInput>(bytes).map_err(|e| {
            if e.is_syntax() || e.is_eof() {
                ApiError::bad_json(format!("malformed JSON on line {line_no}: {e}"))
            } else {
                let words = said::words_of::<UsageInput>(bytes, &e);
                ApiError::invalid(format!("{at}: {words}"))
            }
        })?;
        each(Some(at), input)
    };
    crate::http::wire::extract::stream_body(payload, declared, limit, timeout, |mut rest| {
        while let Some(n) = memchr::memchr(b'\n', rest) {
            line_no += 1;
            if pending.is_empty() {
                line(&rest[..n], line_no, &mut records)?;
            } else {
                pending.extend_from_slice(&rest[..n]);
                line(&pending, line_no, &mut records)?;
                pending.clear();
            }
            rest = &rest[n + 1..];
        }
        pending.extend_from_slice(rest);
        Ok(())
    })
    .await?;
    if !pending.is_empty() {
        line(&pending, line_no + 1, &mut records)?;
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(body: &str) -> Result<(bool, Vec<String>), ApiError> {
        let mut seen = Vec::new();
        let batch = json(body.as_bytes(), |i, r: UsageInput<'_>| {
            assert_eq!(i.map_or(0, |p| p.index), seen.len());
            seen.push(r.endpoint.map(|e| e.into_owned()).unwrap_or_default());
            Ok(())
        })?;
        Ok((batch, seen))
    }

    #[test]
    fn one_record_an_array_and_borrowed_strings() {
        assert_eq!(
            endpoints(r#"{"endpoint":"/a"}"#).unwrap(),
            (false, vec!["/a".into()])
        );
        assert_eq!(
            endpoints(r#"[{"endpoint":"/a"}, {"endpoint":"/b\u00e9"}]"#).unwrap(),
            (true, vec!["/a".into(), "/bé".into()])
        );
        assert_eq!(endpoints("[]").unwrap(), (true, vec![]));
        // Strings without escapes are not copied.
        let body = br#"[{"endpoint":"/plain","method":"GET"}]"#;
        json(body, |_, r: UsageInput<'_>| {
            assert!(matches!(
                r.endpoint.unwrap().0,
                std::borrow::Cow::Borrowed(_)
            ));
            assert!(matches!(r.method.unwrap().0, std::borrow::Cow::Borrowed(_)));
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn counts_without_building_records() {
        assert_eq!(count(br#"{"endpoint":"/a"}"#), Some(1));
        assert_eq!(
            count(br#"[{"endpoint":"/a"},{"x":[1,{"y":2}]},3]"#),
            Some(3)
        );
        assert_eq!(count(b"[]"), Some(0));
        assert_eq!(count(b"[{"), None);
        assert_eq!(count(b"5"), None);
        assert_eq!(count(b"[] x"), None);
    }

    #[test]
    fn errors_name_the_record_and_tell_syntax_from_shape() {
        let e = endpoints(r#"[{"endpoint":"/a"}, {"endpoint":5}]"#).unwrap_err();
        assert_eq!(e.status.as_u16(), 422);
        assert_eq!(e.message, "records[1]: endpoint must be text, not 5");
        let e = endpoints(r#"[{"endpoint":"/a"}, {"nope":1}]"#).unwrap_err();
        assert!(
            e.message.starts_with("records[1]: unknown field `nope`"),
            "{}",
            e.message
        );
        let e = endpoints(r#"[{"endpoint":"/a"}, {"endpoint":"/b""#).unwrap_err();
        assert_eq!(e.status.as_u16(), 400, "{}", e.message);
        let e = endpoints(r#"{"endpoint":"/a"} x"#).unwrap_err();
        assert_eq!(e.status.as_u16(), 400, "{}", e.message);
        // Broken JSON after a record of the wrong shape is still a 400.
        let e = endpoints(r#"[{"endpoint":5}, {"#).unwrap_err();
        assert_eq!(e.status.as_u16(), 400, "{}", e.message);
        let e = endpoints(&"[".repeat(100_000)).unwrap_err();
        assert_eq!(e.status.as_u16(), 400, "{}", e.message);
        for body in ["5", "\"x\"", "null", "true", "[1]"] {
            let e = endpoints(body).unwrap_err();
            assert_eq!(e.status.as_u16(), 422, "{body}: {}", e.message);
        }
        let many = format!("[{}]", vec![r#"{"endpoint":"/a"}"#; 10_001].join(","));
        let e = endpoints(&many).unwrap_err();
        assert!(e.message.contains("at most 10,000"), "{}", e.message);
        let e = json(
            br#"[{"endpoint":"/a"},{"endpoint":"/b"}]"#,
            |i, _: UsageInput<'_>| {
                if i.is_some_and(|p| p.index == 1) {
                    Err(ApiError::invalid("records[1]: refused by the caller"))
                } else {
                    Ok(())
                }
            },
        )
        .unwrap_err();
        assert_eq!(e.message, "records[1]: refused by the caller");
    }
}
