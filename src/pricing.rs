//! Model prices (USD per token, LiteLLM's field names) and the cost of a record.
//!
//! The default table, `data/model-prices.json`, is compiled in; an operator
//! can replace it with a file of the same shape (`prices` in the config).

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

const DEFAULT_PRICES: &str = include_str!("../data/model-prices.json");

#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
pub struct ModelPrice {
    #[serde(default)]
    pub(crate) input_cost_per_token: f64,
    #[serde(default)]
    pub(crate) output_cost_per_token: f64,
}

#[derive(Debug, Clone)]
pub struct PriceTable {
    models: HashMap<String, ModelPrice>,
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

/// The cost of a request, or `None` when the model has no price.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Cost {
    Priced(f64),
    UnknownModel,
}

impl Cost {
    pub fn usd(self) -> f64 {
        match self {
            Cost::Priced(c) => c,
            Cost::UnknownModel => 0.0,
        }
    }
}

impl PriceTable {
    pub fn builtin() -> PriceTable {
        PriceTable::parse(DEFAULT_PRICES, "built-in table").unwrap_or(PriceTable {
            models: HashMap::new(),
        })
    }

    pub fn load(path: &Path) -> Result<PriceTable, PriceError> {
        let text = std::fs::read_to_string(path).map_err(|source| PriceError::Io {
            path: path.display().to_string(),
            source,
        })?;
        PriceTable::parse(&text, &path.display().to_string())
    }

    fn parse(text: &str, origin: &str) -> Result<PriceTable, PriceError> {
        // LiteLLM's file carries a "sample_spec" entry and fields we ignore.
        let raw: HashMap<String, serde_json::Value> =
            serde_json::from_str(text).map_err(|e| PriceError::Invalid {
                path: origin.into(),
                msg: e.to_string(),
            })?;
        let mut models = HashMap::new();
        for (name, v) in raw {
            if name == "sample_spec" {
                continue;
            }
            if let Ok(p) = serde_json::from_value::<ModelPrice>(v) {
                if p.input_cost_per_token.is_finite()
                    && p.output_cost_per_token.is_finite()
                    && p.input_cost_per_token >= 0.0
                    && p.output_cost_per_token >= 0.0
                {
                    models.insert(name, p);
                }
            }
        }
        Ok(PriceTable { models })
    }

    /// The price of `model`: an exact name, else the name without a provider
    /// prefix (`openai/gpt-4o`), else the longest priced name it extends with a
    /// dated or tagged suffix (`gpt-4o-2024-08-06` -> `gpt-4o`).
    pub fn price(&self, model: &str) -> Option<ModelPrice> {
        self.priced(model).map(|(_, p)| p)
    }

    /// The table's name for `model` and its price, found as [`Self::price`] does.
    pub fn priced<'a>(&'a self, model: &str) -> Option<(&'a str, ModelPrice)> {
        let found = |name: &str| {
            self.models
                .get_key_value(name)
                .map(|(k, p)| (k.as_str(), *p))
        };
        if let Some(p) = found(model) {
            return Some(p);
        }
        let bare = model.rsplit('/').next().unwrap_or(model);
        if let Some(p) = found(bare) {
            return Some(p);
        }
        let mut name = bare;
        while let Some(i) = name.rfind('-') {
            name = &name[..i];
            if let Some(p) = found(name) {
                return Some(p);
            }
        }
        None
    }

    /// Every priced model, by name.
    pub fn models(&self) -> impl Iterator<Item = (&str, ModelPrice)> {
        self.models.iter().map(|(k, p)| (k.as_str(), *p))
    }

    /// Cost of one request. An empty model name costs nothing and is not "unknown".
    pub fn cost(&self, model: &str, prompt_tokens: u64, completion_tokens: u64) -> Cost {
        if model.is_empty() || (prompt_tokens == 0 && completion_tokens == 0) {
            return Cost::Priced(0.0);
        }
        match self.price(model) {
            Some(p) => Cost::Priced(
                prompt_tokens as f64 * p.input_cost_per_token
                    + completion_tokens as f64 * p.output_cost_per_token,
            ),
            None => Cost::UnknownModel,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_prices_match_the_spec() {
        let t = PriceTable::builtin();
        let per_million = |m: &str| {
            let p = t.price(m).unwrap();
            (
                (p.input_cost_per_token * 1e6 * 100.0).round() / 100.0,
                (p.output_cost_per_token * 1e6 * 100.0).round() / 100.0,
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
    }

    #[test]
    fn costs_and_fallbacks() {
        let t = PriceTable::builtin();
        let c = t.cost("gpt-4o", 1_000_000, 1_000_000).usd();
        assert!((c - 12.5).abs() < 1e-9);
        assert_eq!(t.price("gpt-4o-2024-08-06"), t.price("gpt-4o"));
        assert_eq!(t.price("openai/gpt-4o-mini"), t.price("gpt-4o-mini"));
        assert_eq!(t.cost("no-such-model", 10, 10), Cost::UnknownModel);
        assert_eq!(t.cost("", 10, 10), Cost::Priced(0.0));
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
        assert_eq!(t.cost("mine", 1, 1), Cost::Priced(3.0));
        assert_eq!(t.cost("gpt-4o", 1, 1), Cost::UnknownModel);
        std::fs::write(&p, "not json").unwrap();
        assert!(PriceTable::load(&p).is_err());
    }
}
