//! Cost insights: where a tenant's own figures of the last 30 days, priced
//! with the price table, say money could be saved, and roughly how much.
//! Each insight states its assumptions; none is made without the figures
//! to back it (a minimum of requests and of savings).
//!
//! - `cheaperModel`: requests to a model whose answers are short, which a
//!   cheaper model of the same family (`gpt-4o` and `gpt-4o-mini`,
//!   `gpt-4.1` and `gpt-4.1-nano`) would have answered for less, at its
//!   prices for the same tokens.
//! - `promptHeavy`: a model whose spend is mostly prompt, with long prompts
//!   for short answers: what caching a repeated prefix would save.
//! - `failedSpend`: tokens paid for on requests that failed.
//! - `retries`: retries (an SDK's `x-stainless-retry-count`, a report's
//!   `retryAttempt`) after failures that were themselves billed: the tokens
//!   paid twice.

use super::words::{count, usd};
use crate::pricing::{ModelPrice, PriceTable};
use crate::rollup::{Agg, Cell, OTHER};

/// The window the insights read (and a month of savings is taken as).
pub(crate) const WINDOW_DAYS: i64 = 30;
/// Requests of one model the window must hold for an insight about it.
pub(crate) const MIN_REQUESTS: u64 = 100;
/// Savings below this a month are not worth a line.
pub(crate) const MIN_SAVINGS_USD: f64 = 1.0;
/// Answers this short (completion tokens, on average) count as short.
pub(crate) const SHORT_COMPLETION: f64 = 300.0;

#[derive(Clone, Debug, PartialEq)]
pub struct Insight {
    pub kind: &'static str,
    pub title: String,
    pub detail: String,
    pub(crate) estimated_monthly_savings_usd: f64,
}

/// The last segment of a model name that names a size within a family.
const SIZES: [&str; 12] = [
    "mini", "nano", "turbo", "small", "medium", "large", "lite", "flash", "haiku", "sonnet",
    "opus", "pro",
];

/// A model's family: its name without a size segment at the end.
fn family(name: &str) -> &str {
    match name.rsplit_once('-') {
        Some((root, last)) if SIZES.contains(&last) => root,
        _ => name,
    }
}

/// A price per million tokens: cents, or more places below a cent.
fn per_million(p: f64) -> String {
    let m = p * 1e6;
    if m >= 0.01 || m == 0.0 {
        format!("{m:.2}")
    } else {
        format!("{}", (m * 1e6).round() / 1e6)
    }
}

fn cost_at(a: &Agg, p: ModelPrice) -> f64 {
    a.prompt_tokens as f64 * p.input_cost_per_token
        + a.completion_tokens as f64 * p.output_cost_per_token
}

/// The insights `window` (the last [`WINDOW_DAYS`] of an owner's usage)
/// supports, the largest savings first.
pub fn insights(window: &Cell, prices: &PriceTable) -> Vec<Insight> {
    let mut out = Vec::new();
    for (model, a) in &window.models {
        if model == OTHER || a.requests < MIN_REQUESTS || a.cost_usd <= 0.0 {
            continue;
        }
        let Some((name, price)) = prices.priced(model) else {
            continue;
        };
        let n = a.requests as f64;
        let (prompt, completion) = (a.prompt_tokens as f64 / n, a.completion_tokens as f64 / n);
        if completion > 0.0 && completion <= SHORT_COMPLETION {
            let cheaper = prices
                .models()
                .filter(|(other, _)| *other != name && family(other) == family(name))
                .map(|(other, p)| (other, p, cost_at(a, p)))
                .filter(|(_, _, c)| *c < a.cost_usd)
                .min_by(|x, y| x.2.total_cmp(&y.2).then(x.0.cmp(y.0)));
            if let Some((other, p, cost)) = cheaper {
                let saved = a.cost_usd - cost;
                if saved >= MIN_SAVINGS_USD {
                    out.push(Insight {
                        kind: "cheaperModel",
                        title: format!(
                            "Short answers from {model}: {other} would cost {} less a month",
                            usd(saved)
                        ),
                        detail: format!(
                            "{} requests to {model} in the last {WINDOW_DAYS} days averaged {} completion tokens (and {} prompt tokens) and cost {}. At {other}'s prices (${} in, ${} out per million tokens) the same tokens would have cost {}. This assumes the same token counts and that {other} answers these short requests as well: try it on a sample first.",
                            count(a.requests),
                            count(completion.round() as u64),
                            count(prompt.round() as u64),
                            usd(a.cost_usd),
                            per_million(p.input_cost_per_token),
                            per_million(p.output_cost_per_token),
                            usd(cost),
                        ),
                        estimated_monthly_savings_usd: saved,
                    });
                }
            }
        }
        let prompt_cost = a.prompt_tokens as f64 * price.input_cost_per_token;
        let share = prompt_cost / a.cost_usd;
        if share >= 0.75 && prompt >= 1_000.0 && prompt >= 8.0 * completion {
            let saved = prompt_cost / 4.0;
            if saved >= MIN_SAVINGS_USD {
                out.push(Insight {
                    kind: "promptHeavy",
                    title: format!(
                        "Prompts are {:.0} % of the spend on {model}",
                        share * 100.0
                    ),
                    detail: format!(
                        "{} requests to {model} in the last {WINDOW_DAYS} days sent {} prompt tokens on average for {} completion tokens; the prompts cost {} of {}. If half of each prompt is a prefix repeated across requests (system prompt, tool definitions, earlier turns) and the provider's prompt cache bills it at half price, as OpenAI's does, that saves a quarter of the prompt spend, about {}. Put the fixed part first and keep it byte-identical; trimming history and retrieved context saves more.",
                        count(a.requests),
                        count(prompt.round() as u64),
                        count(completion.round() as u64),
                        usd(prompt_cost),
                        usd(a.cost_usd),
                        usd(saved),
                    ),
                    estimated_monthly_savings_usd: saved,
                });
            }
        }
    }
    let x = &window.ext;
    let failed = window.total.errors;
    if x.failed_cost_usd >= MIN_SAVINGS_USD {
        let mut statuses: Vec<(u16, u64)> = window
            .statuses
            .iter()
            .filter(|(s, _)| **s >= 400)
            .map(|(s, n)| (*s, *n))
            .collect();
        statuses.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let top: Vec<String> = statuses
            .iter()
            .take(3)
            .map(|(s, n)| format!("{s} ({})", count(*n)))
            .collect();
        out.push(Insight {
            kind: "failedSpend",
            title: format!("Failed requests cost {} in tokens", usd(x.failed_cost_usd)),
            detail: format!(
                "{} requests in the last {WINDOW_DAYS} days failed (status 400 or more; Tollgate's own refusals, which cost nothing, are not counted), and {} of them were billed tokens, {} in all. The most frequent failures: {}. Each one fixed at its cause (a malformed request, a context over the model's limit, a timeout shorter than the answer takes) saves its tokens.",
                count(failed),
                count(x.failed_billed),
                usd(x.failed_cost_usd),
                top.join(", "),
            ),
            estimated_monthly_savings_usd: x.failed_cost_usd,
        });
    }
    let attempts_failed = failed + window.total.rejected;
    if x.retries > 0 && attempts_failed > 0 && x.failed_billed > 0 {
        let billed_share = x.failed_billed as f64 / attempts_failed as f64;
        let saved = x.retry_cost_usd * billed_share;
        if saved >= MIN_SAVINGS_USD {
            out.push(Insight {
                kind: "retries",
                title: format!("Retries paid for tokens twice: about {}", usd(saved)),
                detail: format!(
                    "{} requests in the last {WINDOW_DAYS} days were retries of an earlier attempt and cost {}; {} requests were answered 429 and {} failed otherwise, and {:.0} % of the failed attempts were billed. A retry of a billed attempt pays for its prompt again: the estimate is the retries' cost times that share. Waiting as Retry-After and the RateLimit headers say before retrying, and client timeouts longer than the model's answers take, avoid it.",
                    count(x.retries),
                    usd(x.retry_cost_usd),
                    count(x.too_many),
                    count(failed),
                    billed_share * 100.0,
                ),
                estimated_monthly_savings_usd: saved,
            });
        }
    }
    out.sort_by(|a, b| {
        b.estimated_monthly_savings_usd
            .total_cmp(&a.estimated_monthly_savings_usd)
            .then(a.kind.cmp(b.kind))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TokenCounts;

    fn window(models: &[(&str, u64, u64, u64)]) -> Cell {
        let prices = PriceTable::builtin();
        let mut c = Cell::default();
        for &(m, n, prompt, completion) in models {
            let cost = prices
                .cost(m, &TokenCounts::from_upstream(prompt, completion, 0), 0)
                .usd()
                * n as f64;
            c.models.insert(
                m.to_string(),
                Agg {
                    requests: n,
                    prompt_tokens: prompt * n,
                    completion_tokens: completion * n,
                    tokens: (prompt + completion) * n,
                    cost_usd: cost,
                    ..Default::default()
                },
            );
        }
        c
    }

    #[test]
    fn short_answers_from_a_big_model_point_to_its_small_sibling() {
        // 10,000 requests of 500 prompt and 80 completion tokens on gpt-4o:
        // $12.50 + $8.00 = $20.50; on gpt-4o-mini $0.75 + $0.48 = $1.23.
        let c = window(&[("gpt-4o", 10_000, 500, 80)]);
        let found = insights(&c, &PriceTable::builtin());
        assert_eq!(found.len(), 1, "{found:?}");
        let i = &found[0];
        assert_eq!(i.kind, "cheaperModel");
        assert!(
            (i.estimated_monthly_savings_usd - 19.27).abs() < 1e-6,
            "{i:?}"
        );
        assert!(
            i.title.contains("gpt-4o-mini would cost $19.27 less"),
            "{}",
            i.title
        );
        assert!(i.detail.contains("10,000 requests"), "{}", i.detail);
        assert!(i.detail.contains("$0.15 in, $0.60 out"), "{}", i.detail);
        // gpt-4.1's cheapest sibling is nano.
        let c = window(&[("gpt-4.1", 10_000, 500, 80)]);
        assert!(insights(&c, &PriceTable::builtin())[0]
            .title
            .contains("gpt-4.1-nano"));
    }

    #[test]
    fn long_prompts_for_short_answers_point_to_caching() {
        // 2,000 requests of 20,000 prompt tokens and 400 completion tokens
        // on gpt-4o: prompts $100 of $108; a quarter is $25.
        let c = window(&[("gpt-4o", 2_000, 20_000, 400)]);
        let found = insights(&c, &PriceTable::builtin());
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].kind, "promptHeavy");
        assert!((found[0].estimated_monthly_savings_usd - 25.0).abs() < 1e-6);
        assert!(found[0].title.contains("93 %"), "{}", found[0].title);
    }

    #[test]
    fn billed_failures_and_the_retries_after_them() {
        let mut c = Cell::default();
        c.total.errors = 400;
        c.total.rejected = 600;
        c.statuses.insert(500, 300);
        c.statuses.insert(504, 100);
        c.statuses.insert(200, 5_000);
        c.ext.failed_cost_usd = 12.0;
        c.ext.failed_billed = 250;
        c.ext.retries = 800;
        c.ext.retry_cost_usd = 40.0;
        c.ext.too_many = 600;
        let found = insights(&c, &PriceTable::builtin());
        let kinds: Vec<&str> = found.iter().map(|i| i.kind).collect();
        assert_eq!(kinds, ["failedSpend", "retries"], "{found:?}");
        assert_eq!(found[0].estimated_monthly_savings_usd, 12.0);
        assert!(
            found[0].detail.contains("500 (300), 504 (100)"),
            "{}",
            found[0].detail
        );
        // 250 of 1,000 failed attempts billed: a quarter of $40.
        assert_eq!(found[1].estimated_monthly_savings_usd, 10.0);
        // Retries after refusals that cost nothing save nothing.
        c.ext.failed_billed = 0;
        c.ext.failed_cost_usd = 0.0;
        assert_eq!(insights(&c, &PriceTable::builtin()), vec![]);
    }

    #[test]
    fn no_insight_without_the_figures() {
        let prices = PriceTable::builtin();
        // Too few requests; already the cheapest; long answers; unpriced; too little money.
        for models in [
            vec![("gpt-4o", 99, 500, 80)],
            vec![("gpt-4o-mini", 10_000, 500, 80)],
            vec![("gpt-4o", 10_000, 500, 2_000)],
            vec![("my-own-model", 10_000, 500, 80)],
            vec![("gpt-4o", 200, 100, 10)],
        ] {
            let c = window(&models);
            assert_eq!(insights(&c, &prices), vec![], "{models:?}");
        }
        assert_eq!(family("gpt-4o-mini"), "gpt-4o");
        assert_eq!(family("gpt-4-turbo"), "gpt-4");
        assert_eq!(family("gpt-3.5-turbo"), "gpt-3.5");
    }
}
