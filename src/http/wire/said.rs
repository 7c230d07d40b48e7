//! A JSON body of the wrong shape, said in our words: the field it is
//! about, what it must be and what came - `cost must be a whole number (0
//! or more), not the text "x"` - where serde says `invalid type: string
//! "x", expected u64 at line 1 column 11`. The field's path comes from
//! `serde_path_to_error` (already in the tree under actix-web; it tracks
//! the path as serde descends, which serde_json's error does not keep).

use serde::de::Deserializer;
use serde::Deserialize;

/// Deserializes a `T` from `d`; a failure also comes in our words.
pub(crate) fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<T, (D::Error, String)> {
    serde_path_to_error::deserialize(d).map_err(|e| {
        let path = e.path().to_string();
        let words = words(&path, &e.inner().to_string());
        (e.into_inner(), words)
    })
}

/// A `T` from JSON already parsed (a body patched before it is read); a
/// failure in our words.
pub(crate) fn from_value<T: serde::de::DeserializeOwned>(
    v: serde_json::Value,
) -> Result<T, String> {
    deserialize(v).map_err(|(_, words)| words)
}

/// What is wrong with `body` as a `T`, in our words, after a plain read
/// failed with `failed` (said as it is, without its position, should the
/// second read not fail). Tracking the path allocates (a map key is kept
/// as a `String`), so a body is read this way only after a plain read
/// failed.
pub(crate) fn words_of<'de, T: Deserialize<'de>>(
    body: &'de [u8],
    failed: &dyn std::fmt::Display,
) -> String {
    let mut de = serde_json::Deserializer::from_slice(body);
    match deserialize::<T, _>(&mut de) {
        Err((_, words)) => words,
        Ok(_) => without_position(&failed.to_string()).into(),
    }
}

/// What is wrong with the record at `index` of a JSON array of `T`, in our
/// words, as [`words_of`] (`failed` also when the error is not that
/// record's shape).
pub(crate) fn element_words<'de, T: Deserialize<'de>>(
    body: &'de [u8],
    index: usize,
    failed: &dyn std::fmt::Display,
) -> String {
    let mut de = serde_json::Deserializer::from_slice(body);
    let words_there = |e: serde_path_to_error::Error<serde_json::Error>| {
        let path = e.path().to_string();
        let rest = path.strip_prefix(&format!("[{index}]"))?.to_string();
        Some(words(
            rest.strip_prefix('.').unwrap_or(""),
            &e.inner().to_string(),
        ))
    };
    serde_path_to_error::deserialize::<_, Vec<T>>(&mut de)
        .err()
        .and_then(words_there)
        .unwrap_or_else(|| without_position(&failed.to_string()).into())
}

/// serde's message `msg` about the value at `path` (`.` for the whole
/// body), in our words.
pub(crate) fn words(path: &str, msg: &str) -> String {
    let msg = without_position(msg);
    let field = (!path.is_empty() && path != ".").then_some(path);
    let what = field.unwrap_or("the body");
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some((got, want)) = msg
            .strip_prefix(prefix)
            .and_then(|rest| rest.split_once(", expected "))
        {
            return format!("{what} must be {}, not {}", expected(want), came(got));
        }
    }
    if let Some(name) = msg
        .strip_prefix("missing field `")
        .and_then(|r| r.strip_suffix('`'))
    {
        return match field {
            Some(p) => format!("{p}.{name} is required"),
            None => format!("{name} is required"),
        };
    }
    if let Some(rest) = msg.strip_prefix("invalid length ") {
        if let Some((got, want)) = rest.split_once(", expected ") {
            // A struct read as a list (serde allows it) is an object to us.
            if want.starts_with("struct ") {
                return format!("{what} must be an object");
            }
            return format!("{what} must hold {want}, not {got}");
        }
    }
    // Unknown fields and our own checks' messages: named by the field.
    match field {
        Some(p) if !msg.starts_with("unknown field") => format!("{p}: {msg}"),
        _ => msg.to_string(),
    }
}

/// `msg` without serde_json's ` at line 1 column 11`.
fn without_position(msg: &str) -> &str {
    match msg.rfind(" at line ") {
        Some(i)
            if msg[i + 9..]
                .split_once(" column ")
                .is_some_and(|(l, c)| is_number(l) && is_number(c)) =>
        {
            &msg[..i]
        }
        _ => msg,
    }
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// What serde expected, in words.
fn expected(want: &str) -> String {
    match want {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number (0 or more)".into(),
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number".into(),
        "f32" | "f64" => "a number".into(),
        "a string" | "a borrowed string" | "string" => "text".into(),
        "a boolean" | "bool" => "true or false".into(),
        "a sequence" => "a list".into(),
        "a map" => "an object".into(),
        w if w.starts_with("struct ") => "an object".into(),
        w => w.to_string(),
    }
}

/// What came instead, in words.
fn came(got: &str) -> String {
    let quoted = |s: &str| s.trim_matches('`').to_string();
    if let Some(s) = got.strip_prefix("string ") {
        return format!("the text {s}");
    }
    for prefix in ["integer ", "floating point ", "boolean "] {
        if let Some(v) = got.strip_prefix(prefix) {
            return quoted(v);
        }
    }
    match got {
        "map" => "an object".into(),
        "sequence" => "a list".into(),
        "unit value" | "null" => "null".into(),
        g => g.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        cost: Option<u64>,
        name: String,
        rate: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        per_seconds: u64,
    }

    fn said(body: &str) -> String {
        let mut de = serde_json::Deserializer::from_str(body);
        deserialize::<Body, _>(&mut de).unwrap_err().1
    }

    #[test]
    fn type_errors_name_the_field_in_plain_words() {
        assert_eq!(
            said(r#"{"cost": "x", "name": "a"}"#),
            r#"cost must be a whole number (0 or more), not the text "x""#
        );
        assert_eq!(
            said(r#"{"cost": -1, "name": "a"}"#),
            "cost must be a whole number (0 or more), not -1"
        );
        assert_eq!(
            said(r#"{"cost": 1.5, "name": "a"}"#),
            "cost must be a whole number (0 or more), not 1.5"
        );
        assert_eq!(said(r#"{"name": 7}"#), "name must be text, not 7");
        assert_eq!(said(r#"{"cost": 1}"#), "name is required");
        assert_eq!(
            said(r#"{"name": "a", "rate": {"perSeconds": true}}"#),
            "rate.perSeconds must be a whole number (0 or more), not true"
        );
        assert_eq!(
            said(r#"{"name": "a", "rate": {}}"#),
            "rate.perSeconds is required"
        );
        assert_eq!(
            said(r#"{"name": "a", "rate": []}"#),
            "rate must be an object"
        );
        assert!(said(r#"{"name": "a", "nope": 1}"#).starts_with("unknown field `nope`"));
        assert_eq!(said("[]"), "the body must be an object");
        assert_eq!(said("5"), "the body must be an object, not 5");
    }

    #[test]
    fn positions_are_dropped_only_where_serde_json_put_them() {
        assert_eq!(without_position("bad at line 1 column 11"), "bad");
        assert_eq!(without_position("at line 5 the end"), "at line 5 the end");
        assert_eq!(without_position("no position"), "no position");
    }
}
