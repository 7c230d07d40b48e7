//! [`RequestId`]: the id every response carries in `X-Request-Id` and
//! every log line of the request records, held inline (no allocation).

use std::fmt;

use actix_web::http::header::{HeaderMap, HeaderName};

pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest id taken from a client.
const MAX: usize = 64;

/// The caller's `X-Request-Id` when it is a sane token (1-64 characters of
/// letters, digits, `-`, `_`, `.`, `:`), else 16 new random hex digits.
pub(crate) struct RequestId {
    bytes: [u8; MAX],
    len: usize,
}

impl RequestId {
    pub(crate) fn of(headers: &HeaderMap) -> RequestId {
        let mut id = RequestId {
            bytes: [0; MAX],
            len: 0,
        };
        let given = headers
            .get(&X_REQUEST_ID)
            .map(|v| v.as_bytes())
            .filter(|v| {
                (1..=MAX).contains(&v.len())
                    && v.iter().all(|&b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':')
                    })
            });
        match given {
            Some(v) => {
                id.bytes[..v.len()].copy_from_slice(v);
                id.len = v.len();
            }
            None => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let n = rand::random::<u64>();
                for (i, b) in id.bytes[..16].iter_mut().enumerate() {
                    *b = HEX[(n >> (60 - 4 * i)) as usize & 0xf];
                }
                id.len = 16;
            }
        }
        id
    }

    pub(crate) fn as_str(&self) -> &str {
        // ASCII by construction.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    fn of(given: Option<&str>) -> String {
        let mut h = HeaderMap::new();
        if let Some(v) = given {
            h.insert(X_REQUEST_ID.clone(), HeaderValue::from_str(v).unwrap());
        }
        RequestId::of(&h).to_string()
    }

    #[test]
    fn keeps_a_sane_id_and_makes_one_otherwise() {
        assert_eq!(of(Some("abc-1_2.3:4")), "abc-1_2.3:4");
        assert_eq!(of(Some(&"x".repeat(64))), "x".repeat(64));
        for bad in [None, Some(""), Some("has space"), Some(&*"x".repeat(65))] {
            let id = of(bad);
            assert_eq!(id.len(), 16, "{bad:?} -> {id}");
            assert!(id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        }
        assert_ne!(of(None), of(None));
    }
}
