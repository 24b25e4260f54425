//! What tokens cost: a model's configured price, or a default from a table of well-known
//! models (USD per million tokens, list prices; matched by the longest prefix of the upstream
//! model name). Local models have no price and cost nothing.

use crate::config::PricingConfig;
use crate::providers::Usage;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    pub cached_input: f64,
}

impl From<PricingConfig> for Price {
    fn from(p: PricingConfig) -> Self {
        Price {
            input: p.input,
            output: p.output,
            cached_input: p.cached_input.unwrap_or(p.input),
        }
    }
}

/// (prefix, input, output, cached input)
const DEFAULTS: &[(&str, f64, f64, f64)] = &[
    ("gpt-4o-mini", 0.15, 0.60, 0.075),
    ("gpt-4o", 2.50, 10.00, 1.25),
    ("gpt-4.1-nano", 0.10, 0.40, 0.025),
    ("gpt-4.1-mini", 0.40, 1.60, 0.10),
    ("gpt-4.1", 2.00, 8.00, 0.50),
    ("gpt-5-nano", 0.05, 0.40, 0.005),
    ("gpt-5-mini", 0.25, 2.00, 0.025),
    ("gpt-5", 1.25, 10.00, 0.125),
    ("o4-mini", 1.10, 4.40, 0.275),
    ("o3-mini", 1.10, 4.40, 0.55),
    ("o3", 2.00, 8.00, 0.50),
    ("text-embedding-3-small", 0.02, 0.0, 0.02),
    ("text-embedding-3-large", 0.13, 0.0, 0.13),
    ("claude-3-5-haiku", 0.80, 4.00, 0.08),
    ("claude-haiku-4-5", 1.00, 5.00, 0.10),
    ("claude-3-7-sonnet", 3.00, 15.00, 0.30),
    ("claude-sonnet-4", 3.00, 15.00, 0.30),
    ("claude-opus-4", 15.00, 75.00, 1.50),
    ("gemini-2.5-flash-lite", 0.10, 0.40, 0.025),
    ("gemini-2.5-flash", 0.30, 2.50, 0.075),
    ("gemini-2.5-pro", 1.25, 10.00, 0.31),
    ("gemini-2.0-flash", 0.10, 0.40, 0.025),
    ("mistral-small", 0.10, 0.30, 0.10),
    ("mistral-large", 2.00, 6.00, 2.00),
    ("deepseek-chat", 0.27, 1.10, 0.07),
    ("deepseek-reasoner", 0.55, 2.19, 0.14),
];

/// The default price of an upstream model, if it is a well-known one.
pub fn default_for(upstream_model: &str) -> Option<Price> {
    let name = upstream_model.rsplit('/').next().unwrap_or(upstream_model); // "openai/gpt-4o" on routers
    DEFAULTS
        .iter()
        .filter(|(prefix, ..)| name.starts_with(prefix))
        .max_by_key(|(prefix, ..)| prefix.len())
        .map(|&(_, input, output, cached_input)| Price {
            input,
            output,
            cached_input,
        })
}

/// The cost of a usage in USD.
pub fn cost(price: &Price, usage: &Usage) -> f64 {
    let cached = usage.cached_tokens.unwrap_or(0).min(usage.prompt_tokens);
    let fresh = usage.prompt_tokens - cached;
    (fresh as f64 * price.input
        + cached as f64 * price.cached_input
        + usage.completion_tokens as f64 * price.output)
        / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins_and_cached_tokens_are_cheaper() {
        assert_eq!(default_for("gpt-4o-mini-2024-07-18").unwrap().input, 0.15);
        assert_eq!(default_for("gpt-4o-2024-08-06").unwrap().input, 2.50);
        assert_eq!(default_for("claude-3-5-haiku-latest").unwrap().output, 4.00);
        assert!(default_for("llama3.2:1b").is_none());
        let p = default_for("gpt-4o").unwrap();
        let u = Usage {
            prompt_tokens: 1_000_000,
            completion_tokens: 100_000,
            cached_tokens: Some(500_000),
            ..Usage::default()
        };
        assert!((cost(&p, &u) - (1.25 + 0.625 + 1.0)).abs() < 1e-9);
    }
}
