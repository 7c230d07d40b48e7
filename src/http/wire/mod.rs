//! The HTTP edge's toolkit, shared by its rooms: extractors (`extract.rs`),
//! the JSON error (`error.rs`), the rate-limit headers and the request id
//! (`headers.rs`, `request_id.rs`), the response arena and stack-written
//! JSON (`arena.rs`, `json.rs`), amounts (`money.rs`), method routes
//! (`route.rs`), bounded places for long work (`slots.rs`) and a body of
//! the wrong shape in our words (`said.rs`).

pub(crate) mod arena;
pub(crate) mod error;
pub(crate) mod extract;
pub(crate) mod headers;
pub(crate) mod json;
pub(crate) mod money;
pub(crate) mod request_id;
pub(crate) mod route;
pub(crate) mod said;
pub(crate) mod slots;
