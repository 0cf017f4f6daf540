//! Tokens and their cost. Usage comes from the provider's reply; when a reply carries none (a
//! stream from an upstream that ignores `stream_options`), the tokens are counted with o200k.
//! Money is integer micro-USD throughout; prices are turned into pico-USD per token once, so
//! that no float rounding creeps into the sums.

use serde_json::Value;

use crate::catalog::Price;

/// Tokens of one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    /// Input (prompt) tokens.
    pub input: u64,
    /// Output (completion) tokens.
    pub output: u64,
    /// True when the tokens were counted here, not reported by the provider.
    pub estimated: bool,
}

/// The most tokens one request is believed to use when its model's context window is not known.
pub const TOKENS_MAX: u64 = 10_000_000;

impl Usage {
    /// The usage as a request can really have it: input and output together within the model's
    /// context window ([`TOKENS_MAX`] when the catalog gives none). `None` when the reported
    /// usage already fits; otherwise the usage cut to fit (output first), so that an upstream
    /// that reports absurd figures cannot charge more than one request could cost.
    pub fn bounded(self, context: Option<u64>) -> Option<Usage> {
        let cap = context.unwrap_or(TOKENS_MAX);
        if self.input.saturating_add(self.output) <= cap {
            return None;
        }
        let input = self.input.min(cap);
        Some(Usage { input, output: self.output.min(cap - input), estimated: self.estimated })
    }

    /// Input and output together.
    pub fn total(self) -> u64 {
        self.input.saturating_add(self.output)
    }
}

/// Prices as integer pico-USD per token (USD per million tokens × 10⁶).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rate {
    /// Per input token.
    pub input_pico: u64,
    /// Per output token.
    pub output_pico: u64,
}

impl Rate {
    /// The rate of a catalog price (no price: free).
    pub fn of(price: Option<Price>) -> Rate {
        let pico = |usd_per_million: f64| {
            #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "checked finite, non-negative")]
            let p = if usd_per_million.is_finite() && usd_per_million > 0.0 {
                (usd_per_million * 1e6).round() as u64
            } else {
                0
            };
            p
        };
        price.map_or(Rate::default(), |p| Rate { input_pico: pico(p.input), output_pico: pico(p.output) })
    }

    /// The cost of `input` and `output` tokens in micro-USD, rounded up to the next micro-USD.
    pub fn cost_micros(&self, input: u64, output: u64) -> u64 {
        let pico = u128::from(input) * u128::from(self.input_pico) + u128::from(output) * u128::from(self.output_pico);
        u64::try_from(pico.div_ceil(1_000_000)).unwrap_or(u64::MAX)
    }
}

/// Micro-USD as USD.
pub fn usd(micros: u64) -> f64 {
    #[expect(clippy::cast_precision_loss, reason = "amounts are far below 2^52 micro-USD")]
    let v = micros as f64 / 1e6;
    v
}

/// USD as micro-USD, rounded down (budgets).
pub fn micros(usd: f64) -> u64 {
    #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "checked finite, non-negative")]
    let m = if usd.is_finite() && usd > 0.0 { (usd * 1e6).round() as u64 } else { 0 };
    m
}

/// The `usage` object of an OpenAI reply or chunk, when it has one.
pub fn reported(v: &Value) -> Option<Usage> {
    reported_usage(v.get("usage")?)
}

/// The usage that a reply's `usage` member reports.
pub fn reported_usage(u: &Value) -> Option<Usage> {
    let u = Some(u).filter(|u| u.is_object())?;
    let input =
        u.get("prompt_tokens").and_then(Value::as_u64).or_else(|| u.get("input_tokens").and_then(Value::as_u64));
    let output = u
        .get("completion_tokens")
        .and_then(Value::as_u64)
        .or_else(|| u.get("output_tokens").and_then(Value::as_u64))
        .unwrap_or(0);
    Some(Usage { input: input?, output, estimated: false })
}

/// The text a completion generated (every choice's message content and tool-call arguments).
pub fn completion_text(v: &Value, out: &mut String) {
    for c in v.get("choices").and_then(Value::as_array).into_iter().flatten() {
        for part in [c.get("message"), c.get("delta")].into_iter().flatten() {
            if let Some(t) = part.get("content").and_then(Value::as_str) {
                out.push_str(t);
            }
            for call in part.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                if let Some(a) = call.pointer("/function/arguments").and_then(Value::as_str) {
                    out.push_str(a);
                }
            }
        }
    }
}

/// Puts `usage.cost` (USD) into a reply or chunk that has a `usage` object.
pub fn set_cost(v: &mut Value, cost_micros: u64) {
    if let Some(u) = v.get_mut("usage").and_then(Value::as_object_mut) {
        u.insert("cost".into(), serde_json::json!(usd(cost_micros)));
    }
}

/// A chunk that carries only usage (`choices: []`), the one `include_usage` adds.
pub fn is_usage_chunk(v: &Value) -> bool {
    v.get("usage").is_some_and(Value::is_object)
        && v.get("choices").and_then(Value::as_array).is_some_and(Vec::is_empty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cost_is_exact_integer_arithmetic() {
        // gpt-4o-mini: $0.15 in, $0.60 out per million tokens.
        let r = Rate::of(Some(Price { input: 0.15, output: 0.60 }));
        assert_eq!(r, Rate { input_pico: 150_000, output_pico: 600_000 });
        // 1,000 in + 500 out = 150 + 300 = 450 micro-USD, exactly.
        assert_eq!(r.cost_micros(1_000, 500), 450);
        // 1 token in: 0.15 micro-USD, rounded up to 1.
        assert_eq!(r.cost_micros(1, 0), 1);
        // A million of each: $0.75.
        assert_eq!(r.cost_micros(1_000_000, 1_000_000), 750_000);
        // claude-sonnet: $3 / $15. 12,345 in + 678 out = 37,035 + 10,170.
        let s = Rate::of(Some(Price { input: 3.0, output: 15.0 }));
        assert_eq!(s.cost_micros(12_345, 678), 47_205);
        assert_eq!(Rate::of(None).cost_micros(1_000_000, 1_000_000), 0);
        assert!((usd(47_205) - 0.047_205).abs() < 1e-12);
        assert_eq!(micros(100.0), 100_000_000);
        assert_eq!(micros(0.000_001), 1);
    }

    #[test]
    fn usage_is_read_from_replies_and_chunks() {
        let reply = json!({"usage": {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42}});
        assert_eq!(reported(&reply), Some(Usage { input: 12, output: 30, estimated: false }));
        let embeddings = json!({"usage": {"prompt_tokens": 8, "total_tokens": 8}});
        assert_eq!(reported(&embeddings), Some(Usage { input: 8, output: 0, estimated: false }));
        assert_eq!(reported(&json!({"usage": null})), None);
        assert_eq!(reported(&json!({})), None);
        let chunk = json!({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}});
        assert!(is_usage_chunk(&chunk));
        assert!(!is_usage_chunk(&json!({"choices": [{"delta": {}}]})));
        let mut with_cost = reply.clone();
        set_cost(&mut with_cost, 450);
        assert_eq!(with_cost["usage"]["cost"], json!(0.00045));
    }

    #[test]
    fn completion_text_gathers_content_and_tool_arguments() {
        let mut s = String::new();
        completion_text(&json!({"choices": [{"delta": {"content": "Hello"}}]}), &mut s);
        completion_text(
            &json!({"choices": [{"delta": {"tool_calls": [{"function": {"arguments": "{\"a\":1}"}}]}}]}),
            &mut s,
        );
        assert_eq!(s, "Hello{\"a\":1}");
        let absurd = Usage { input: 1_000_000_000_000, output: u64::MAX, estimated: false };
        assert_eq!(absurd.bounded(Some(128_000)), Some(Usage { input: 128_000, output: 0, estimated: false }));
        assert_eq!(Usage { input: 100, output: 50, estimated: false }.bounded(Some(128_000)), None);
        assert_eq!(absurd.bounded(None).map(Usage::total), Some(TOKENS_MAX));
        assert_eq!(absurd.total(), u64::MAX);
        assert_eq!(crate::util::tokens::count("Hello"), 1);
    }
}
