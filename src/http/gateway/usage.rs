//! Token counts read from a gateway response while it streams through, at
//! any size and without keeping a copy of it.
//!
//! - A JSON body goes through [`JsonScan`], which follows the structure
//!   byte by byte and keeps only the values of the top-level `usage` and
//!   `model` keys (wherever they are: before or after a 5 MB `choices`).
//! - An event stream is read line by line, and usage is read wherever each
//!   known API puts it: chat completions' top-level `usage` (sent last when
//!   asked with `stream_options.include_usage`, which the gateway adds to
//!   a streaming chat-completions request that does not ask for it
//!   itself), the Responses API's `response.usage` (in
//!   `response.completed`), Anthropic's `message.usage` (in
//!   `message_start`: the input) and `usage` (in `message_delta`: the
//!   output so far). A later figure replaces an earlier one; a figure an
//!   event leaves at zero keeps the earlier one.
//! - When an OpenAI-style call answers without any `usage`, its tokens are
//!   estimated (prompt from the request, completion from the text streamed
//!   or the body's size) and the record says so.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::provider::Provider;
use crate::metering::tokens::count_tokens;
use crate::model::{recordable_model, TokenCounts, TokenKinds};

/// The most bytes kept of a `usage` or `model` value.
const MAX_VALUE: usize = 64 << 10;
/// The longest event-stream line looked at.
const MAX_LINE: usize = 1 << 20;

/// Token counts read from a response, and where they came from.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Usage {
    pub counts: TokenCounts,
    pub model: Option<String>,
    /// Estimated: the upstream reported no usage.
    pub estimated: bool,
}

/// The `usage` of an OpenAI-style object (`prompt_tokens`/`completion_tokens`
/// or `input_tokens`/`output_tokens`), if it has one, with its kinds: the
/// cached part of the prompt (`prompt_tokens_details` or
/// `input_tokens_details`, `cached_tokens`) and the reasoning part of the
/// completion (`completion_tokens_details` or `output_tokens_details`,
/// `reasoning_tokens`), and cache writes where a relay reports them
/// (`cache_creation_input_tokens`, part of `prompt_tokens`). An object in
/// Anthropic's shape (`input_tokens` beside its cache fields) reads as
/// Anthropic's ([`anthropic_usage_of`]).
pub(crate) fn usage_of(usage: &Value) -> Option<TokenCounts> {
    let u = usage.as_object()?;
    let anthropic_cache =
        u.contains_key("cache_read_input_tokens") || u.contains_key("cache_creation_input_tokens");
    if anthropic_cache && !u.contains_key("prompt_tokens") {
        return anthropic_usage_of(usage);
    }
    let n = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| u.get(*k).and_then(count_of))
            .unwrap_or(0)
    };
    let detail = |holders: &[&str], key: &str| {
        holders
            .iter()
            .find_map(|h| u.get(*h).and_then(|d| d.get(key)).and_then(count_of))
            .unwrap_or(0)
    };
    // Chat completions relayed from a caching provider (LiteLLM's own
    // answers, say) add Anthropic's cache fields beside `prompt_tokens`,
    // which holds the whole prompt: a cache write is part of it.
    let top = |k: &str| u.get(k).and_then(count_of).unwrap_or(0);
    let cached = detail(
        &["prompt_tokens_details", "input_tokens_details"],
        "cached_tokens",
    );
    let kinds = TokenKinds {
        cached_prompt: if cached > 0 {
            cached
        } else {
            top("cache_read_input_tokens")
        },
        cache_write: top("cache_creation_input_tokens"),
        reasoning: detail(
            &["completion_tokens_details", "output_tokens_details"],
            "reasoning_tokens",
        ),
        ..TokenKinds::NONE
    };
    Some(
        TokenCounts::from_upstream(
            n(&["prompt_tokens", "input_tokens"]),
            n(&["completion_tokens", "output_tokens"]),
            n(&["total_tokens"]),
        )
        .with_kinds(kinds),
    )
}

/// The `usage` of an Anthropic Messages answer or event. Its
/// `input_tokens` counts only what the cache did not serve: the cache's
/// reads (`cache_read_input_tokens`) and writes
/// (`cache_creation_input_tokens`, of which `cache_creation`'s
/// `ephemeral_1h_input_tokens` are kept an hour) are prompt tokens too.
pub(crate) fn anthropic_usage_of(usage: &Value) -> Option<TokenCounts> {
    let u = usage.as_object()?;
    let n = |k: &str| u.get(k).and_then(count_of).unwrap_or(0);
    let read = n("cache_read_input_tokens");
    let write = n("cache_creation_input_tokens");
    let write_1h = u
        .get("cache_creation")
        .and_then(|c| c.get("ephemeral_1h_input_tokens"))
        .and_then(count_of)
        .unwrap_or(0);
    let prompt = n("input_tokens").saturating_add(read).saturating_add(write);
    Some(
        TokenCounts::from_upstream(prompt, n("output_tokens"), 0).with_kinds(TokenKinds {
            cached_prompt: read,
            cache_write: write,
            cache_write_1h: write_1h,
            reasoning: 0,
        }),
    )
}

/// The provider whose way a scan reads `usage`: the route's, or the
/// generic one (either spelling) unless told.
#[derive(Clone, Copy)]
struct ReadsAs(&'static dyn Provider);

impl Default for ReadsAs {
    fn default() -> ReadsAs {
        ReadsAs(&super::provider::generic::Generic)
    }
}

/// A count as a number: an integer, or a float saturated into u64.
fn count_of(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
}

/// A model name worth recording: short and printable.
fn model_name(v: &Value) -> Option<String> {
    v.as_str()
        .filter(|m| recordable_model(m))
        .map(str::to_string)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    Usage,
    Model,
}

/// Follows a JSON document's structure and keeps the top-level `usage` and
/// `model` values. Garbage in gives nothing out, never a panic.
#[derive(Default)]
pub(crate) struct JsonScan {
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// At depth 1 of an object, the next string is a key.
    expect_key: bool,
    reading_key: bool,
    key: Vec<u8>,
    /// The key just read names a field we keep; its value starts after ':'.
    pending: Option<Field>,
    /// The value being kept, and of which field.
    capture: Option<(Field, Vec<u8>)>,
    usage: Option<Vec<u8>>,
    model: Option<Vec<u8>>,
    bytes: u64,
    reads_as: ReadsAs,
}

impl JsonScan {
    /// A scan that reads `usage` as `provider` does.
    pub(crate) fn reading(provider: &'static dyn Provider) -> JsonScan {
        JsonScan {
            reads_as: ReadsAs(provider),
            ..JsonScan::default()
        }
    }

    pub(crate) fn feed(&mut self, chunk: &[u8]) {
        self.bytes += chunk.len() as u64;
        for &b in chunk {
            self.byte(b);
        }
    }

    fn byte(&mut self, b: u8) {
        if self.capture.is_some() && !self.in_string && self.depth == 1 && (b == b',' || b == b'}')
        {
            self.end_capture();
        } else if let Some((_, bytes)) = self.capture.as_mut() {
            if bytes.len() < MAX_VALUE {
                bytes.push(b);
            } else {
                self.capture = None;
            }
        }
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
                if self.reading_key {
                    self.reading_key = false;
                    self.pending = match self.key.as_slice() {
                        b"usage" => Some(Field::Usage),
                        b"model" => Some(Field::Model),
                        _ => None,
                    };
                }
            } else if self.reading_key && self.key.len() < 8 {
                self.key.push(b);
            }
            return;
        }
        match b {
            b'"' => {
                self.in_string = true;
                if self.depth == 1 && self.expect_key {
                    self.expect_key = false;
                    self.reading_key = true;
                    self.key.clear();
                }
            }
            b'{' | b'[' => {
                self.depth = self.depth.saturating_add(1);
                if self.depth == 1 {
                    self.expect_key = b == b'{';
                }
            }
            b'}' | b']' => self.depth = self.depth.saturating_sub(1),
            b':' if self.depth == 1 && self.capture.is_none() => {
                if let Some(field) = self.pending.take() {
                    self.capture = Some((field, Vec::new()));
                }
            }
            b',' if self.depth == 1 => self.expect_key = true,
            _ => {}
        }
    }

    fn end_capture(&mut self) {
        if let Some((field, bytes)) = self.capture.take() {
            match field {
                Field::Usage => self.usage = Some(bytes),
                Field::Model => self.model = Some(bytes),
            }
        }
    }

    /// Bytes seen so far.
    pub(crate) fn bytes_seen(&self) -> u64 {
        self.bytes
    }

    /// The counts and model, if the document had a `usage` object.
    pub(crate) fn finish(&mut self) -> (Option<TokenCounts>, Option<String>) {
        let parse = |b: &Option<Vec<u8>>| {
            b.as_deref()
                .and_then(|b| serde_json::from_slice::<Value>(b.trim_ascii()).ok())
        };
        let usage = parse(&self.usage)
            .as_ref()
            .and_then(|u| self.reads_as.0.usage_of(u));
        let model = parse(&self.model).as_ref().and_then(model_name);
        (usage, model)
    }
}

/// The fields of an event the scan reads, each left as it lies in the
/// line; any other field, and any of these of another type than expected,
/// costs nothing.
#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow, default)]
    usage: Option<&'a RawValue>,
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(borrow, default)]
    response: Option<&'a RawValue>,
    #[serde(borrow, default)]
    message: Option<&'a RawValue>,
    #[serde(borrow, default)]
    choices: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "type")]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default)]
    delta: Option<&'a RawValue>,
}

/// A choice's text: `delta.content`, else `text`.
#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(borrow, default)]
    delta: Option<&'a RawValue>,
    #[serde(borrow, default)]
    text: Option<&'a RawValue>,
}

/// A `delta`'s `content` (chat completions) and `text` (Anthropic).
#[derive(Deserialize)]
struct Texts<'a> {
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    text: Option<&'a RawValue>,
}

/// A JSON string's text: borrowed from the line unless it has escapes.
fn text_of(raw: &RawValue) -> Option<std::borrow::Cow<'_, str>> {
    let s = raw.get();
    serde_json::from_str::<&str>(s)
        .map(std::borrow::Cow::Borrowed)
        .or_else(|_| serde_json::from_str::<String>(s).map(std::borrow::Cow::Owned))
        .ok()
}

/// The tokens of the text in a `choices` array, summed as it is read (no
/// vector of choices).
struct ChoiceTokens(u64);

impl<'de> Deserialize<'de> for ChoiceTokens {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Sum;
        impl<'de> serde::de::Visitor<'de> for Sum {
            type Value = ChoiceTokens;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array of choices")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ChoiceTokens, A::Error> {
                let mut n = 0u64;
                while let Some(c) = seq.next_element::<Option<Choice<'de>>>()? {
                    let Some(c) = c else { continue };
                    let content = c
                        .delta
                        .and_then(|d| serde_json::from_str::<Texts<'_>>(d.get()).ok())
                        .and_then(|t| t.content);
                    // As `pointer("/delta/content")` then `text`: a
                    // content present (even null) is the one looked at.
                    let text = match content {
                        Some(raw) => text_of(raw),
                        None => c.text.and_then(text_of),
                    };
                    if let Some(t) = text {
                        n = n.saturating_add(count_tokens(&t));
                    }
                }
                Ok(ChoiceTokens(n))
            }
        }
        d.deserialize_seq(Sum)
    }
}

/// Reads an event stream's `data:` lines for `usage` (and counts the text
/// streamed, for the estimate).
#[derive(Default)]
pub(crate) struct EventScan {
    line: Vec<u8>,
    usage: Option<TokenCounts>,
    model: Option<String>,
    /// Tokens of the text in `choices[].delta.content` (or `.text`).
    streamed_tokens: u64,
    reads_as: ReadsAs,
}

impl EventScan {
    /// A scan that reads `usage` as `provider` does.
    pub(crate) fn reading(provider: &'static dyn Provider) -> EventScan {
        EventScan {
            reads_as: ReadsAs(provider),
            ..EventScan::default()
        }
    }

    /// Reads `chunk`: each line it completes is looked at where it lies in
    /// the chunk (copied only when it began in an earlier one).
    pub(crate) fn feed(&mut self, mut chunk: &[u8]) {
        while let Some(i) = chunk.iter().position(|&b| b == b'\n') {
            let (head, rest) = (&chunk[..i], &chunk[i + 1..]);
            if self.line.is_empty() {
                self.line_done(head);
            } else {
                self.keep(head);
                let line = std::mem::take(&mut self.line);
                self.line_done(&line);
                self.line = line;
                self.line.clear();
            }
            chunk = rest;
        }
        self.keep(chunk);
    }

    /// Keeps the start of a line to come (at most [`MAX_LINE`] bytes of it).
    fn keep(&mut self, part: &[u8]) {
        let room = MAX_LINE.saturating_sub(self.line.len());
        self.line.extend_from_slice(&part[..part.len().min(room)]);
    }

    /// One line: a `data:` event's fields are read where they lie in it -
    /// no tree of the event is built (a stream's hundreds of token events
    /// allocated one each); only a `usage` found is read into one.
    fn line_done(&mut self, line: &[u8]) {
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        let Ok(e) = serde_json::from_slice::<Event<'_>>(data.trim_ascii()) else {
            return;
        };
        // Chat completions and Anthropic's `message_delta`: `usage`;
        // Responses: `response.usage`; Anthropic's `message_start`:
        // `message.usage`. The model sits beside each.
        let found = self
            .usage_beside(e.usage, e.model)
            .or_else(|| self.usage_within(e.response))
            .or_else(|| self.usage_within(e.message));
        if let Some((u, model)) = found {
            self.usage = Some(match self.usage {
                Some(before) => merged(before, u),
                None => u,
            });
            if model.is_some() {
                self.model = model;
            }
        }
        if let Some(choices) = e.choices {
            let tokens = serde_json::from_str::<ChoiceTokens>(choices.get()).map_or(0, |c| c.0);
            self.streamed_tokens = self.streamed_tokens.saturating_add(tokens);
        }
        // Responses' `response.output_text.delta` and Anthropic's
        // `content_block_delta` (`delta.text`): text for the estimate.
        let delta_text = e.delta.and_then(|d| {
            if e.kind.and_then(text_of).as_deref() == Some("response.output_text.delta") {
                text_of(d)
            } else {
                serde_json::from_str::<Texts<'_>>(d.get())
                    .ok()?
                    .text
                    .and_then(text_of)
            }
        });
        if let Some(t) = delta_text {
            self.streamed_tokens = self.streamed_tokens.saturating_add(count_tokens(&t));
        }
    }

    /// The counts of a `usage` value, with the `model` beside it.
    fn usage_beside(
        &self,
        usage: Option<&RawValue>,
        model: Option<&RawValue>,
    ) -> Option<(TokenCounts, Option<String>)> {
        let usage: Value = serde_json::from_str(usage?.get()).ok()?;
        let counts = self.reads_as.0.usage_of(&usage)?;
        let model = model
            .and_then(|m| serde_json::from_str::<Value>(m.get()).ok())
            .as_ref()
            .and_then(model_name);
        Some((counts, model))
    }

    /// The counts of the `usage` inside an object (`response`, `message`),
    /// with its `model`; read only when it has one.
    fn usage_within(&self, holder: Option<&RawValue>) -> Option<(TokenCounts, Option<String>)> {
        let holder = holder.filter(|h| h.get().contains("\"usage\""))?;
        let inner = serde_json::from_str::<Event<'_>>(holder.get()).ok()?;
        self.usage_beside(inner.usage, inner.model)
    }

    /// Tokens of the text streamed so far (for an estimate as it passes).
    pub(crate) fn streamed(&self) -> u64 {
        self.streamed_tokens
    }

    pub(crate) fn finish(&mut self) -> (Option<TokenCounts>, Option<String>, u64) {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line_done(&line);
        }
        (self.usage, self.model.take(), self.streamed_tokens)
    }
}

/// A later usage figure over an earlier one of the same answer: each
/// count the later one gives replaces the earlier, one it leaves at zero
/// keeps it (Anthropic's `message_delta` gives the output alone).
fn merged(before: TokenCounts, after: TokenCounts) -> TokenCounts {
    let pick = |a: u64, b: u64| if b > 0 { b } else { a };
    let prompt = pick(before.prompt, after.prompt);
    let completion = pick(before.completion, after.completion);
    let total = if after.prompt > 0 && after.completion > 0 {
        after.total
    } else {
        0
    };
    let (b, a) = (before.kinds, after.kinds);
    let kinds = TokenKinds {
        cached_prompt: pick(b.cached_prompt, a.cached_prompt),
        cache_write: pick(b.cache_write, a.cache_write),
        cache_write_1h: pick(b.cache_write_1h, a.cache_write_1h),
        reasoning: pick(b.reasoning, a.reasoning),
    };
    let mut c = TokenCounts::from_upstream(prompt, completion, total).with_kinds(kinds);
    c.capped |= before.capped || after.capped;
    c
}

/// What the gateway learnt of an OpenAI-style request body.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct LlmRequest {
    pub model: String,
    /// Estimated prompt tokens (the text of `messages`, `prompt` or `input`).
    pub prompt_tokens: u64,
    /// The most the answer may hold (`max_tokens`, `max_completion_tokens`
    /// or `max_output_tokens`), when the request says.
    pub(crate) max_output: Option<u64>,
}

impl LlmRequest {
    /// The tokens to reserve before the call: the prompt's estimate and
    /// the most the answer may hold (else `default_output`).
    pub(crate) fn reserve(&self, default_output: u64) -> u64 {
        self.prompt_tokens
            .saturating_add(self.max_output.unwrap_or(default_output))
    }
}

/// If `body` is a model call (a JSON object naming a `model`), what the
/// estimate needs, and the body to send instead when `provider` rewrote
/// the call to report its usage ([`Provider::ask_for_usage`]), so that a
/// tenant cannot stream tokens past its token quota by leaving it out.
pub(crate) fn inspect_request(
    path: &str,
    body: &[u8],
    provider: &dyn Provider,
) -> (Option<LlmRequest>, Option<Vec<u8>>) {
    // JSON may start with whitespace (and a byte order mark, which an
    // upstream may accept): an object is an object however it starts.
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let start = body
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    if start.map(|i| body[i]) != Some(b'{') {
        return (None, None);
    }
    let Ok(Value::Object(mut v)) = serde_json::from_slice::<Value>(body) else {
        return (None, None);
    };
    let Some(model) = v.get("model").and_then(model_name) else {
        return (None, None);
    };
    let mut text = 0u64;
    for key in ["messages", "prompt", "input"] {
        if let Some(part) = v.get(key) {
            text = text.saturating_add(count_text(part));
        }
    }
    let max_output = ["max_tokens", "max_completion_tokens", "max_output_tokens"]
        .iter()
        .filter_map(|k| v.get(*k).and_then(Value::as_u64))
        .max();
    let llm = LlmRequest {
        model,
        prompt_tokens: text,
        max_output,
    };
    if !provider.ask_for_usage(path, &mut v) {
        return (Some(llm), None);
    }
    (Some(llm), serde_json::to_vec(&v).ok())
}

/// Tokens of every string inside `v` (message contents, prompts).
fn count_text(v: &Value) -> u64 {
    match v {
        Value::String(s) => count_tokens(s),
        Value::Array(a) => a.iter().map(count_text).fold(0, u64::saturating_add),
        Value::Object(o) => o.values().map(count_text).fold(0, u64::saturating_add),
        _ => 0,
    }
}

/// The estimate for an OpenAI-style call answered without `usage`: the
/// request's prompt, and the completion from the text streamed (or, for a
/// JSON body, a token per 4 bytes of it).
pub(crate) fn estimate(request: &LlmRequest, completion: u64) -> Usage {
    Usage {
        counts: TokenCounts::from_upstream(request.prompt_tokens, completion, 0),
        model: None,
        estimated: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_json(doc: &str, piece: usize) -> (Option<TokenCounts>, Option<String>) {
        let mut s = JsonScan::default();
        for chunk in doc.as_bytes().chunks(piece.max(1)) {
            s.feed(chunk);
        }
        s.finish()
    }

    #[test]
    fn usage_in_both_spellings() {
        let openai =
            serde_json::json!({"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8});
        let u = usage_of(&openai).unwrap();
        assert_eq!((u.prompt, u.completion, u.total), (3, 5, 8));
        let anthropic = serde_json::json!({"input_tokens": 2, "output_tokens": 7});
        assert_eq!(usage_of(&anthropic).map(|u| u.total), Some(9));
        assert_eq!(usage_of(&Value::Null), None);
    }

    /// Regression (hostile tenant, finding 5): a JSON answer over 4 MiB
    /// recorded 0 tokens, wherever its `usage` was.
    #[test]
    fn the_usage_of_a_large_body_is_found_in_any_chunking() {
        let filler = "x".repeat(5 << 20);
        for doc in [
            format!(
                r#"{{"id":"c","model":"gpt-4o","choices":[{{"message":{{"content":"{filler}"}}}}],"usage":{{"prompt_tokens":1000,"completion_tokens":1000,"total_tokens":2000}}}}"#
            ),
            format!(
                r#"{{"usage" : {{"prompt_tokens":1000,"completion_tokens":1000}}, "model":"gpt-4o", "choices":[{{"text":"{filler}"}}]}}"#
            ),
        ] {
            for piece in [1usize, 7, 4096, 1 << 20] {
                if piece == 1 && doc.len() > 1 << 20 {
                    continue;
                }
                let (u, m) = scan_json(&doc, piece);
                let u = u.unwrap_or_else(|| panic!("no usage with {piece}-byte chunks"));
                assert_eq!((u.prompt, u.completion, u.total), (1000, 1000, 2000));
                assert_eq!(m.as_deref(), Some("gpt-4o"));
            }
        }
    }

    #[test]
    fn nested_and_quoted_usage_keys_are_not_top_level() {
        let doc = r#"{"choices":[{"usage":{"prompt_tokens":9}}],"note":"\"usage\": {\"prompt_tokens\": 7}","usage":{"prompt_tokens":1,"completion_tokens":2}}"#;
        let (u, _) = scan_json(doc, 3);
        assert_eq!(u.map(|u| (u.prompt, u.completion)), Some((1, 2)));
        let (u, m) = scan_json(r#"{"choices":[{"usage":{"prompt_tokens":9}}]}"#, 5);
        assert_eq!((u, m), (None, None));
        for junk in [
            "",
            "[1,2]",
            "\"usage\"",
            "{\"usage\":",
            "}}}{{{",
            "{\"usage\":{\"a\":1}",
        ] {
            let _ = scan_json(junk, 2);
        }
    }

    #[test]
    fn event_streams_give_their_last_usage_and_the_text_streamed() {
        let mut e = EventScan::default();
        e.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"Hello, world!\"}}]}\n\n");
        e.feed(b"data: {\"choices\":[],\"model\":\"gpt-4o\",\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":6}}\n\ndata: [DONE]");
        let (u, m, streamed) = e.finish();
        assert_eq!(u.map(|u| u.total), Some(10));
        assert_eq!(m.as_deref(), Some("gpt-4o"));
        assert_eq!(streamed, 6);
    }

    /// The events are read where they lie in each chunk, and a line split
    /// across chunks is put together first: every split of a stream gives
    /// what the whole gives (escaped text, a null content, a choice with
    /// `text`, junk lines and the usage last included).
    #[test]
    fn an_event_stream_reads_the_same_in_any_chunking() {
        let stream = concat!(
            "data: {\"choices\":[{\"delta\":{\"content\":\"Hello, \\\"world\\\"!\\n\"}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":null}},{\"text\":\"more words here\"}]}\n\n",
            "data: not json\n: a comment\n\n",
            "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}],\"usage\":null}\n\n",
            "data: {\"choices\":[],\"model\":\"gpt-4o\",\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":6}}\n\n",
            "data: [DONE]\n\n"
        );
        let whole = {
            let mut e = EventScan::default();
            e.feed(stream.as_bytes());
            e.finish()
        };
        assert_eq!(whole.0.map(|u| u.total), Some(10));
        assert_eq!(whole.1.as_deref(), Some("gpt-4o"));
        assert!(whole.2 > 0);
        for piece in 1..stream.len() {
            let mut e = EventScan::default();
            for chunk in stream.as_bytes().chunks(piece) {
                e.feed(chunk);
            }
            assert_eq!(e.finish(), whole, "{piece}-byte chunks");
        }
    }

    /// Issue 37, findings 2 and 4: a Responses stream's usage is in
    /// `response.completed`, and an Anthropic stream's input is in
    /// `message_start` (its output in `message_delta`).
    #[test]
    fn responses_and_anthropic_streams_give_their_whole_usage() {
        let mut e = EventScan::default();
        e.feed(b"event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"model\":\"gpt-4o\",\"usage\":null}}\n\n");
        e.feed(b"data: {\"type\":\"response.output_text.delta\",\"delta\":\"Hello there, friend\"}\n\n");
        e.feed(b"data: {\"type\":\"response.completed\",\"response\":{\"model\":\"gpt-4o-2024\",\"usage\":{\"input_tokens\":3000,\"output_tokens\":3000,\"total_tokens\":6000}}}\n\n");
        let (u, m, streamed) = e.finish();
        let u = u.expect("the Responses usage");
        assert_eq!((u.prompt, u.completion, u.total), (3000, 3000, 6000));
        assert_eq!(m.as_deref(), Some("gpt-4o-2024"));
        assert!(streamed > 0, "the text deltas count for an estimate");

        let mut e = EventScan::default();
        e.feed(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-3-5-sonnet\",\"usage\":{\"input_tokens\":5000,\"output_tokens\":1}}}\n\n");
        e.feed(b"data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi there\"}}\n\n");
        e.feed(b"data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\n");
        let (u, m, streamed) = e.finish();
        let u = u.expect("the Anthropic usage");
        assert_eq!((u.prompt, u.completion, u.total), (5000, 15, 5015));
        assert_eq!(m.as_deref(), Some("claude-3-5-sonnet"));
        assert_eq!(streamed, 3);
    }

    /// [`inspect_request`] as the default dialect (`tollgate`) does.
    fn inspect(path: &str, body: &[u8]) -> (Option<LlmRequest>, Option<Vec<u8>>) {
        inspect_request(path, body, &super::super::provider::generic::Generic)
    }

    #[test]
    fn each_dialect_rewrites_only_what_its_api_needs() {
        use super::super::provider::{of, Dialect};
        let stream = br#"{"model":"m","stream":true,"messages":[]}"#;
        let rewritten = |d, path| inspect_request(path, stream, of(d)).1.is_some();
        assert!(rewritten(Dialect::Openai, "/v1/chat/completions"));
        assert!(rewritten(Dialect::Tollgate, "/v1/chat/completions"));
        assert!(!rewritten(Dialect::Tollgate, "/v1/messages"));
        assert!(!rewritten(Dialect::Anthropic, "/v1/messages"));
        assert!(!rewritten(Dialect::Anthropic, "/v1/chat/completions"));
    }

    #[test]
    fn only_chat_completions_are_rewritten_and_any_json_object_is_a_model_call() {
        let body = br#"{"model":"gpt-4o","stream":true,"input":"hi"}"#;
        let (llm, rewritten) = inspect("/v1/responses", body);
        assert!(llm.is_some());
        assert_eq!(rewritten, None, "Responses take no stream_options");
        let chat = br#"{"model":"claude","stream":true,"messages":[]}"#;
        let (_, rewritten) = inspect("/v1/messages", chat);
        assert_eq!(rewritten, None, "nor do Anthropic's Messages");
        assert!(inspect("/v1/chat/completions", chat).1.is_some());
        for lead in [" ", "\n", "\t", "\r\n", "\u{feff}", " \n\t "] {
            let body = format!(
                "{lead}{{\"model\":\"m\",\"stream\":true,\"max_tokens\":7,\"messages\":[]}}"
            );
            let (llm, rewritten) = inspect("/v1/chat/completions", body.as_bytes());
            assert_eq!(llm.map(|l| l.max_output), Some(Some(7)), "{lead:?}");
            assert!(rewritten.is_some(), "{lead:?}");
        }
    }

    #[test]
    fn streaming_requests_are_made_to_ask_for_their_usage() {
        let (llm, rewritten) = inspect(
            "/v1/chat/completions",
            br#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"Hello, world!"}]}"#,
        );
        let llm = llm.unwrap();
        assert_eq!(llm.model, "gpt-4o");
        assert_eq!(llm.prompt_tokens, 1 + 6);
        let v: Value = serde_json::from_slice(&rewritten.unwrap()).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        let (_, same) = inspect(
            "/v1/chat/completions",
            br#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#,
        );
        assert!(same.is_none());
        let (_, forced) = inspect(
            "/v1/chat/completions",
            br#"{"model":"m","stream":true,"stream_options":{"include_usage":false}}"#,
        );
        let v: Value = serde_json::from_slice(&forced.unwrap()).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(inspect("/v1/chat/completions", br#"{"model":"m"}"#).1, None);
        assert_eq!(inspect("/v1/chat/completions", b"not json"), (None, None));
        assert_eq!(
            inspect("/v1/chat/completions", br#"{"stream":true}"#),
            (None, None)
        );
    }
}
