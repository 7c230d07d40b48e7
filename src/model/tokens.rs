//! [`TokenCounts`]: the tokens an upstream reported, made safe to count and
//! price, and which model names can be recorded.

/// The most tokens one upstream answer may count, per figure: far above any
/// model's context, far below what would pin a period counter (2^48) or
/// bill a fortune. Larger counts are capped, and the record says so.
pub const MAX_UPSTREAM_TOKENS: u64 = 10_000_000;

/// Whether a model name an upstream answered can be recorded as it is:
/// within the record's 128 bytes, and printable (it reaches logs, exports
/// and `/metrics` labels).
pub(crate) fn recordable_model(name: &str) -> bool {
    name.len() <= 128 && !name.chars().any(char::is_control)
}

/// Token counts an upstream reported, made safe to count and price.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenCounts {
    pub prompt: u64,
    pub completion: u64,
    pub total: u64,
    /// A figure was over [`MAX_UPSTREAM_TOKENS`] and was capped.
    pub(crate) capped: bool,
}

impl TokenCounts {
    /// Each figure capped, the total at least prompt + completion (no
    /// overflow), and a total without a split priced as prompt tokens (so
    /// an answer with only `total_tokens` is not free).
    pub(crate) fn from_upstream(prompt: u64, completion: u64, total: u64) -> TokenCounts {
        let cap = |n: u64| n.min(MAX_UPSTREAM_TOKENS);
        let capped = [prompt, completion, total]
            .iter()
            .any(|&n| n > MAX_UPSTREAM_TOKENS);
        let (prompt, completion) = (cap(prompt), cap(completion));
        let total = cap(total).max(prompt + completion);
        TokenCounts {
            prompt: if prompt == 0 && completion == 0 {
                total
            } else {
                prompt
            },
            completion,
            total,
            capped,
        }
    }
}
