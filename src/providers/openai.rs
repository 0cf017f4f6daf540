//! OpenAI-compatible upstreams (OpenAI, OpenRouter, Groq, Together, Mistral, DeepSeek, Fireworks,
//! vLLM, Ollama, LM Studio): the request passes through as it is, with `model` set to the
//! upstream id.

use std::collections::BTreeMap;

use futures_util::StreamExt;

use super::{native, Call, ProviderApi, Reply, UpstreamError};
use crate::catalog::Endpoint;

/// The provider's kind, as written in the config.
pub const PROVIDER_TYPE: &str = "openai";

/// An OpenAI-compatible upstream.
#[derive(Clone, Debug)]
pub struct OpenAi {
    /// `{base_url}/chat/completions` and `{base_url}/embeddings`, parsed once.
    urls: Option<[reqwest::Url; 3]>,
    upstream: native::Upstream,
}

impl OpenAi {
    /// A provider at `base_url` (with `/v1`, as the official SDK takes it).
    pub fn new(
        base_url: &str,
        key: Option<String>,
        headers: BTreeMap<String, String>,
        http: reqwest::Client,
    ) -> OpenAi {
        let base_url = base_url.trim_end_matches('/').to_string();
        let url = |path: &str| reqwest::Url::parse(&format!("{base_url}/{path}")).ok();
        let urls = match (url("chat/completions"), url("embeddings"), url("moderations")) {
            (Some(c), Some(e), Some(m)) => Some([c, e, m]),
            _ => None,
        };
        OpenAi { urls, upstream: native::Upstream::new(http, key, native::Auth::Bearer, headers) }
    }
}

/// Upstream error bodies are OpenAI's already: they pass through unchanged.
fn passthrough(_status: u16, body: &str) -> String {
    body.to_string()
}

impl ProviderApi for OpenAi {
    async fn call(&self, call: Call) -> Result<Reply, UpstreamError> {
        let Some([chat, embeddings, moderations]) = &self.urls else {
            return Err(UpstreamError::Unavailable("the base_url is not a URL".into()));
        };
        let url = match call.endpoint {
            Endpoint::Chat => chat.clone(),
            Endpoint::Embeddings => embeddings.clone(),
            Endpoint::Moderations => moderations.clone(),
        };
        let req = self
            .upstream
            .post(url, call.traceparent.as_deref())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(call.body);
        let resp = self.upstream.send(req, call.first_byte_timeout, call.limits, passthrough).await?;
        if call.stream {
            let events = self.upstream.events(resp, call.limits).map(|ev| ev.map(|(_, data)| data));
            return Ok(Reply::Stream(Box::pin(events)));
        }
        self.upstream.raw_reply(resp, call.limits).await.map(Reply::Raw)
    }
}
