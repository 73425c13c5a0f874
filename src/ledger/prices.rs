//! What tokens cost: a built-in table for common models (USD per million tokens, from the
//! providers' public price lists; check them before relying on a figure), overridable per
//! model in the config (`input_cost_per_token` / `output_cost_per_token`, LiteLLM's names).

use crate::types::Usage;

/// USD per token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    /// Cached prompt tokens (cache reads), when cheaper than `input`.
    pub cached_input: Option<f64>,
}

impl Price {
    const fn per_million(input: f64, output: f64, cached: f64) -> Self {
        Self {
            input: input / 1e6,
            output: output / 1e6,
            cached_input: Some(cached / 1e6),
        }
    }

    /// The cost of one reply's usage: cached prompt tokens at their price, the rest of
    /// the prompt at the input price, completion (reasoning included) at the output price.
    pub fn cost(&self, u: &Usage) -> f64 {
        let cached = u.cached_tokens.unwrap_or(0).min(u.prompt_tokens);
        let fresh = u.prompt_tokens - cached;
        fresh as f64 * self.input
            + cached as f64 * self.cached_input.unwrap_or(self.input)
            + u.completion_tokens as f64 * self.output
    }
}

/// Upstream model id prefixes and their prices; the longest matching prefix wins.
const TABLE: &[(&str, Price)] = &[
    ("gpt-4o-mini", Price::per_million(0.15, 0.60, 0.075)),
    ("gpt-4o", Price::per_million(2.50, 10.00, 1.25)),
    ("gpt-4.1-nano", Price::per_million(0.10, 0.40, 0.025)),
    ("gpt-4.1-mini", Price::per_million(0.40, 1.60, 0.10)),
    ("gpt-4.1", Price::per_million(2.00, 8.00, 0.50)),
    ("gpt-5-nano", Price::per_million(0.05, 0.40, 0.005)),
    ("gpt-5-mini", Price::per_million(0.25, 2.00, 0.025)),
    ("gpt-5", Price::per_million(1.25, 10.00, 0.125)),
    ("o4-mini", Price::per_million(1.10, 4.40, 0.275)),
    ("o3-mini", Price::per_million(1.10, 4.40, 0.55)),
    ("o3", Price::per_million(2.00, 8.00, 0.50)),
    ("gpt-3.5-turbo", Price::per_million(0.50, 1.50, 0.50)),
    ("claude-opus-4", Price::per_million(15.00, 75.00, 1.50)),
    ("claude-sonnet-4", Price::per_million(3.00, 15.00, 0.30)),
    ("claude-3-7-sonnet", Price::per_million(3.00, 15.00, 0.30)),
    ("claude-3-5-sonnet", Price::per_million(3.00, 15.00, 0.30)),
    ("claude-haiku-4", Price::per_million(1.00, 5.00, 0.10)),
    ("claude-3-5-haiku", Price::per_million(0.80, 4.00, 0.08)),
    ("claude-3-haiku", Price::per_million(0.25, 1.25, 0.03)),
    ("gemini-2.5-pro", Price::per_million(1.25, 10.00, 0.31)),
    (
        "gemini-2.5-flash-lite",
        Price::per_million(0.10, 0.40, 0.025),
    ),
    ("gemini-2.5-flash", Price::per_million(0.30, 2.50, 0.075)),
    ("gemini-2.0-flash", Price::per_million(0.10, 0.40, 0.025)),
    ("deepseek-chat", Price::per_million(0.27, 1.10, 0.07)),
    ("deepseek-reasoner", Price::per_million(0.55, 2.19, 0.14)),
    ("mistral-large", Price::per_million(2.00, 6.00, 2.00)),
    ("mistral-small", Price::per_million(0.10, 0.30, 0.10)),
];

/// The built-in price of an upstream model id (a `provider/` prefix is ignored), if any.
pub fn builtin(model: &str) -> Option<Price> {
    let id = model
        .rsplit('/')
        .next()
        .unwrap_or(model)
        .to_ascii_lowercase();
    TABLE
        .iter()
        .filter(|(prefix, _)| id.starts_with(prefix))
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(_, p)| *p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins_and_cached_tokens_are_cheaper() {
        assert_eq!(
            builtin("gpt-4o-mini-2024-07-18"),
            TABLE.first().map(|t| t.1)
        );
        assert_eq!(builtin("openai/gpt-4o").map(|p| p.output), Some(10.0 / 1e6));
        assert!(builtin("llama3:latest").is_none());
        let p = Price::per_million(1.0, 2.0, 0.5);
        let u = Usage {
            prompt_tokens: 1_000_000,
            completion_tokens: 1_000_000,
            total_tokens: 2_000_000,
            cached_tokens: Some(500_000),
            ..Usage::default()
        };
        assert!((p.cost(&u) - (0.5 + 0.25 + 2.0)).abs() < 1e-9);
    }
}
