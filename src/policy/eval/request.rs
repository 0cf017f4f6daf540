//! The facts of one request, built once from the OpenAI-shaped JSON body. `prompt` is the text
//! parts of all messages joined by `\n`; `prompt.last` and `prompt.system` are slices of it when
//! they are contiguous, so that the keyword automaton scans the prompt once.

use std::ops::Range;

use serde_json::Value;

use crate::catalog::{Api, Endpoint};

/// A request's facts, owned.
#[derive(Clone, Debug, Default)]
pub struct RequestFacts {
    /// All message text joined by `\n`.
    pub prompt: String,
    /// Where the last user message sits in `prompt`.
    pub last: Range<usize>,
    /// The system messages: a range of `prompt` when contiguous, else their own text.
    pub system: SystemText,
    /// Number of messages.
    pub messages: u64,
    /// The model the client named.
    pub model: Option<String>,
    /// `stream: true`.
    pub stream: bool,
    /// Tools offered.
    pub tools: bool,
    /// Image parts present.
    pub images: bool,
    /// `max_tokens` or `max_completion_tokens`.
    pub max_tokens: Option<u64>,
    /// Chat or embeddings.
    pub endpoint: Endpoint,
    /// The client API (`request.api`).
    pub api: Api,
    /// OpenAI's `user` field.
    pub user_id: Option<String>,
    /// Request headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// `metadata` entries (non-string values as JSON text).
    pub metadata: Vec<(String, String)>,
    /// The prompt's token count when it is known without the text (a replayed request log).
    pub known_tokens: Option<u64>,
    /// The prompt's length in characters, likewise.
    pub known_chars: Option<u64>,
}

/// Where the system text is.
#[derive(Clone, Debug)]
pub enum SystemText {
    /// A range of the prompt.
    Range(Range<usize>),
    /// Its own text (system messages are not next to each other).
    Own(String),
}

impl Default for SystemText {
    fn default() -> Self {
        SystemText::Range(0..0)
    }
}

/// A request body that cannot be routed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BodyError {
    /// The body is not a JSON object.
    #[error("the request body must be a JSON object")]
    NotObject,
    /// `messages` is missing.
    #[error("`messages` is required")]
    MissingMessages,
    /// `messages` is not a list.
    #[error("`messages` must be a list")]
    MessagesNotList,
    /// `input` is missing (embeddings).
    #[error("`input` is required")]
    MissingInput,
}

impl RequestFacts {
    /// The last user message.
    pub fn prompt_last(&self) -> &str {
        self.prompt.get(self.last.clone()).unwrap_or("")
    }

    /// The system text.
    pub fn prompt_system(&self) -> &str {
        match &self.system {
            SystemText::Range(r) => self.prompt.get(r.clone()).unwrap_or(""),
            SystemText::Own(s) => s,
        }
    }

    /// Adds request headers (names are lowercased).
    pub fn with_headers<'a>(mut self, headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        self.headers = headers.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v.to_string())).collect();
        self
    }

    /// Builds the facts of a chat completion body.
    pub fn from_chat(body: &Value) -> Result<RequestFacts, BodyError> {
        let obj = body.as_object().ok_or(BodyError::NotObject)?;
        let messages =
            obj.get("messages").ok_or(BodyError::MissingMessages)?.as_array().ok_or(BodyError::MessagesNotList)?;
        let mut f = RequestFacts { endpoint: Endpoint::Chat, ..Default::default() };
        f.messages = messages.len() as u64;
        let mut system_ranges: Vec<Range<usize>> = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            let role = m.get("role").and_then(Value::as_str).unwrap_or("");
            let start = if i == 0 { 0 } else { f.prompt.len() + 1 };
            if i > 0 {
                f.prompt.push('\n');
            }
            append_content(m.get("content"), &mut f.prompt, &mut f.images);
            let range = start..f.prompt.len();
            match role {
                "user" => f.last = range,
                "system" | "developer" => system_ranges.push(range),
                _ => {}
            }
        }
        f.system = join_ranges(&f.prompt, &system_ranges);
        common(obj, &mut f);
        f.tools = obj.get("tools").and_then(Value::as_array).is_some_and(|t| !t.is_empty())
            || obj.get("functions").and_then(Value::as_array).is_some_and(|t| !t.is_empty());
        Ok(f)
    }

    /// Builds the facts of an embeddings body: `prompt` is the input text(s) joined by `\n`.
    pub fn from_embeddings(body: &Value) -> Result<RequestFacts, BodyError> {
        Self::from_input(body, Endpoint::Embeddings)
    }

    /// Facts from an OpenAI moderations body: its input is the prompt.
    pub fn from_moderations(body: &Value) -> Result<RequestFacts, BodyError> {
        Self::from_input(body, Endpoint::Moderations)
    }

    fn from_input(body: &Value, endpoint: Endpoint) -> Result<RequestFacts, BodyError> {
        let obj = body.as_object().ok_or(BodyError::NotObject)?;
        let input = obj.get("input").ok_or(BodyError::MissingInput)?;
        let mut f = RequestFacts { endpoint, ..Default::default() };
        match input {
            Value::String(s) => f.prompt.push_str(s),
            Value::Array(items) => {
                let texts: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
                f.prompt = texts.join("\n");
            }
            _ => {}
        }
        f.last = 0..f.prompt.len();
        f.messages = 1;
        common(obj, &mut f);
        Ok(f)
    }
}

fn common(obj: &serde_json::Map<String, Value>, f: &mut RequestFacts) {
    f.model = obj.get("model").and_then(Value::as_str).map(str::to_string);
    f.stream = obj.get("stream").and_then(Value::as_bool).unwrap_or(false);
    f.max_tokens = obj
        .get("max_completion_tokens")
        .and_then(Value::as_u64)
        .or_else(|| obj.get("max_tokens").and_then(Value::as_u64));
    f.user_id = obj.get("user").and_then(Value::as_str).map(str::to_string);
    if let Some(Value::Object(m)) = obj.get("metadata") {
        f.metadata =
            m.iter().map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string))).collect();
    }
}

fn append_content(content: Option<&Value>, out: &mut String, images: &mut bool) {
    match content {
        Some(Value::String(s)) => out.push_str(s),
        Some(Value::Array(parts)) => {
            let mut first = true;
            for p in parts {
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        if let Some(t) = p.get("text").and_then(Value::as_str) {
                            if !first {
                                out.push('\n');
                            }
                            out.push_str(t);
                            first = false;
                        }
                    }
                    Some("image_url" | "input_image" | "image") => *images = true,
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

/// The system text as one range when the system messages sit next to each other.
fn join_ranges(prompt: &str, ranges: &[Range<usize>]) -> SystemText {
    match ranges {
        [] => SystemText::Range(0..0),
        [one] => SystemText::Range(one.clone()),
        [first, .., last] => {
            let contiguous = ranges.windows(2).all(|w| matches!(w, [a, b] if b.start == a.end + 1));
            if contiguous {
                SystemText::Range(first.start..last.end)
            } else {
                SystemText::Own(ranges.iter().filter_map(|r| prompt.get(r.clone())).collect::<Vec<_>>().join("\n"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prompt_is_text_parts_joined() {
        let f = RequestFacts::from_chat(&json!({
            "model": "auto",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "x"}}]},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "what is rust"}
            ],
            "tools": [{"type": "function"}],
            "max_tokens": 50,
            "metadata": {"team": "a"}
        }))
        .unwrap();
        assert_eq!(f.prompt, "be brief\nhi\nhello\nwhat is rust");
        assert_eq!(f.prompt_last(), "what is rust");
        assert_eq!(f.prompt_system(), "be brief");
        assert!(f.images && f.tools);
        assert_eq!(f.max_tokens, Some(50));
        assert_eq!(f.messages, 4);
        assert_eq!(f.metadata, vec![("team".to_string(), "a".to_string())]);
    }

    #[test]
    fn bad_bodies() {
        assert_eq!(RequestFacts::from_chat(&json!([])).unwrap_err(), BodyError::NotObject);
        assert_eq!(RequestFacts::from_chat(&json!({})).unwrap_err(), BodyError::MissingMessages);
        assert_eq!(RequestFacts::from_chat(&json!({"messages": "x"})).unwrap_err(), BodyError::MessagesNotList);
    }

    #[test]
    fn split_system_messages_get_their_own_text() {
        let f = RequestFacts::from_chat(&json!({"messages": [
            {"role": "system", "content": "a"}, {"role": "user", "content": "b"}, {"role": "system", "content": "c"}
        ]}))
        .unwrap();
        assert_eq!(f.prompt_system(), "a\nc");
    }
}
