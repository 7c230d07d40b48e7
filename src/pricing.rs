//! Model prices and the cost of a record.
//!
//! The table is LiteLLM's `model_prices_and_context_window.json` shape: an
//! object of model names, each with its prices in USD per token under
//! LiteLLM's field names - `input_cost_per_token`, `output_cost_per_token`,
//! `cache_read_input_token_cost`, `cache_creation_input_token_cost`,
//! `cache_creation_input_token_cost_above_1hr`,
//! `output_cost_per_reasoning_token` and the `_above_200k_tokens` tier of
//! the first two - and every other field read past, so that LiteLLM's own
//! file can be pointed at as it is (`prices` in the config). Tollgate adds
//! one thing: a model's value may be a list of such entries, each with
//! `effectiveFrom` (a date, or an RFC 3339 time), and each record is
//! priced with the entry in effect at its own time - so history prices the
//! same after a price change is added.
//!
//! The default table, `data/model-prices.json`, is compiled in; its
//! `_meta` entry says when it was checked.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

pub use crate::model::Priced;
use crate::model::{CostSplit, TokenCounts};

const DEFAULT_PRICES: &str = include_str!("../data/model-prices.json");

/// Prompts above this many tokens take the `_above_200k_tokens` prices,
/// where a model has them.
const LONG_PROMPT: u64 = 200_000;

/// One model's prices, USD per token (LiteLLM's field names). A kind
/// without a price of its own takes the input's (cache) or the output's
/// (reasoning).
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
pub struct ModelPrice {
    #[serde(default)]
    pub(crate) input_cost_per_token: f64,
    #[serde(default)]
    pub(crate) output_cost_per_token: f64,
    #[serde(default)]
    pub(crate) cache_read_input_token_cost: Option<f64>,
    #[serde(default)]
    pub(crate) cache_creation_input_token_cost: Option<f64>,
    #[serde(default)]
    pub(crate) cache_creation_input_token_cost_above_1hr: Option<f64>,
    #[serde(default)]
    pub(crate) output_cost_per_reasoning_token: Option<f64>,
    #[serde(default)]
    pub(crate) input_cost_per_token_above_200k_tokens: Option<f64>,
    #[serde(default)]
    pub(crate) output_cost_per_token_above_200k_tokens: Option<f64>,
}

impl ModelPrice {
    fn valid(&self) -> bool {
        [
            Some(self.input_cost_per_token),
            Some(self.output_cost_per_token),
            self.cache_read_input_token_cost,
            self.cache_creation_input_token_cost,
            self.cache_creation_input_token_cost_above_1hr,
            self.output_cost_per_reasoning_token,
            self.input_cost_per_token_above_200k_tokens,
            self.output_cost_per_token_above_200k_tokens,
        ]
        .into_iter()
        .flatten()
        .all(|p| p.is_finite() && p >= 0.0)
    }

    /// The cost of `c`, by kind: the uncached prompt at the input price,
    /// cache reads and writes (5-minute and 1-hour) at theirs, the
    /// completion at the output price with its reasoning at the reasoning
    /// price. A prompt above 200,000 tokens takes the long-prompt prices
    /// where there are some.
    pub fn split(&self, c: &TokenCounts) -> (f64, CostSplit) {
        let long = c.prompt > LONG_PROMPT;
        let tier = |base: f64, above: Option<f64>| if long { above.unwrap_or(base) } else { base };
        let input = tier(
            self.input_cost_per_token,
            self.input_cost_per_token_above_200k_tokens,
        );
        let output = tier(
            self.output_cost_per_token,
            self.output_cost_per_token_above_200k_tokens,
        );
        let k = c.kinds;
        let write_5m = self.cache_creation_input_token_cost.unwrap_or(input);
        let write_1h = self
            .cache_creation_input_token_cost_above_1hr
            .unwrap_or(write_5m);
        let reasoning_price = self.output_cost_per_reasoning_token.unwrap_or(output);
        let reasoning = k.reasoning as f64 * reasoning_price;
        let split = CostSplit {
            uncached_prompt: k.uncached_prompt(c.prompt) as f64 * input,
            cached_prompt: k.cached_prompt as f64
                * self.cache_read_input_token_cost.unwrap_or(input),
            cache_write: k.cache_write.saturating_sub(k.cache_write_1h) as f64 * write_5m
                + k.cache_write_1h as f64 * write_1h,
            completion: c.completion.saturating_sub(k.reasoning) as f64 * output + reasoning,
            reasoning,
        };
        (split.total(), split)
    }
}

/// Every price of every model, each model's entries by when they take
/// effect.
#[derive(Debug, Clone)]
pub struct PriceTable {
    /// By model: `(from_ms, price)`, oldest first; the first applies to
    /// everything before the second.
    models: HashMap<String, Vec<(i64, ModelPrice)>>,
    /// A provider's prefixed name (`gemini/gemini-2.5-pro`) by its bare
    /// name, where the table has no bare entry.
    bare: HashMap<String, String>,
    /// When the table was last checked against the providers (`_meta`).
    checked: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PriceError {
    #[error("cannot read price table {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("price table {path} is not valid: {msg}")]
    Invalid { path: String, msg: String },
}

/// The cost of a request, or `UnknownModel` when the model has no price.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Cost {
    Priced(Priced),
    UnknownModel,
}

impl Cost {
    pub const FREE: Cost = Cost::Priced(Priced {
        usd: 0.0,
        split: CostSplit::NONE,
    });

    pub fn usd(self) -> f64 {
        self.priced().usd
    }

    /// What it costs; nothing for an unknown model.
    pub fn priced(self) -> Priced {
        match self {
            Cost::Priced(p) => p,
            Cost::UnknownModel => Priced::default(),
        }
    }
}

/// `effectiveFrom` as milliseconds: a date (`2026-01-01`, from its UTC
/// midnight) or an RFC 3339 time.
fn effective_ms(s: &str) -> Option<i64> {
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis());
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

impl PriceTable {
    pub fn builtin() -> PriceTable {
        PriceTable::parse(DEFAULT_PRICES, "built-in table").unwrap_or(PriceTable {
            models: HashMap::new(),
            bare: HashMap::new(),
            checked: None,
        })
    }

    pub fn load(path: &Path) -> Result<PriceTable, PriceError> {
        let text = std::fs::read_to_string(path).map_err(|source| PriceError::Io {
            path: path.display().to_string(),
            source,
        })?;
        PriceTable::parse(&text, &path.display().to_string())
    }

    /// Reads a table: every entry with a per-token price is kept (LiteLLM's
    /// `sample_spec`, and models priced per image or per second, are
    /// not); a dated entry whose date cannot be read, or a price that is
    /// negative or not a number, refuses the table with the model's name.
    fn parse(text: &str, origin: &str) -> Result<PriceTable, PriceError> {
        let invalid = |msg: String| PriceError::Invalid {
            path: origin.into(),
            msg,
        };
        let raw: HashMap<String, serde_json::Value> =
            serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let mut models: HashMap<String, Vec<(i64, ModelPrice)>> = HashMap::new();
        let mut checked = None;
        for (name, v) in raw {
            if name == "_meta" {
                checked = v
                    .get("checked")
                    .and_then(|c| c.as_str())
                    .map(str::to_string);
                continue;
            }
            if name == "sample_spec" {
                continue;
            }
            let entries = match v {
                serde_json::Value::Array(list) => list,
                one @ serde_json::Value::Object(_) => vec![one],
                _ => continue,
            };
            for e in entries {
                // LiteLLM's file also lists image, audio and search models
                // priced in other units: they are not per-token prices.
                if e.get("input_cost_per_token").is_none()
                    && e.get("output_cost_per_token").is_none()
                {
                    continue;
                }
                let effective_from = e
                    .get("effectiveFrom")
                    .and_then(|v| v.as_str())
                    .map(str::to_string);
                let price = serde_json::from_value::<ModelPrice>(e)
                    .map_err(|err| invalid(format!("{name}: {err}")))?;
                if !price.valid() {
                    return Err(invalid(format!(
                        "{name}: a price is negative or not a number"
                    )));
                }
                let from = match effective_from.as_deref() {
                    None => i64::MIN,
                    Some(s) => effective_ms(s).ok_or_else(|| {
                        invalid(format!(
                            "{name}: effectiveFrom {s:?} is neither a date (2026-01-31) nor an RFC 3339 time"
                        ))
                    })?,
                };
                models.entry(name.clone()).or_default().push((from, price));
            }
        }
        for (name, entries) in &mut models {
            entries.sort_by_key(|(from, _)| *from);
            if entries.windows(2).any(|w| w[0].0 == w[1].0) {
                return Err(invalid(format!(
                    "{name}: two prices take effect at the same time"
                )));
            }
        }
        let mut bare = HashMap::new();
        let mut prefixed: Vec<&String> = models.keys().filter(|k| k.contains('/')).collect();
        prefixed.sort();
        for name in prefixed {
            let short = name.rsplit('/').next().unwrap_or(name);
            if !models.contains_key(short) {
                bare.entry(short.to_string())
                    .or_insert_with(|| name.clone());
            }
        }
        Ok(PriceTable {
            models,
            bare,
            checked,
        })
    }

    /// When the table was last checked against the providers' prices.
    pub fn checked(&self) -> Option<&str> {
        self.checked.as_deref()
    }

    /// The table's name for `model`: an exact name, else the name without a
    /// provider prefix (`openai/gpt-4o`), else a provider's entry of that
    /// bare name, else the longest priced name it extends with a dated or
    /// tagged suffix (`gpt-4o-2024-08-06` -> `gpt-4o`).
    fn name_of<'a>(&'a self, model: &str) -> Option<&'a str> {
        let found = |name: &str| {
            self.models
                .get_key_value(name)
                .map(|(k, _)| k.as_str())
                .or_else(|| self.bare.get(name).map(String::as_str))
        };
        if let Some(n) = found(model) {
            return Some(n);
        }
        let bare = model.rsplit('/').next().unwrap_or(model);
        if let Some(n) = found(bare) {
            return Some(n);
        }
        let mut name = bare;
        while let Some(i) = name.rfind('-') {
            name = &name[..i];
            if let Some(n) = found(name) {
                return Some(n);
            }
        }
        None
    }

    /// The price of `model` in effect at `ts_ms` (the earliest entry for
    /// a time before every entry).
    pub fn price_at(&self, model: &str, ts_ms: i64) -> Option<ModelPrice> {
        let entries = &self.models[self.name_of(model)?];
        let at = entries.partition_point(|(from, _)| *from <= ts_ms);
        Some(entries[at.saturating_sub(1)].1)
    }

    /// The price of `model` now: its latest entry.
    pub fn price(&self, model: &str) -> Option<ModelPrice> {
        self.priced(model).map(|(_, p)| p)
    }

    /// The table's name for `model` and its latest price.
    pub fn priced<'a>(&'a self, model: &str) -> Option<(&'a str, ModelPrice)> {
        let name = self.name_of(model)?;
        self.models[name].last().map(|(_, p)| (name, *p))
    }

    /// Every priced model, by name, at its latest price.
    pub fn models(&self) -> impl Iterator<Item = (&str, ModelPrice)> {
        self.models
            .iter()
            .filter_map(|(k, e)| e.last().map(|(_, p)| (k.as_str(), *p)))
    }

    /// The cost of one request of `model` made at `ts_ms`, with the price
    /// in effect then. An empty model name, or no tokens, cost nothing
    /// and are not "unknown".
    pub fn cost(&self, model: &str, counts: &TokenCounts, ts_ms: i64) -> Cost {
        if model.is_empty() || (counts.prompt == 0 && counts.completion == 0) {
            return Cost::FREE;
        }
        match self.price_at(model, ts_ms) {
            Some(p) => {
                let (usd, split) = p.split(counts);
                Cost::Priced(Priced { usd, split })
            }
            None => Cost::UnknownModel,
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TokenKinds;

    fn tokens(prompt: u64, completion: u64) -> TokenCounts {
        TokenCounts::from_upstream(prompt, completion, 0)
    }

    #[test]
    fn builtin_prices_match_the_providers() {
        let t = PriceTable::builtin();
        let per_million = |m: &str| {
            let p = t.price(m).unwrap();
            (
                (p.input_cost_per_token * 1e8).round() / 100.0,
                (p.output_cost_per_token * 1e8).round() / 100.0,
            )
        };
        assert_eq!(per_million("gpt-4o"), (2.5, 10.0));
        assert_eq!(per_million("gpt-4o-mini"), (0.15, 0.6));
        assert_eq!(per_million("gpt-4.1"), (2.0, 8.0));
        assert_eq!(per_million("gpt-4.1-mini"), (0.4, 1.6));
        assert_eq!(per_million("gpt-4.1-nano"), (0.1, 0.4));
        assert_eq!(per_million("gpt-4-turbo"), (10.0, 30.0));
        assert_eq!(per_million("gpt-4"), (30.0, 60.0));
        assert_eq!(per_million("gpt-3.5-turbo"), (0.5, 1.5));
        assert_eq!(per_million("claude-sonnet-4-5-20250929"), (3.0, 15.0));
        assert_eq!(per_million("claude-opus-4-1"), (15.0, 75.0));
        assert_eq!(per_million("gemini-2.5-pro"), (1.25, 10.0));
        assert_eq!(per_million("mistral/mistral-large-latest"), (2.0, 6.0));
        assert!(t.checked().is_some());
        // Each provider's current main models are there.
        for m in [
            "gpt-5",
            "gpt-5-mini",
            "o3",
            "o4-mini",
            "text-embedding-3-large",
            "claude-haiku-4-5",
            "claude-3-5-haiku",
            "gemini-2.5-flash",
            "gemini-2.0-flash",
            "mistral-medium-latest",
            "mistral-small-latest",
            "codestral-latest",
        ] {
            assert!(t.price(m).is_some(), "{m}");
        }
    }

    #[test]
    fn costs_and_fallbacks() {
        let t = PriceTable::builtin();
        let c = t.cost("gpt-4o", &tokens(1_000_000, 1_000_000), 0).usd();
        assert!((c - 12.5).abs() < 1e-9);
        assert_eq!(t.price("gpt-4o-2024-08-06"), t.price("gpt-4o"));
        assert_eq!(t.price("openai/gpt-4o-mini"), t.price("gpt-4o-mini"));
        assert_eq!(
            t.cost("no-such-model", &tokens(10, 10), 0),
            Cost::UnknownModel
        );
        assert_eq!(t.cost("", &tokens(10, 10), 0), Cost::FREE);
    }

    #[test]
    fn kinds_are_priced_apart_and_never_twice() {
        let t = PriceTable::builtin();
        // Claude Sonnet 4.5: $3 in, $3.75 5-minute writes, $6 1-hour
        // writes, $0.30 reads, $15 out (per million).
        let c = tokens(10_000 + 20_000 + 30_000 + 40_000, 10_000).with_kinds(TokenKinds {
            cached_prompt: 20_000,
            cache_write: 70_000,
            cache_write_1h: 40_000,
            reasoning: 0,
        });
        let p = t.cost("claude-sonnet-4-5", &c, 0).priced();
        let want =
            (10_000.0 * 3.0 + 20_000.0 * 0.30 + 30_000.0 * 3.75 + 40_000.0 * 6.0 + 10_000.0 * 15.0)
                / 1e6;
        assert!((p.usd - want).abs() < 1e-12, "{} {want}", p.usd);
        assert!((p.split.cached_prompt - 0.006).abs() < 1e-12);
        assert!((p.split.cache_write - (0.1125 + 0.24)).abs() < 1e-12);
        assert!((p.split.uncached_prompt - 0.03).abs() < 1e-12);
        // Reasoning is part of the completion, priced once.
        let o = tokens(0, 1_000_000).with_kinds(TokenKinds {
            reasoning: 600_000,
            ..TokenKinds::NONE
        });
        let p = t.cost("o3", &o, i64::MAX).priced();
        assert!((p.usd - 8.0).abs() < 1e-9, "{}", p.usd);
        assert!((p.split.reasoning - 4.8).abs() < 1e-9);
        // Kinds past their figure are cut to it.
        let k = TokenKinds {
            cached_prompt: 50,
            cache_write: 50,
            cache_write_1h: 80,
            reasoning: 9,
        }
        .fit(70, 5);
        assert_eq!(
            (
                k.cached_prompt,
                k.cache_write,
                k.cache_write_1h,
                k.reasoning
            ),
            (50, 20, 20, 5)
        );
    }

    #[test]
    fn each_record_is_priced_at_its_own_time() {
        let t = PriceTable::parse(
            r#"{"m": [
                {"input_cost_per_token": 2e-6, "output_cost_per_token": 8e-6, "effectiveFrom": "2026-06-10"},
                {"input_cost_per_token": 1e-5, "output_cost_per_token": 4e-5}
            ]}"#,
            "t",
        )
        .unwrap();
        let june = effective_ms("2026-06-10").unwrap();
        let c = tokens(1_000_000, 1_000_000);
        assert!((t.cost("m", &c, june - 1).usd() - 50.0).abs() < 1e-9);
        assert!((t.cost("m", &c, june).usd() - 10.0).abs() < 1e-9);
        assert!((t.cost("m", &c, i64::MIN).usd() - 50.0).abs() < 1e-9);
        assert_eq!(t.price("m").unwrap().input_cost_per_token, 2e-6);
        for bad in [
            r#"{"m": {"input_cost_per_token": 1, "effectiveFrom": "June"}}"#,
            r#"{"m": {"input_cost_per_token": -1}}"#,
            r#"{"m": [{"input_cost_per_token": 1}, {"input_cost_per_token": 2}]}"#,
        ] {
            assert!(PriceTable::parse(bad, "t").is_err(), "{bad}");
        }
    }

    #[test]
    fn long_prompts_take_their_own_prices() {
        let t = PriceTable::builtin();
        let short = t.cost("gemini-2.5-pro", &tokens(200_000, 0), 0).usd();
        let long = t.cost("gemini-2.5-pro", &tokens(200_001, 0), 0).usd();
        assert!((short - 0.25).abs() < 1e-9, "{short}");
        assert!((long - 200_001.0 * 2.5e-6).abs() < 1e-9, "{long}");
    }

    #[test]
    fn litellms_file_reads_as_it_is() {
        // LiteLLM's shape: `sample_spec`, models priced in other units,
        // provider-prefixed names, fields Tollgate does not use.
        let t = PriceTable::parse(
            r#"{"sample_spec": {"input_cost_per_token": 0.0, "max_tokens": "LEGACY"},
                "dall-e-3": {"output_cost_per_image": 0.04, "mode": "image_generation"},
                "gemini/gemini-9": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6,
                    "cache_read_input_token_cost": 2.5e-7, "litellm_provider": "gemini",
                    "supports_vision": true, "supported_regions": ["global"]}}"#,
            "litellm",
        )
        .unwrap();
        assert_eq!(t.price("dall-e-3"), None);
        assert_eq!(t.price("sample_spec"), None);
        let c = tokens(1_000_000, 0).with_kinds(TokenKinds {
            cached_prompt: 1_000_000,
            ..TokenKinds::NONE
        });
        assert!((t.cost("gemini-9", &c, 0).usd() - 0.25).abs() < 1e-12);
    }

    #[test]
    fn override_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p.json");
        std::fs::write(
            &p,
            r#"{"sample_spec": {"x": 1}, "mine": {"input_cost_per_token": 1.0, "output_cost_per_token": 2.0}}"#,
        )
        .unwrap();
        let t = PriceTable::load(&p).unwrap();
        assert_eq!(t.cost("mine", &tokens(1, 1), 0).usd(), 3.0);
        assert_eq!(t.cost("gpt-4o", &tokens(1, 1), 0), Cost::UnknownModel);
        std::fs::write(&p, "not json").unwrap();
        assert!(PriceTable::load(&p).is_err());
    }
}
