//! `dialect = "tollgate"`: any HTTP API. Tollgate's own error JSON, the
//! credential as `Authorization: Bearer`, and model calls recognised by
//! their shape: a chat-completions stream (OpenAI and the many APIs that
//! copy it) is asked for its usage; Anthropic's Messages (a path ending in
//! `/messages`) and Responses report theirs unasked.

use serde_json::{Map, Value};

use super::{openai, Provider};
use crate::http::wire::error::Said;

pub(crate) struct Generic;

impl Provider for Generic {
    fn refusal(&self, _: u16, _: &Said) -> Option<Value> {
        None
    }

    fn steering(&self) -> &'static [&'static str] {
        openai::STEERING
    }

    fn ask_for_usage(&self, path: &str, call: &mut Map<String, Value>) -> bool {
        let anthropic = path
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .is_some_and(|last| last == "messages");
        !anthropic && openai::ask_for_usage(call)
    }
}
