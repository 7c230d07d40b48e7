//! What an edge checks of what it is told about a request: its method,
//! the path a record keeps, what it costs. Errors are messages; each edge
//! answers them as its own kind of invalid argument.

use crate::model::CompactString;

/// The longest endpoint a record keeps.
const MAX_ENDPOINT: usize = 256;

/// The most calls one edge request may cost.
pub(crate) const MAX_COST: u64 = 1_000_000;

/// The path of an original request's `uri` (no query), cut to what a record
/// keeps (on a character boundary), without control characters; `/` for none.
pub(crate) fn record_path(uri: &str) -> CompactString {
    let path = uri.split(['?', '#']).next().unwrap_or("/");
    let mut out = CompactString::with_capacity(path.len().min(MAX_ENDPOINT));
    for c in path.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_ENDPOINT {
            break;
        }
        out.push(c);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

/// An edge's cost setting (`what` names it in the error): a whole number
/// from 1 to [`MAX_COST`].
pub(crate) fn cost_of(v: &str, what: &str) -> Result<u64, String> {
    match v.trim().parse::<u64>() {
        Ok(n) if (1..=MAX_COST).contains(&n) => Ok(n),
        _ => Err(format!(
            "{what} must be a whole number from 1 to {MAX_COST}"
        )),
    }
}

/// An HTTP method token of at most 16 characters, upper-cased.
pub(crate) fn check_method(value: &str) -> Result<CompactString, String> {
    let ok = !value.is_empty()
        && value.len() <= 16
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if ok {
        let mut method = CompactString::new(value);
        method.make_ascii_uppercase();
        Ok(method)
    } else {
        Err("method must be an HTTP method token of at most 16 characters".into())
    }
}
