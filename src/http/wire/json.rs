//! JSON response bodies for the hot routes, written on the stack and
//! copied once into the response arena ([`super::arena`]): no allocation,
//! where actix-web's `HttpResponseBuilder::json` makes a `String`, grows
//! it, wraps it in a shared `Bytes` and renders its `Content-Type` (four).

use actix_web::http::header::{HeaderValue, CONTENT_TYPE};
use actix_web::{HttpResponse, HttpResponseBuilder};
use std::fmt;

use serde::Serialize;
use smallvec::SmallVec;

use crate::stack_text::StackText;

/// Bodies up to this many bytes are written on the stack (a larger one
/// spills into the heap and is still right).
const STACK: usize = 512;

/// `value` as the JSON body of `builder`'s response.
pub(crate) fn json(builder: HttpResponseBuilder, value: &impl Serialize) -> HttpResponse {
    let mut buf = SmallVec::<[u8; STACK]>::new();
    match serde_json::to_writer(&mut buf, value) {
        Ok(()) => body(builder, &buf),
        Err(e) => HttpResponse::from_error(actix_web::error::JsonPayloadError::Serialize(e)),
    }
}

/// A body of a fixed shape with a writer of its own, for the routes on
/// every request's path (`serde_json` spends a tenth of the authorize
/// path's own time on its 130 bytes, a write call per piece). It writes
/// exactly what `serde_json` writes for the same value (tested with each).
pub(crate) trait WriteJson: Serialize {
    /// Fails only when the text does not fit in `w`.
    fn write_json<const N: usize>(&self, w: &mut StackText<N>) -> fmt::Result;
}

/// `value` as the JSON body of `builder`'s response, by its own writer
/// (by `serde_json` when it does not fit on the stack).
pub(crate) fn json_of(builder: HttpResponseBuilder, value: &impl WriteJson) -> HttpResponse {
    let mut w = StackText::<STACK>::new();
    match value.write_json(&mut w) {
        Ok(()) => body(builder, w.text()),
        Err(_) => json(builder, value),
    }
}

fn body(mut builder: HttpResponseBuilder, json: &[u8]) -> HttpResponse {
    builder
        .insert_header((CONTENT_TYPE, HeaderValue::from_static("application/json")))
        .body(super::arena::bytes_of(json))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    #[test]
    fn writes_small_and_large_bodies_alike() {
        for n in [1, 2_000] {
            let value = serde_json::json!({ "text": "x".repeat(n) });
            let res = json(HttpResponse::Ok(), &value);
            assert_eq!(
                res.headers().get("content-type").unwrap(),
                "application/json"
            );
            let body = res.into_body().try_into_bytes().unwrap();
            assert_eq!(body, serde_json::to_vec(&value).unwrap());
        }
    }

    fn assert_written_as_serde_json(value: &impl WriteJson, what: &str) {
        let res = json_of(HttpResponse::Ok(), value);
        assert_eq!(
            res.headers().get("content-type").unwrap(),
            "application/json"
        );
        let body = res.into_body().try_into_bytes().unwrap();
        assert_eq!(body, serde_json::to_vec(value).unwrap(), "{what}");
    }

    #[test]
    fn the_authorize_and_check_answers_are_written_as_serde_json_writes_them() {
        use crate::clock::MsText;
        use crate::http::api::types::{AuthorizeResponse, CheckResponse};
        use chrono::{TimeZone, Utc};
        let reset = Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap();
        let long = "p".repeat(600);
        for (allowed, limit, remaining, plan) in [
            (
                true,
                Some(100_000_000_000_000),
                Some(99_999_999_999_999),
                "bench",
            ),
            (false, None, None, "free"),
            (true, Some(u64::MAX), Some(0), "qu\"o\\te \u{1} é"),
            (true, Some(5), Some(5), long.as_str()),
        ] {
            let answer = AuthorizeResponse {
                allowed,
                limit,
                used: 12_345,
                remaining,
                reset_at: MsText::of(reset),
                plan,
                reservation_id: None,
                reserved_tokens: None,
                reserved_usd: None,
            };
            let reserved = AuthorizeResponse {
                reservation_id: Some("rsv_00ff00ff00ff00ff"),
                reserved_tokens: Some(4_096),
                reset_at: MsText::of(reset),
                ..answer
            };
            assert_written_as_serde_json(&reserved, plan);
            let check = CheckResponse {
                is_allowed: allowed,
                allowed,
                limit,
                used: 12_345,
                remaining,
                reset_at: MsText::of(reset),
                plan,
                reason: (!allowed).then_some("quota_exceeded"),
            };
            assert_written_as_serde_json(&answer, plan);
            assert_written_as_serde_json(&check, plan);
        }
    }
}
