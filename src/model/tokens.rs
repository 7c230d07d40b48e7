//! [`TokenCounts`]: the tokens an upstream reported, made safe to count and
//! price, with their [`TokenKinds`] (cached, cache writes, reasoning); the
//! [`CostSplit`] of a priced record; and which model names can be recorded.

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

/// The parts of a record's prompt and completion tokens that providers
/// price apart. Each is part of a figure the record already has - never
/// added to it - so a record that has none reads as before.
///
/// `cached_prompt + cache_write <= prompt`, `cache_write_1h <=
/// cache_write` and `reasoning <= completion` ([`TokenKinds::fit`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenKinds {
    /// Prompt tokens read from the provider's cache (OpenAI's
    /// `cached_tokens`, Anthropic's `cache_read_input_tokens`).
    pub cached_prompt: u64,
    /// Prompt tokens written to the cache, every tier (Anthropic's
    /// `cache_creation_input_tokens`).
    pub cache_write: u64,
    /// Of `cache_write`, those kept for an hour (Anthropic's
    /// `ephemeral_1h_input_tokens`); the rest are the 5-minute tier.
    pub cache_write_1h: u64,
    /// Completion tokens spent reasoning (OpenAI's `reasoning_tokens`).
    pub reasoning: u64,
}

impl TokenKinds {
    pub const NONE: TokenKinds = TokenKinds {
        cached_prompt: 0,
        cache_write: 0,
        cache_write_1h: 0,
        reasoning: 0,
    };

    pub fn is_empty(&self) -> bool {
        *self == TokenKinds::NONE
    }

    /// Made to fit `prompt` and `completion`: the cache's reads first,
    /// then its writes, are cut to what the prompt holds; the 1-hour
    /// writes to the writes; reasoning to the completion.
    pub fn fit(self, prompt: u64, completion: u64) -> TokenKinds {
        let cached_prompt = self.cached_prompt.min(prompt);
        let cache_write = self.cache_write.min(prompt - cached_prompt);
        TokenKinds {
            cached_prompt,
            cache_write,
            cache_write_1h: self.cache_write_1h.min(cache_write),
            reasoning: self.reasoning.min(completion),
        }
    }

    /// The prompt tokens neither read from nor written to the cache.
    pub fn uncached_prompt(&self, prompt: u64) -> u64 {
        prompt.saturating_sub(self.cached_prompt + self.cache_write)
    }
}

/// Where a record's cost went, in dollars: its parts add up to the
/// record's `cost_usd`. All zero for a record priced before token kinds
/// (or of an unknown model): such a cost is not split.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct CostSplit {
    /// The prompt tokens neither read from nor written to the cache.
    pub uncached_prompt: f64,
    /// The prompt tokens read from the cache.
    pub cached_prompt: f64,
    /// The prompt tokens written to the cache (both tiers).
    pub cache_write: f64,
    /// Every completion token, reasoning included.
    pub completion: f64,
    /// Of `completion`, the reasoning tokens.
    pub reasoning: f64,
}

impl CostSplit {
    pub const NONE: CostSplit = CostSplit {
        uncached_prompt: 0.0,
        cached_prompt: 0.0,
        cache_write: 0.0,
        completion: 0.0,
        reasoning: 0.0,
    };

    pub fn is_empty(&self) -> bool {
        *self == CostSplit::NONE
    }

    /// The whole cost.
    pub fn total(&self) -> f64 {
        self.uncached_prompt + self.cached_prompt + self.cache_write + self.completion
    }

    /// Each part times `k` (a cost kept as given, split as priced).
    pub(crate) fn scaled(self, k: f64) -> CostSplit {
        CostSplit {
            uncached_prompt: self.uncached_prompt * k,
            cached_prompt: self.cached_prompt * k,
            cache_write: self.cache_write * k,
            completion: self.completion * k,
            reasoning: self.reasoning * k,
        }
    }
}

/// A record's cost: its dollars and where they went (what
/// [`crate::pricing`] answers).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Priced {
    pub usd: f64,
    pub split: CostSplit,
}

/// Token counts an upstream reported, made safe to count and price.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenCounts {
    pub prompt: u64,
    pub completion: u64,
    pub total: u64,
    /// The parts of `prompt` and `completion` priced apart.
    pub kinds: TokenKinds,
    /// A figure was over [`MAX_UPSTREAM_TOKENS`] and was capped.
    pub(crate) capped: bool,
}

impl TokenCounts {
    /// Each figure capped, the total at least prompt + completion (no
    /// overflow), and a total without a split priced as prompt tokens (so
    /// an answer with only `total_tokens` is not free).
    pub fn from_upstream(prompt: u64, completion: u64, total: u64) -> TokenCounts {
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
            kinds: TokenKinds::NONE,
            capped,
        }
    }

    /// With `kinds`, made to fit the counts ([`TokenKinds::fit`]).
    pub fn with_kinds(mut self, kinds: TokenKinds) -> TokenCounts {
        self.kinds = kinds.fit(self.prompt, self.completion);
        self
    }
}
