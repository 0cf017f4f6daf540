//! The model catalog: the models a policy may name, with their provider, prices, context window,
//! tags and capabilities. `config.rs` builds it from `yardmaster.yaml`; the policy checker and
//! evaluator read it. It knows nothing of HTTP or providers beyond their names.

use std::collections::HashMap;

/// What a model serves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    /// `/v1/chat/completions`.
    #[default]
    Chat,
    /// `/v1/embeddings`.
    Embeddings,
    /// `/v1/moderations`.
    Moderations,
}

impl Endpoint {
    /// The values of `request.endpoint`.
    pub const ALL: &'static [&'static str] = &["chat", "embeddings", "moderations"];

    /// `"chat"`, `"embeddings"` or `"moderations"`, as `request.endpoint` reads it.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Moderations => "moderations",
        }
    }
}

/// The client API a request came through, as `request.api` reads it (SPEC §12).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// OpenAI's chat completions (and embeddings).
    #[default]
    Chat,
    /// OpenAI's Responses API.
    Responses,
    /// Anthropic's Messages API.
    Messages,
}

impl Api {
    /// The values of `request.api`.
    pub const ALL: &'static [&'static str] = &["chat", "responses", "messages"];

    /// `"chat"`, `"responses"` or `"messages"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Api::Chat => "chat",
            Api::Responses => "responses",
            Api::Messages => "messages",
        }
    }
}

/// A capability a request may need.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Capability {
    /// Function calling.
    Tools,
    /// Image inputs.
    Images,
}

/// Prices in USD per million tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Price {
    /// Input (prompt) tokens.
    pub input: f64,
    /// Output (completion) tokens.
    pub output: f64,
}

impl Price {
    /// Cost of a call in integer micro-USD, rounded up.
    pub fn cost_micros(&self, input_tokens: u64, output_tokens: u64) -> u64 {
        // USD per million tokens == micro-USD per token.
        #[expect(clippy::cast_precision_loss, reason = "token counts are far below 2^52")]
        let micros = self.input * input_tokens as f64 + self.output * output_tokens as f64;
        #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "finite, non-negative, rounded")]
        let micros = micros.ceil().max(0.0) as u64;
        micros
    }
}

/// One model of the catalog.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Model {
    /// The name used in policies and by clients.
    pub name: String,
    /// The provider (a key of `providers:`).
    pub provider: String,
    /// The upstream model id.
    pub upstream_id: String,
    /// Prices, when known.
    pub price: Option<Price>,
    /// Context window in tokens, when known.
    pub context: Option<u64>,
    /// Tags for `tagged("...")`.
    pub tags: Vec<String>,
    /// Capabilities.
    pub capabilities: Vec<Capability>,
    /// What it serves.
    pub endpoint: Endpoint,
}

impl Model {
    /// Whether the model has a capability.
    pub fn can(&self, c: Capability) -> bool {
        self.capabilities.contains(&c)
    }
}

/// Index of a model in the catalog.
pub type ModelId = u32;

/// The catalog, in the order the config lists it.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    models: Vec<Model>,
    by_name: HashMap<String, ModelId>,
    /// Families (`PREFIX/*`): every name with the prefix, reached through `requested`.
    families: Vec<Model>,
}

impl Catalog {
    /// Builds a catalog. Later duplicates of a name are ignored.
    pub fn new(models: Vec<Model>) -> Catalog {
        let mut by_name = HashMap::new();
        let mut kept = Vec::new();
        for m in models {
            if by_name.contains_key(&m.name) {
                continue;
            }
            by_name.insert(m.name.clone(), ModelId::try_from(kept.len()).unwrap_or(ModelId::MAX));
            kept.push(m);
        }
        Catalog { models: kept, by_name, families: Vec::new() }
    }

    /// The catalog with these families (entries named `PREFIX/*`).
    pub fn with_families(mut self, families: Vec<Model>) -> Catalog {
        self.families = families;
        self
    }

    /// The catalog with these aliases (`(alias, model name)`): `id` and `by_name` resolve an
    /// alias to its model. An alias that is a model's name, or names no model, is ignored (the
    /// config check reports both).
    pub fn with_aliases(mut self, aliases: impl IntoIterator<Item = (String, String)>) -> Catalog {
        for (alias, name) in aliases {
            if let (false, Some(id)) = (self.by_name.contains_key(&alias), self.id(&name)) {
                self.by_name.insert(alias, id);
            }
        }
        self
    }

    /// The other names of a model (its aliases), sorted.
    pub fn aliases_of(&self, id: ModelId) -> Vec<&str> {
        let name = self.get(id).map(|m| m.name.as_str());
        let mut out: Vec<&str> = self
            .by_name
            .iter()
            .filter(|(n, i)| **i == id && Some(n.as_str()) != name)
            .map(|(n, _)| n.as_str())
            .collect();
        out.sort_unstable();
        out
    }

    /// Every name a client may send: the models' names and their aliases.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// The families, in catalog order.
    pub fn families(&self) -> &[Model] {
        &self.families
    }

    /// The model a client's name stands for through a family: the family's provider, prices,
    /// context, tags, capabilities and endpoint, named as the client named it, with the upstream
    /// id after the prefix (`openai/gpt-4.1` -> `gpt-4.1`). The longest prefix wins.
    pub fn family_of(&self, name: &str) -> Option<Model> {
        let f = self
            .families
            .iter()
            .filter(|f| f.name.strip_suffix('*').is_some_and(|p| name.len() > p.len() && name.starts_with(p)))
            .max_by_key(|f| f.name.len())?;
        let prefix = f.name.strip_suffix('*').unwrap_or("");
        Some(Model { name: name.to_string(), upstream_id: name[prefix.len()..].to_string(), ..f.clone() })
    }

    /// The model with this name or alias.
    pub fn id(&self, name: &str) -> Option<ModelId> {
        self.by_name.get(name).copied()
    }

    /// The model with this id.
    pub fn get(&self, id: ModelId) -> Option<&Model> {
        self.models.get(id as usize)
    }

    /// The model with this name.
    pub fn by_name(&self, name: &str) -> Option<&Model> {
        self.id(name).and_then(|i| self.get(i))
    }

    /// All models, in catalog order.
    pub fn models(&self) -> &[Model] {
        &self.models
    }

    /// All ids, in catalog order.
    pub fn ids(&self) -> impl Iterator<Item = ModelId> + '_ {
        (0..self.models.len()).filter_map(|i| ModelId::try_from(i).ok())
    }

    /// Number of models.
    pub fn len(&self) -> usize {
        self.models.len()
    }

    /// Whether the catalog is empty.
    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }
}
