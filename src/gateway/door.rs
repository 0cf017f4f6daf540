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
}

impl Door {
    /// The endpoint that the door's requests are routed as.
    pub fn endpoint(self) -> Endpoint {
        match self {
            Door::Chat => Endpoint::Chat,
            Door::Embeddings => Endpoint::Embeddings,
        }
    }

    /// Parses a body: 400 for anything that is not a JSON object of the door's shape, or that
    /// names no model.
    pub fn parse(self, bytes: &[u8]) -> Result<Inbound, ApiError> {
        let body: Value = serde_json::from_slice(bytes)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
        if !body.is_object() {
            return Err(ApiError::bad_request("the request body must be a JSON object"));
        }
        let (facts, param) = match self {
            Door::Chat => (RequestFacts::from_chat(&body), "messages"),
            Door::Embeddings => (RequestFacts::from_embeddings(&body), "input"),
        };
        let facts = facts.map_err(|e| ApiError::bad_request(e.to_string()).param(param))?;
        let Some(requested) = facts.model.clone() else {
            return Err(
                ApiError::bad_request("`model` is required (use \"auto\" to let the policy choose)").param("model")
            );
        };
        let stream = self == Door::Chat && facts.stream;
        let wants_usage = body.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false);
        Ok(Inbound { endpoint: self.endpoint(), body, facts, requested, stream, wants_usage })
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
        assert_eq!(Door::Chat.parse(br#"{"model": "a"}"#).unwrap_err().param, Some("messages"));
        assert_eq!(Door::Embeddings.parse(br#"{"model": "a"}"#).unwrap_err().param, Some("input"));
        assert_eq!(Door::Chat.parse(br#"{"messages": []}"#).unwrap_err().param, Some("model"));
    }
}
