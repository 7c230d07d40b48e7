//! The HTTP edge's toolkit, shared by its rooms: extractors (`extract.rs`),
//! the JSON error (`error.rs`), the rate-limit headers and the request id
//! (`headers.rs`, `request_id.rs`), the response arena and stack-written
//! JSON (`arena.rs`, `json.rs`), amounts (`money.rs`), method routes
//! (`route.rs`) and bounded places for long work (`slots.rs`).

pub mod arena;
pub mod error;
pub mod extract;
pub mod headers;
pub mod json;
pub mod money;
pub mod request_id;
pub mod route;
pub mod slots;
