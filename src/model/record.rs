//! [`UsageRecord`]: one metered request, compact, and what a record may hold.

use super::{CompactString, CostSplit, TokenCounts, TokenKinds};

/// One metered request: compact, without the tenant (blocks are per tenant).
///
/// The fields most records leave empty live in [`RecordExtra`], boxed and
/// absent when all are empty, so a record waiting in a request lane is 168
/// bytes instead of 304 (the lanes preallocate every slot). Its strings
/// are [`CompactString`]s: up to 24 bytes (an endpoint, a method, a model,
/// a key, user or bot id) they are held inline, with no allocation to make
/// a record or free it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UsageRecord {
    /// Milliseconds since the Unix epoch.
    pub ts_ms: i64,
    /// The id of the API key that made it (`key_...`); empty when none did
    /// (the operator's import, an unrecorded total).
    pub key_id: CompactString,
    pub endpoint: CompactString,
    pub method: CompactString,
    pub status: u16,
    pub response_ms: f64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Total tokens (at least prompt + completion).
    pub tokens: u64,
    pub model: CompactString,
    /// Quota units this record consumed.
    pub calls: u64,
    pub cost_usd: f64,
    /// Refused by Tollgate itself (rate limit, quota, suspension).
    pub rejected: bool,
    /// A retry of an earlier attempt (an SDK's `x-stainless-retry-count`
    /// above 0, a report's `retryAttempt` above 0).
    pub retried: bool,
    /// Read through [`UsageRecord::extra`]; set with [`RecordExtra::boxed`]
    /// or [`UsageRecord::extra_mut`].
    pub extra: Extras,
}

/// A record's [`RecordExtra`] as it holds it: boxed, or nothing when every
/// field is empty. Compared by what it reads, so boxed-but-empty extras
/// equal none.
#[derive(Clone, Debug, Default)]
pub struct Extras(Option<Box<RecordExtra>>);

impl PartialEq for Extras {
    fn eq(&self, o: &Self) -> bool {
        self.get() == o.get()
    }
}

impl Extras {
    fn get(&self) -> &RecordExtra {
        self.0.as_deref().unwrap_or(&NO_EXTRA)
    }
}

/// A [`UsageRecord`]'s rarely set fields.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RecordExtra {
    pub user_id: CompactString,
    pub bot_id: CompactString,
    pub metadata: Vec<(String, String)>,
    /// The API version, when given (a report's `apiVersion`, a gateway
    /// request's `API-Version` header); else [`UsageRecord::version`]
    /// derives it from the endpoint.
    pub api_version: CompactString,
    /// ISO 3166-1 alpha-2 (upper case), when known; never the address.
    pub country: CompactString,
    /// The `[[proxy]]` (by name) a gateway request went to.
    pub integration: CompactString,
    /// The parts of the prompt and completion tokens priced apart
    /// (cached, cache writes, reasoning).
    pub kinds: TokenKinds,
    /// Where the cost went, as priced.
    pub cost_split: CostSplit,
}

/// What a record without extras reads.
static NO_EXTRA: RecordExtra = RecordExtra {
    user_id: CompactString::const_new(""),
    bot_id: CompactString::const_new(""),
    metadata: Vec::new(),
    api_version: CompactString::const_new(""),
    country: CompactString::const_new(""),
    integration: CompactString::const_new(""),
    kinds: TokenKinds::NONE,
    cost_split: CostSplit::NONE,
};

impl RecordExtra {
    pub fn is_empty(&self) -> bool {
        *self == NO_EXTRA
    }

    /// As a record holds it: nothing when every field is empty, so a record
    /// without extras allocates nothing for them.
    pub fn boxed(self) -> Extras {
        Extras((!self.is_empty()).then(|| Box::new(self)))
    }
}

impl UsageRecord {
    /// The rarely set fields, empty ones when the record has none.
    pub fn extra(&self) -> &RecordExtra {
        self.extra.get()
    }

    /// The rarely set fields to change (boxed on first use).
    pub(crate) fn extra_mut(&mut self) -> &mut RecordExtra {
        self.extra.0.get_or_insert_with(Box::default)
    }

    /// The tokens `counts` reports, with their kinds.
    pub(crate) fn set_tokens(&mut self, counts: &TokenCounts) {
        self.prompt_tokens = counts.prompt;
        self.completion_tokens = counts.completion;
        self.tokens = counts.total;
        let kinds = counts.kinds.fit(counts.prompt, counts.completion);
        if !kinds.is_empty() || !self.extra().kinds.is_empty() {
            self.extra_mut().kinds = kinds;
        }
    }

    /// The record's token counts, with their kinds.
    pub fn token_counts(&self) -> TokenCounts {
        TokenCounts {
            prompt: self.prompt_tokens,
            completion: self.completion_tokens,
            total: self.tokens,
            kinds: self.extra().kinds,
            capped: false,
        }
    }

    /// The cost as priced, with where it went.
    pub(crate) fn set_cost(&mut self, priced: super::Priced) {
        self.cost_usd = priced.usd;
        if !priced.split.is_empty() || !self.extra().cost_split.is_empty() {
            self.extra_mut().cost_split = priced.split;
        }
    }

    /// The API version: as given, else the endpoint's first path segment
    /// when it looks like one ([`version_segment`]); empty when neither.
    pub fn version(&self) -> &str {
        let given = &self.extra().api_version;
        if given.is_empty() {
            version_segment(&self.endpoint)
        } else {
            given
        }
    }
}

/// The first segment of `path` when it names a version: `v1`, `v2`,
/// `v1.1`, `v1beta`, `v2alpha1`, or a date such as `2024-06-01`; else "".
pub(crate) fn version_segment(path: &str) -> &str {
    let seg = path
        .trim_start_matches('/')
        .split(['/', '?'])
        .next()
        .unwrap_or("");
    let b = seg.as_bytes();
    let dated = b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        });
    let versioned = b.len() >= 2 && b.len() <= 16 && (b[0] == b'v' || b[0] == b'V') && {
        let rest = &b[1..];
        let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
        let tail = &rest[digits..];
        let tail = match tail.first() {
            Some(b'.') => {
                let d = tail[1..].iter().take_while(|c| c.is_ascii_digit()).count();
                if d == 0 {
                    return "";
                }
                &tail[1 + d..]
            }
            _ => tail,
        };
        digits > 0
            && tail.iter().all(|c| c.is_ascii_alphanumeric())
            && tail.first().is_none_or(|c| c.is_ascii_lowercase())
    };
    if dated || versioned {
        seg
    } else {
        ""
    }
}

/// `code` as a country: two ASCII letters, upper-cased; else `None`.
pub(crate) fn country_code(code: &str) -> Option<CompactString> {
    let b = code.as_bytes();
    (b.len() == 2 && b.iter().all(u8::is_ascii_alphabetic)).then(|| {
        let mut c = CompactString::new(code);
        c.make_ascii_uppercase();
        c
    })
}

/// Whether an API version given explicitly can be recorded: 1 to 64
/// printable bytes.
pub(crate) fn recordable_version(v: &str) -> bool {
    !v.is_empty() && v.len() <= 64 && !v.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_come_from_the_first_segment() {
        for (path, v) in [
            ("/v1/chat/completions", "v1"),
            ("v2/x", "v2"),
            ("/v1.1/items?x=1", "v1.1"),
            ("/v1beta/models", "v1beta"),
            ("/v2alpha1", "v2alpha1"),
            ("/2024-06-01/messages", "2024-06-01"),
            ("/api/chat", ""),
            ("/v/x", ""),
            ("/video/x", ""),
            ("/v1./x", ""),
            ("/V1X/x", ""),
            ("/2024-6-01/x", ""),
            ("", ""),
        ] {
            assert_eq!(version_segment(path), v, "{path}");
        }
        let mut r = UsageRecord {
            endpoint: "/v3/x".into(),
            ..Default::default()
        };
        assert_eq!(r.version(), "v3");
        r.extra_mut().api_version = "2025-01-01".into();
        assert_eq!(r.version(), "2025-01-01");
        // Boxed-but-empty extras read, and compare, as none.
        let mut boxed = UsageRecord::default();
        boxed.extra_mut();
        assert_eq!(boxed, UsageRecord::default());
        assert!(RecordExtra::default().boxed().0.is_none());
        assert_ne!(
            r,
            UsageRecord {
                endpoint: "/v3/x".into(),
                ..Default::default()
            }
        );
        // The request lanes preallocate a slot per record: keep it small.
        assert!(std::mem::size_of::<UsageRecord>() <= 168);
        assert_eq!(country_code("de").as_deref(), Some("DE"));
        assert_eq!(country_code("DEU"), None);
        assert_eq!(country_code("1a"), None);
    }
}
