//! Routes by method, without actix-web's bookkeeping: its method guards
//! (`web::post()` and the like) also record every method they were
//! checked against in the request's extensions (for an `Allow` header our
//! 405, `error::method_not_allowed`, does not send): a vector, its box and
//! the map's table, three allocations on every request.

use actix_web::guard::{Guard, GuardContext};
use actix_web::http::Method;
use actix_web::{web, Route};

/// Matches a request of one method, and only compares it.
struct MethodIs(Method);

impl Guard for MethodIs {
    fn check(&self, ctx: &GuardContext<'_>) -> bool {
        ctx.head().method == self.0
    }
}

fn method(m: Method) -> Route {
    web::route().guard(MethodIs(m))
}

pub(crate) fn get() -> Route {
    method(Method::GET)
}

pub(crate) fn post() -> Route {
    method(Method::POST)
}

pub(crate) fn patch() -> Route {
    method(Method::PATCH)
}

pub(crate) fn put() -> Route {
    method(Method::PUT)
}

pub(crate) fn delete() -> Route {
    method(Method::DELETE)
}
