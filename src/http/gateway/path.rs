//! The upstream URL of a gateway request, confined to the upstream's base
//! path: the tail after the prefix may not climb out of it.
//!
//! HTTP clients resolve dot segments (RFC 3986 §5.2.4) and some servers
//! decode `%2e`, `%2f` and `\` before routing, so `/v1/../admin`,
//! `/v1/%2e%2e/admin` or `/v1/..\admin` would reach the upstream's `/admin`
//! with the operator's credential. A tail is refused when any segment,
//! percent-decoded, is `.` or `..`, or holds a `\`, an encoded `/` or a NUL;
//! and the URL put together is checked once more after parsing.

/// Why a tail was refused (the 400's message).
pub(super) type PathError = &'static str;

/// `upstream` (no trailing `/`) joined with `tail` (the path after the
/// prefix, empty or starting with `/`) and `query`, if the result stays
/// under the upstream's base path on the upstream's host.
pub(super) fn upstream_url(
    upstream: &str,
    tail: &str,
    query: Option<&str>,
) -> Result<String, PathError> {
    check_tail(tail)?;
    let mut url = format!("{upstream}{tail}");
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    let base = reqwest::Url::parse(upstream).map_err(|_| "the upstream URL does not parse")?;
    let joined = reqwest::Url::parse(&url).map_err(|_| "the request path does not form a URL")?;
    let base_path = base.path().trim_end_matches('/');
    let stays = joined.scheme() == base.scheme()
        && joined.host() == base.host()
        && joined.port_or_known_default() == base.port_or_known_default()
        && (joined.path() == base_path
            || joined.path().starts_with(&format!("{base_path}/"))
            || base_path.is_empty());
    if !stays {
        return Err("the request path leaves the gateway's upstream");
    }
    Ok(url)
}

fn check_tail(tail: &str) -> Result<(), PathError> {
    if !tail.is_empty() && !tail.starts_with('/') {
        return Err("the request path must continue the prefix with '/'");
    }
    if tail.contains('\\') {
        return Err("backslashes are not allowed in gateway paths");
    }
    for segment in tail.split('/') {
        let decoded = percent_decode(segment)?;
        if decoded == b"." || decoded == b".." {
            return Err("dot segments ('.', '..', '%2e%2e') are not allowed in gateway paths");
        }
        if decoded.iter().any(|&b| matches!(b, b'/' | b'\\' | 0)) {
            return Err("encoded '/', '\\' or NUL are not allowed in gateway paths");
        }
    }
    Ok(())
}

/// Decodes `%XX` escapes (repeatedly, so `%252e` counts as `.` too).
fn percent_decode(s: &str) -> Result<Vec<u8>, PathError> {
    let mut bytes = s.as_bytes().to_vec();
    for _ in 0..4 {
        if !bytes.contains(&b'%') {
            break;
        }
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or("a malformed %-escape in the path")?;
                out.push(hex);
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        bytes = out;
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UP: &str = "http://127.0.0.1:20101/base";

    #[test]
    fn ordinary_tails_pass() {
        for (tail, url) in [
            ("", "http://127.0.0.1:20101/base"),
            ("/", "http://127.0.0.1:20101/base/"),
            (
                "/chat/completions",
                "http://127.0.0.1:20101/base/chat/completions",
            ),
            ("/a.b/c..d/...", "http://127.0.0.1:20101/base/a.b/c..d/..."),
            ("/x%20y", "http://127.0.0.1:20101/base/x%20y"),
        ] {
            assert_eq!(upstream_url(UP, tail, None).as_deref(), Ok(url), "{tail}");
        }
        assert_eq!(
            upstream_url(UP, "/m", Some("a=1&b=..")).as_deref(),
            Ok("http://127.0.0.1:20101/base/m?a=1&b=..")
        );
        assert!(upstream_url("http://127.0.0.1:9", "/x", None).is_ok());
    }

    /// Regression (hostile tenant, finding 2): 8 of these reached the
    /// upstream's `/admin` with the operator's credential.
    #[test]
    fn every_escape_is_refused() {
        for tail in [
            "/../admin",
            "/../../admin",
            "/%2e%2e/admin",
            "/%2E%2E/%2e%2e/admin",
            "/.%2e/admin",
            "/./../admin",
            "/x/../../secret",
            "/..\\admin",
            "/.",
            "/..",
            "/%2e",
            "/%252e%252e/admin",
            "/a%2f..%2fadmin",
            "/a%5c..%5cadmin",
            "/a%00b",
            "/%zz",
            "//evil.example/x/../..",
        ] {
            assert!(upstream_url(UP, tail, None).is_err(), "{tail} passed");
        }
    }
}
