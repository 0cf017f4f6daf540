//! Front doors: a client API's body -> the one internal request, [`Inbound`]. The internal shape
//! is OpenAI's (chat completions, or embeddings), which every provider translates from; a door
//! for another API (Responses, Messages) turns its body into this shape here and its reply back
//! at the edge, so that nothing between the door and the reply knows which door a request came
//! through, except the facts a policy reads. Today's doors are OpenAI's chat completions and
//! embeddings, which need no translation.

use serde_json::Value;

use super::error::ApiError;
use crate::catalog::Endpoint;
use crate::policy::eval::RequestFacts;

/// A client API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Door {
    /// `POST /v1/chat/completions`.
    Chat,
    /// `POST /v1/embeddings`.
    Embeddings,
    /// `POST /v1/messages`: Anthropic's Messages API, translated to chat ([`super::messages`]).
    Messages,
    /// `POST /v1/responses`: OpenAI's Responses API, translated to chat ([`super::responses`]).
    Responses,
    /// `POST /v1/moderations`.
    Moderations,
}

/// A request as it came through a door, in the internal shape.
#[derive(Debug)]
pub struct Inbound {
    /// Chat or embeddings.
    pub endpoint: Endpoint,
    /// The body in OpenAI's shape, as dispatch sends it on.
    pub body: Value,
    /// What the policy reads (headers are added by admission, when the policy reads them).
    pub facts: RequestFacts,
    /// The model the client named (`auto` lets the policy choose).
    pub requested: String,
    /// Whether the reply streams.
    pub stream: bool,
    /// Whether a streaming client asked for the usage chunk (`stream_options.include_usage`).
    pub wants_usage: bool,
    /// The body's size as the client sent it, in bytes: no more input tokens than this (and the
    /// images it names) are ever charged.
    pub body_bytes: u64,
}

impl Door {
    /// Its name in the access log: `chat`, `embeddings`, `messages`, `responses`, `moderations`.
    pub fn as_str(self) -> &'static str {
        match self {
            Door::Chat => "chat",
            Door::Embeddings => "embeddings",
            Door::Messages => "messages",
            Door::Responses => "responses",
            Door::Moderations => "moderations",
        }
    }

    /// The endpoint that the door's requests are routed as.
    pub fn endpoint(self) -> Endpoint {
        match self {
            Door::Chat | Door::Messages | Door::Responses => Endpoint::Chat,
            Door::Embeddings => Endpoint::Embeddings,
            Door::Moderations => Endpoint::Moderations,
        }
    }

    /// Parses a body: 400 for anything that is not a JSON object of the door's shape, or that
    /// names no model.
    pub fn parse(self, bytes: &[u8]) -> Result<Inbound, ApiError> {
        let mut body: Value = serde_json::from_slice(bytes)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
        match self {
            Door::Messages => body = super::messages::to_chat(body)?,
            Door::Responses => body = super::responses::to_chat(body)?,
            Door::Moderations => {
                // The model is optional here: the policy chooses.
                if let Some(o) = body.as_object_mut() {
                    o.entry("model").or_insert_with(|| Value::String("auto".into()));
                }
            }
            Door::Chat | Door::Embeddings => {}
        }
        if !body.is_object() {
            return Err(ApiError::bad_request("the request body must be a JSON object"));
        }
        if body.get("model").is_none() {
            return Err(Self::model_required());
        }
        self.validate(&body)?;
        let (facts, param) = match self {
            Door::Chat | Door::Messages | Door::Responses => (RequestFacts::from_chat(&body), "messages"),
            Door::Embeddings => (RequestFacts::from_embeddings(&body), "input"),
            Door::Moderations => (RequestFacts::from_moderations(&body), "input"),
        };
        let mut facts = facts.map_err(|e| ApiError::bad_request(e.to_string()).param(param))?;
        facts.api = match self {
            Door::Messages => crate::catalog::Api::Messages,
            Door::Responses => crate::catalog::Api::Responses,
            Door::Chat | Door::Embeddings | Door::Moderations => crate::catalog::Api::Chat,
        };
        let Some(requested) = facts.model.clone() else { return Err(Self::model_required()) };
        let stream = !matches!(self, Door::Embeddings | Door::Moderations) && facts.stream;
        let wants_usage = body.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false);
        Ok(Inbound {
            endpoint: self.endpoint(),
            body,
            facts,
            requested,
            stream,
            wants_usage,
            body_bytes: bytes.len() as u64,
        })
    }
}

/// What a body field must be, as OpenAI checks it.
#[derive(Clone, Copy)]
enum Kind {
    /// A number within the range.
    Number(f64, f64),
    /// An integer from the minimum.
    Integer(i64),
    Bool,
    Text,
    /// A string or a list of strings.
    TextOrList,
    List,
    Object,
    /// One of these strings.
    OneOf(&'static [&'static str]),
}

/// The chat fields whose type is checked (others pass on as they came).
const CHAT_FIELDS: &[(&str, Kind)] = &[
    ("model", Kind::Text),
    ("temperature", Kind::Number(0.0, 2.0)),
    ("top_p", Kind::Number(0.0, 1.0)),
    ("presence_penalty", Kind::Number(-2.0, 2.0)),
    ("frequency_penalty", Kind::Number(-2.0, 2.0)),
    ("n", Kind::Integer(1)),
    ("max_tokens", Kind::Integer(1)),
    ("max_completion_tokens", Kind::Integer(1)),
    ("seed", Kind::Integer(i64::MIN)),
    ("top_logprobs", Kind::Integer(0)),
    ("stream", Kind::Bool),
    ("logprobs", Kind::Bool),
    ("parallel_tool_calls", Kind::Bool),
    ("user", Kind::Text),
    ("stop", Kind::TextOrList),
    ("tools", Kind::List),
    ("stream_options", Kind::Object),
    ("response_format", Kind::Object),
    ("metadata", Kind::Object),
    ("reasoning_effort", Kind::OneOf(&["minimal", "low", "medium", "high"])),
];

/// The moderations fields whose type is checked (`input` may also hold text and image parts).
const MODERATIONS_FIELDS: &[(&str, Kind)] = &[("model", Kind::Text)];

/// The embeddings fields whose type is checked.
const EMBEDDINGS_FIELDS: &[(&str, Kind)] = &[
    ("model", Kind::Text),
    ("dimensions", Kind::Integer(1)),
    ("encoding_format", Kind::OneOf(&["float", "base64"])),
    ("user", Kind::Text),
];

/// The roles a chat message can have.
const ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool", "function"];

impl Kind {
    /// What is wrong with `v`, if anything (`null` is taken as absent, as OpenAI does).
    fn check(self, v: &Value) -> Option<String> {
        let ok = match (self, v) {
            (_, Value::Null) => true,
            (Kind::Number(lo, hi), Value::Number(n)) => {
                return n
                    .as_f64()
                    .filter(|x| (lo..=hi).contains(x))
                    .is_none()
                    .then(|| format!("must be from {lo} to {hi}"))
            }
            (Kind::Integer(min), Value::Number(n)) => {
                let i = n.as_i64().or_else(|| n.as_u64().map(|_| i64::MAX));
                return match i {
                    None => Some("must be an integer".into()),
                    Some(i) if i < min => Some(format!("must be at least {min}")),
                    Some(_) => None,
                };
            }
            (Kind::Bool, Value::Bool(_)) | (Kind::Text, Value::String(_)) | (Kind::List, Value::Array(_)) => true,
            (Kind::Object, Value::Object(_)) | (Kind::TextOrList, Value::String(_)) => true,
            (Kind::TextOrList, Value::Array(a)) => a.iter().all(Value::is_string),
            (Kind::OneOf(list), Value::String(s)) => {
                return (!list.contains(&s.as_str())).then(|| format!("must be one of {}", list.join(", ")))
            }
            _ => false,
        };
        (!ok).then(|| {
            match self {
                Kind::Number(..) => "must be a number",
                Kind::Integer(_) => "must be an integer",
                Kind::Bool => "must be a boolean",
                Kind::Text => "must be a string",
                Kind::TextOrList => "must be a string or a list of strings",
                Kind::List => "must be a list",
                Kind::Object => "must be an object",
                Kind::OneOf(_) => "must be a string",
            }
            .to_string()
        })
    }
}

impl Door {
    fn model_required() -> ApiError {
        ApiError::bad_request("`model` is required (use \"auto\" to let the policy choose)").param("model")
    }

    /// The checks OpenAI makes before it answers: the types and ranges of the fields it knows,
    /// a non-empty `messages` of known roles (400 with `param` naming the field).
    fn validate(self, body: &Value) -> Result<(), ApiError> {
        let fields = match self {
            Door::Chat | Door::Messages | Door::Responses => CHAT_FIELDS,
            Door::Embeddings => EMBEDDINGS_FIELDS,
            Door::Moderations => MODERATIONS_FIELDS,
        };
        for (name, kind) in fields {
            if let Some(why) = body.get(*name).and_then(|v| kind.check(v)) {
                return Err(ApiError::bad_request(format!("`{name}` {why}")).param(*name));
            }
        }
        if !matches!(self, Door::Embeddings | Door::Moderations) {
            let Some(messages) = body.get("messages").and_then(Value::as_array) else { return Ok(()) };
            if messages.is_empty() {
                return Err(ApiError::bad_request("`messages` must hold at least one message").param("messages"));
            }
            for (i, m) in messages.iter().enumerate() {
                let role = m.get("role").and_then(Value::as_str);
                if !role.is_some_and(|r| ROLES.contains(&r)) {
                    let why = match role {
                        Some(r) => format!("`messages[{i}].role` is `{r}`, which is not one of {}", ROLES.join(", ")),
                        None => format!("`messages[{i}]` needs a `role`, one of {}", ROLES.join(", ")),
                    };
                    return Err(ApiError::bad_request(why).param(format!("messages[{i}].role")));
                }
            }
        }
        if matches!(self, Door::Embeddings | Door::Moderations) {
            let empty = match body.get("input") {
                Some(Value::String(s)) => s.is_empty(),
                Some(Value::Array(a)) => a.is_empty(),
                _ => false,
            };
            if empty {
                return Err(ApiError::bad_request("`input` must not be empty").param("input"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_bodies_become_inbound_requests() {
        let body = br#"{"model": "auto", "stream": true, "stream_options": {"include_usage": true},
            "messages": [{"role": "user", "content": "hi"}]}"#;
        let i = Door::Chat.parse(body).unwrap();
        assert_eq!((i.endpoint, i.requested.as_str(), i.stream, i.wants_usage), (Endpoint::Chat, "auto", true, true));
        assert_eq!(i.facts.prompt, "hi");
        // An embeddings body never streams.
        let e = Door::Embeddings.parse(br#"{"model": "e", "input": ["a", "b"], "stream": true}"#).unwrap();
        assert_eq!((e.endpoint, e.stream, e.facts.prompt.as_str()), (Endpoint::Embeddings, false, "a\nb"));
    }

    #[test]
    fn bad_bodies_are_400_with_their_param() {
        let e = Door::Chat.parse(b"{").unwrap_err();
        assert_eq!((e.status.as_u16(), e.param), (400, None));
        assert_eq!(Door::Chat.parse(b"[1]").unwrap_err().status.as_u16(), 400);
        assert_eq!(Door::Chat.parse(br#"{"model": "a"}"#).unwrap_err().param.as_deref(), Some("messages"));
        assert_eq!(Door::Embeddings.parse(br#"{"model": "a"}"#).unwrap_err().param.as_deref(), Some("input"));
        assert_eq!(Door::Chat.parse(br#"{"messages": []}"#).unwrap_err().param.as_deref(), Some("model"));
    }

    #[test]
    fn fields_of_the_wrong_type_or_range_are_400_with_their_param() {
        let cases: &[(&[u8], &str)] = &[
            (br#"{"model": "auto", "temperature": "hot", "messages": [{"role": "user", "content": "x"}]}"#, "temperature"),
            (br#"{"model": "auto", "temperature": 2.5, "messages": [{"role": "user", "content": "x"}]}"#, "temperature"),
            (br#"{"model": "auto", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}"#, "max_tokens"),
            (br#"{"model": "auto", "n": 1.5, "messages": [{"role": "user", "content": "x"}]}"#, "n"),
            (br#"{"model": "auto", "stream": "yes", "messages": [{"role": "user", "content": "x"}]}"#, "stream"),
            (br#"{"model": "auto", "stop": [1], "messages": [{"role": "user", "content": "x"}]}"#, "stop"),
            (br#"{"model": "auto", "messages": []}"#, "messages"),
            (br#"{"model": "auto", "messages": [{"role": "user", "content": "x"}, {"role": "robot", "content": "y"}]}"#, "messages[1].role"),
            (br#"{"model": "auto", "messages": [{"content": "y"}]}"#, "messages[0].role"),
            (br#"{"model": 7, "messages": [{"role": "user", "content": "x"}]}"#, "model"),
        ];
        for (body, param) in cases {
            let e = Door::Chat.parse(body).unwrap_err();
            assert_eq!(
                (e.status.as_u16(), e.param.as_deref()),
                (400, Some(*param)),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let e = Door::Embeddings.parse(br#"{"model": "e", "input": "a", "encoding_format": "hex"}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("encoding_format"));
        let e = Door::Embeddings.parse(br#"{"model": "e", "input": []}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("input"));
        // What OpenAI takes passes: nulls, tool messages, numbers at the edges, unknown fields.
        let ok = br#"{"model": "auto", "temperature": 0, "top_p": null, "seed": -3, "stop": "x", "custom": {"a": 1},
            "messages": [{"role": "developer", "content": "d"}, {"role": "tool", "tool_call_id": "c", "content": "r"}]}"#;
        assert!(Door::Chat.parse(ok).is_ok());
    }
}
