//! JSON response bodies for the hot routes, written on the stack and
//! copied once into the response arena ([`super::arena`]): no allocation,
//! where actix-web's `HttpResponseBuilder::json` makes a `String`, grows
//! it, wraps it in a shared `Bytes` and renders its `Content-Type` (four).

use actix_web::http::header::{HeaderValue, CONTENT_TYPE};
use actix_web::{HttpResponse, HttpResponseBuilder};
use serde::Serialize;
use smallvec::SmallVec;

/// Bodies up to this many bytes are written on the stack (a larger one
/// spills into the heap and is still right).
const STACK: usize = 512;

/// `value` as the JSON body of `builder`'s response.
pub fn json(mut builder: HttpResponseBuilder, value: &impl Serialize) -> HttpResponse {
    let mut buf = SmallVec::<[u8; STACK]>::new();
    match serde_json::to_writer(&mut buf, value) {
        Ok(()) => builder
            .insert_header((CONTENT_TYPE, HeaderValue::from_static("application/json")))
            .body(super::arena::bytes_of(&buf)),
        Err(e) => HttpResponse::from_error(actix_web::error::JsonPayloadError::Serialize(e)),
    }
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
}
