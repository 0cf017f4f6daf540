//! The built-in mock provider: answers in OpenAI's format without any network. Its latency,
//! failure rate and streaming speed come from its config, so the quickstart runs with no keys and
//! policies can be tried against slow or failing models.

use std::time::Duration;

use futures_util::StreamExt;
use rand::Rng;

use super::{Call, ProviderApi, Reply, UpstreamError};
use crate::catalog::Endpoint;
use crate::config::ProviderConfig;

/// The provider's kind, as written in the config.
pub const PROVIDER_TYPE: &str = "mock";

/// The mock.
#[derive(Clone, Debug)]
pub struct Mock {
    name: String,
    latency: Duration,
    fail_rate: f64,
    tokens_per_second: f64,
}

const WORDS: &[&str] = &[
    "This",
    "is",
    "a",
    "mock",
    "reply",
    "from",
    "Yardmaster.",
    "It",
    "streams",
    "one",
    "word",
    "at",
    "a",
    "time,",
    "as",
    "fast",
    "as",
    "its",
    "config",
    "says.",
];

impl Mock {
    /// A mock from its config.
    pub fn new(name: &str, cfg: &ProviderConfig) -> Mock {
        Mock {
            name: name.to_string(),
            latency: Duration::from_millis(cfg.latency.unwrap_or(0)),
            fail_rate: cfg.fail_rate.unwrap_or(0.0),
            tokens_per_second: cfg.tokens_per_second.unwrap_or(0.0),
        }
    }

    fn fails(&self) -> bool {
        self.fail_rate > 0.0 && rand::rng().random::<f64>() < self.fail_rate
    }
}

/// o200k tokens of the messages' text, as a real provider would report (a large text on a
/// blocking thread).
async fn prompt_tokens(body: &serde_json::Value) -> u64 {
    let mut text = String::new();
    for m in body.get("messages").and_then(serde_json::Value::as_array).into_iter().flatten() {
        match m.get("content") {
            Some(serde_json::Value::String(s)) => text.push_str(s),
            Some(serde_json::Value::Array(parts)) => {
                for p in parts {
                    if let Some(t) = p.get("text").and_then(serde_json::Value::as_str) {
                        text.push_str(t);
                    }
                }
            }
            _ => {}
        }
        text.push('\n');
    }
    crate::util::tokens::count_off_thread(text.into()).await
}

impl ProviderApi for Mock {
    async fn call(&self, call: Call) -> Result<Reply, UpstreamError> {
        if !self.latency.is_zero() {
            if self.latency > call.first_byte_timeout {
                tokio::time::sleep(call.first_byte_timeout).await;
                return Err(UpstreamError::Timeout);
            }
            tokio::time::sleep(self.latency).await;
        }
        if self.fails() {
            return Err(UpstreamError::Status {
                status: 500,
                body: r#"{"error":{"message":"mock failure","type":"api_error","code":null,"param":null}}"#.into(),
                retry_after: None,
            });
        }
        let body: serde_json::Value =
            serde_json::from_slice(&call.body).map_err(|e| UpstreamError::Malformed(format!("request: {e}")))?;
        let model = body.get("model").and_then(|m| m.as_str()).unwrap_or("mock").to_string();
        let id = format!("mock-{}", uuid::Uuid::new_v4().simple());
        let created = chrono::Utc::now().timestamp();
        if call.endpoint == Endpoint::Embeddings {
            let inputs = match body.get("input") {
                Some(serde_json::Value::Array(a)) => a.len().max(1),
                _ => 1,
            };
            let data: Vec<serde_json::Value> = (0..inputs)
                .map(|i| serde_json::json!({"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]}))
                .collect();
            return Ok(Reply::Json(serde_json::json!({
                "object": "list", "data": data, "model": model, "usage": {"prompt_tokens": 4 * inputs, "total_tokens": 4 * inputs}
            })));
        }
        let max = body.get("max_completion_tokens").or_else(|| body.get("max_tokens")).and_then(|m| m.as_u64());
        let n = max.map_or(WORDS.len(), |m| (m as usize).min(WORDS.len()).max(1));
        let words: Vec<&str> = WORDS.iter().copied().take(n).collect();
        let input = prompt_tokens(&body).await;
        let usage = serde_json::json!({"prompt_tokens": input, "completion_tokens": words.len(), "total_tokens": input + words.len() as u64});
        let finish = if max.is_some_and(|m| (m as usize) < WORDS.len()) { "length" } else { "stop" };
        if !call.stream {
            return Ok(Reply::Json(serde_json::json!({
                "id": id, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": words.join(" ")}, "finish_reason": finish}],
                "usage": usage,
                "system_fingerprint": format!("yardmaster-mock-{}", self.name),
            })));
        }
        let include_usage =
            body.pointer("/stream_options/include_usage").and_then(serde_json::Value::as_bool).unwrap_or(false);
        let pause = if self.tokens_per_second > 0.0 {
            Duration::from_secs_f64(1.0 / self.tokens_per_second)
        } else {
            Duration::ZERO
        };
        let chunk = move |delta: serde_json::Value, finish: Option<&str>| {
            serde_json::json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        let mut events: Vec<String> =
            vec![chunk(serde_json::json!({"role": "assistant", "content": ""}), None).to_string()];
        for (i, w) in words.iter().enumerate() {
            let text = if i == 0 { (*w).to_string() } else { format!(" {w}") };
            events.push(chunk(serde_json::json!({"content": text}), None).to_string());
        }
        let mut last = chunk(serde_json::json!({}), Some(finish));
        if include_usage {
            events.push(last.to_string());
            last = serde_json::json!({"id": last["id"], "object": "chat.completion.chunk", "created": created,
                "model": last["model"], "choices": [], "usage": usage});
        }
        events.push(last.to_string());
        events.push("[DONE]".into());
        let stream = futures_util::stream::iter(events.into_iter().enumerate()).then(move |(i, e)| async move {
            if i > 0 && !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            Ok(e)
        });
        Ok(Reply::Stream(Box::pin(stream)))
    }
}
