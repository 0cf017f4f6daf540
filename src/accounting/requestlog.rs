//! The request log: one JSON object per request (JSONL), appended by the ledger's writer when
//! `log: { requests: FILE }` is set. Each line holds the outcome (rule, model, status, tokens,
//! cost, latency) and the facts a policy can read, so that `yardmaster simulate` can replay it
//! against another policy. Prompt text is kept only with `log: { prompts: true }`; without it the
//! log keeps the prompt's lengths and token count, and rules that search the text cannot be
//! replayed. Only the headers that the live policy reads are kept, and never `authorization`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::catalog::Endpoint;
use crate::policy::eval::request::SystemText;
use crate::policy::eval::RequestFacts;

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
    /// The facts of a request. `headers` are the ones the policy reads; `prompts` keeps the text.
    pub fn of(req: &RequestFacts, headers: &[String], prompts: bool) -> Facts {
        Facts {
            endpoint: req.endpoint,
            model: req.model.clone(),
            stream: req.stream,
            tools: req.tools,
            images: req.images,
            max_tokens: req.max_tokens,
            messages: req.messages,
            prompt_chars: req.prompt.chars().count() as u64,
            prompt_bytes: req.prompt.len() as u64,
            // Counted later, by the writer (see `count_tokens`).
            prompt_tokens: None,
            uncounted: (!prompts).then(|| req.prompt.clone()),
            user_id: req.user_id.clone(),
            headers: req
                .headers
                .iter()
                .filter(|(k, _)| k != "authorization" && headers.contains(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            headers_read: headers.iter().filter(|h| *h != "authorization").cloned().collect(),
            metadata: req.metadata.iter().cloned().collect(),
            prompt: prompts.then(|| req.prompt.clone()),
            prompt_last: prompts.then(|| req.prompt_last().to_string()),
            prompt_system: prompts.then(|| req.prompt_system().to_string()),
            ..Facts::default()
        }
    }

    /// Counts the prompt's tokens if nobody has (the ledger's writer calls this before writing).
    pub fn count_tokens(&mut self) {
        let held = self.uncounted.take();
        if self.prompt_tokens.is_none() {
            let text = held.as_deref().or(self.prompt.as_deref()).unwrap_or("");
            self.prompt_tokens = Some(super::usage::count(text));
        }
    }

    /// Whether the prompt text was kept.
    pub fn has_text(&self) -> bool {
        self.prompt.is_some()
    }

    /// The request's facts again, for a policy to evaluate. Without the text, the counts stand in
    /// for it.
    pub fn to_request(&self) -> RequestFacts {
        let mut f = RequestFacts {
            messages: self.messages,
            model: self.model.clone(),
            stream: self.stream,
            tools: self.tools,
            images: self.images,
            max_tokens: self.max_tokens,
            endpoint: self.endpoint,
            user_id: self.user_id.clone(),
            headers: self.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            metadata: self.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            known_tokens: self.prompt_tokens,
            known_chars: Some(self.prompt_chars),
            ..RequestFacts::default()
        };
        if let Some(p) = &self.prompt {
            f.prompt.clone_from(p);
            let last = self.prompt_last.as_deref().unwrap_or("");
            if let Some(at) = p.rfind(last) {
                f.last = at..at + last.len();
            }
            f.system = SystemText::Own(self.prompt_system.clone().unwrap_or_default());
        }
        f
    }
}
