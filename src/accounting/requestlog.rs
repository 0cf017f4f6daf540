//! The request log: one JSON object per request (JSONL), appended by the ledger's writer when
//! `log: { requests: FILE }` is set. Each line holds the outcome (rule, model, status, tokens,
//! cost, latency) and the facts a policy can read, so that `yardmaster simulate` can replay it
//! against another policy. Prompt text is kept only with `log: { prompts: true }`; without it the
//! log keeps the prompt's lengths and token count, and rules that search the text cannot be
//! replayed. Only the headers that the live policy reads are kept, and never `authorization`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::catalog::Endpoint;

/// One line of the request log.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    /// When the request ended (RFC 3339, UTC).
    pub time: String,
    /// `x-request-id`.
    pub request_id: String,
    /// The key's name.
    pub key: Option<String>,
    /// The policy version that routed it.
    pub policy: String,
    /// The rule that routed it.
    pub rule: Option<String>,
    /// The model that answered.
    pub model: Option<String>,
    /// Its provider.
    pub provider: Option<String>,
    /// The status the client got.
    pub status: u16,
    /// Input tokens.
    pub tokens_in: u64,
    /// Output tokens.
    pub tokens_out: u64,
    /// Cost in USD.
    pub cost_usd: f64,
    /// Time from arrival to end.
    pub latency_ms: u64,
    /// What the policy could read.
    pub facts: Facts,
}

/// The facts of a request, as the log keeps them.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Facts {
    /// `chat` or `embeddings`.
    pub endpoint: Endpoint,
    /// The model the client named.
    pub model: Option<String>,
    /// `stream: true`.
    pub stream: bool,
    /// Tools offered.
    pub tools: bool,
    /// Images present.
    pub images: bool,
    /// The client's `max_tokens`.
    pub max_tokens: Option<u64>,
    /// Number of messages.
    pub messages: u64,
    /// `prompt.length` (characters).
    pub prompt_chars: u64,
    /// The prompt's bytes (what budgets reserve against).
    pub prompt_bytes: u64,
    /// `prompt.tokens` (o200k).
    pub prompt_tokens: Option<u64>,
    /// OpenAI's `user`.
    pub user_id: Option<String>,
    /// The key's tier.
    pub tier: Option<String>,
    /// The key's budget per period, USD.
    pub budget_usd: Option<f64>,
    /// Spent this period when the request came, USD.
    pub budget_spent_usd: f64,
    /// UTC hour.
    pub hour: u8,
    /// UTC weekday, 0 = Monday.
    pub weekday: u8,
    /// The headers the policy read, those the request had.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The names of the headers the policy read (a name here that is not in `headers` was absent).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers_read: Vec<String>,
    /// `metadata`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// The prompt text (only with `log: { prompts: true }`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// The last user message (likewise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_last: Option<String>,
    /// The system messages (likewise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_system: Option<String>,
    /// The prompt, held only until its tokens are counted (off the request path, by the ledger's
    /// writer), when the log does not keep it.
    #[serde(skip)]
    pub uncounted: Option<String>,
}

impl Facts {
    /// Counts the prompt's tokens if nobody has (the ledger's writer calls this before writing).
    pub fn count_tokens(&mut self) {
        let held = self.uncounted.take();
        if self.prompt_tokens.is_none() {
            let text = held.as_deref().or(self.prompt.as_deref()).unwrap_or("");
            self.prompt_tokens = Some(crate::util::tokens::count(text));
        }
    }

    /// Whether the prompt text was kept.
    pub fn has_text(&self) -> bool {
        self.prompt.is_some()
    }
}
