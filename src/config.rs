//! `yardmaster.yaml`: deployment settings. Read with serde_yaml; unknown fields are errors that
//! name their line. Paths in the file are relative to the file. Secrets are never in the file:
//! only the names of environment variables that hold them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::{Deserialize, Deserializer};

use crate::catalog::{Capability, Catalog, Endpoint, Model, Price};

/// A config that could not be loaded: its first mistake, and the others found with it (every
/// check after parsing runs, so that one run reports every mistake it can see).
#[derive(Debug, thiserror::Error)]
#[error("{path}:{line}:{column}: {message}{}", self.others.iter().map(|e| format!("\n{e}")).collect::<String>())]
pub struct ConfigError {
    /// The file.
    pub path: String,
    /// 1-based line (1 when unknown).
    pub line: usize,
    /// 1-based column (1 when unknown).
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// The file's other mistakes.
    pub others: Vec<ConfigError>,
}

/// The whole file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where to listen (`127.0.0.1:8080` by default).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The entry policy file.
    #[serde(default)]
    pub policy: Option<PathBuf>,
    /// Providers by name.
    #[serde(default)]
    pub providers: IndexMap<String, ProviderConfig>,
    /// The model catalog, in order.
    #[serde(default)]
    pub models: IndexMap<String, ModelConfig>,
    /// Gateway keys.
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    /// The admin key that guards `/admin/*`.
    #[serde(default)]
    pub admin: Option<SecretRef>,
    /// Storage.
    #[serde(default)]
    pub storage: Option<StorageConfig>,
    /// Reload behaviour.
    #[serde(default)]
    pub reload: ReloadConfig,
    /// Request log.
    #[serde(default)]
    pub log: LogConfig,
    /// Allow an open gateway (no keys) on a non-loopback address.
    #[serde(default)]
    pub allow_open: bool,
    /// Other names an open gateway on loopback answers to, as `Host` headers name them
    /// (`localhost`, `127.0.0.1` and `[::1]` always work); every other `Host` is refused, which
    /// stops DNS rebinding.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Server limits.
    #[serde(default)]
    pub limits: ServerLimits,
    /// The response cache (SPEC §10).
    #[serde(default)]
    pub cache: CacheConfig,
    /// Traces (SPEC §13).
    #[serde(default)]
    pub telemetry: Option<TelemetryConfig>,
}

/// `telemetry: { otlp: { endpoint: http://127.0.0.1:4318 } }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP/HTTP export of traces.
    pub otlp: OtlpConfig,
    /// `service.name` of the spans.
    #[serde(default = "default_service")]
    pub service_name: String,
}

fn default_service() -> String {
    "yardmaster".into()
}

/// `telemetry.otlp`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// The collector's base URL; `/v1/traces` is appended.
    pub endpoint: String,
    /// Headers sent with each export, their values read from environment variables
    /// (`{ x-honeycomb-team: HONEYCOMB_KEY }`), since they are often credentials.
    #[serde(default)]
    pub headers_env: IndexMap<String, String>,
    /// Each export's time limit.
    #[serde(default = "default_export_timeout", deserialize_with = "duration_ms")]
    pub timeout: u64,
}

fn default_export_timeout() -> u64 {
    5000
}

/// `cache: { max_bytes: 256MiB }`: the in-memory response cache's bound.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Bytes of cached answers kept (least recently used first out).
    #[serde(default = "default_cache_bytes", deserialize_with = "bytes_size")]
    pub max_bytes: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig { max_bytes: default_cache_bytes() }
    }
}

fn default_cache_bytes() -> usize {
    256 << 20
}

fn default_listen() -> String {
    "127.0.0.1:8080".to_string()
}

/// The kind of a provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Any OpenAI-compatible API.
    Openai,
    /// Anthropic's Messages API.
    Anthropic,
    /// Google's generateContent.
    Gemini,
    /// Built in, no network.
    Mock,
}

impl ProviderKind {
    /// The GenAI semantic conventions' name for the kind (`gen_ai.provider.name`).
    pub fn otel_name(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gcp.gemini",
            ProviderKind::Mock => "yardmaster.mock",
        }
    }
}

/// One provider.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Its kind.
    pub kind: ProviderKind,
    /// The API root, as that kind's official SDK takes it.
    #[serde(default)]
    pub base_url: Option<String>,
    /// The environment variable that holds the API key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Mock: delay before the first byte.
    #[serde(default, deserialize_with = "opt_duration_ms")]
    pub latency: Option<u64>,
    /// Mock: share of calls that fail with a 500.
    #[serde(default)]
    pub fail_rate: Option<f64>,
    /// Mock: streaming speed.
    #[serde(default)]
    pub tokens_per_second: Option<f64>,
    /// Extra headers sent upstream.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// One catalog model.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The provider that serves it.
    pub provider: String,
    /// The upstream id (the catalog name when absent).
    #[serde(default)]
    pub id: Option<String>,
    /// Prices in USD per million tokens.
    #[serde(default)]
    pub price: Option<PriceConfig>,
    /// Context window in tokens.
    #[serde(default)]
    pub context: Option<u64>,
    /// Tags for `tagged("...")`.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Capabilities.
    #[serde(default)]
    pub capabilities: Vec<Capability>,
    /// `chat` (default) or `embeddings`.
    #[serde(default)]
    pub endpoint: Option<Endpoint>,
    /// Other names clients call it by (a vendor's names: `claude-sonnet-4-5`), which
    /// `requested` and policies resolve to it.
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// Prices in USD per million tokens.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    /// Input tokens.
    #[serde(default)]
    pub input: f64,
    /// Output tokens.
    #[serde(default)]
    pub output: f64,
}

/// One gateway key.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Its name (`user.name`).
    pub name: String,
    /// The environment variable that holds the key.
    #[serde(default)]
    pub key_env: Option<String>,
    /// The SHA-256 of the key, in hex.
    #[serde(default)]
    pub key_sha256: Option<String>,
    /// `user.tier`.
    #[serde(default)]
    pub tier: Option<String>,
    /// Spending limit.
    #[serde(default)]
    pub budget: Option<BudgetConfig>,
    /// Rate limits.
    #[serde(default)]
    pub limits: Option<LimitsConfig>,
    /// The only models this key may name.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// `cache: false`: this key never uses the response cache.
    #[serde(default = "yes")]
    pub cache: bool,
}

/// A budget.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// USD per period.
    pub usd: f64,
    /// The period.
    #[serde(default)]
    pub per: Period,
}

/// A budget period (UTC calendar days and months).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// A UTC day.
    Day,
    /// A UTC calendar month.
    #[default]
    Month,
    /// Never resets.
    Total,
}

impl Period {
    /// As the config writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Month => "month",
            Period::Total => "total",
        }
    }
}

/// Rate limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Requests per minute.
    #[serde(default)]
    pub rpm: Option<u32>,
    /// Tokens per minute.
    #[serde(default)]
    pub tpm: Option<u64>,
}

/// A secret given by environment variable or by hash.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// The environment variable that holds it.
    #[serde(default)]
    pub key_env: Option<String>,
    /// Its SHA-256 in hex.
    #[serde(default)]
    pub key_sha256: Option<String>,
}

/// Storage.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// The SQLite file of the spend ledger (`yardmaster.db` beside the config by default;
    /// `:memory:` keeps nothing across restarts).
    #[serde(default)]
    pub sqlite: Option<PathBuf>,
    /// Keep a ledger at all (`false`: spend lives in memory only and is lost at restart).
    #[serde(default = "yes")]
    pub ledger: bool,
    /// Budgets, limits, the exact cache and breaker openings shared by several instances
    /// (SPEC §11).
    #[serde(default)]
    pub redis: Option<RedisConfig>,
}

/// `storage.redis`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// The environment variable that holds the `redis://` URL (which may hold a password).
    pub url_env: String,
    /// What requests that need the shared state get while Redis cannot be reached.
    #[serde(default)]
    pub on_error: OnError,
    /// The prefix of every key the gateway writes.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// The bytes of cache entries that may wait for Redis (while it is slow or stalled); a
    /// cache store past it is dropped and counted. 64 MiB by default.
    #[serde(default = "default_queued_bytes", deserialize_with = "bytes_size")]
    pub max_queued_bytes: usize,
}

fn default_queued_bytes() -> usize {
    64 << 20
}

fn default_prefix() -> String {
    "ym:".into()
}

/// `storage.redis.on_error`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// 503 `state_unavailable` for keys with a budget or a limit.
    #[default]
    Closed,
    /// Served on the instance's own state, with a warning; settled in Redis when it returns.
    Open,
}

/// The ledger's file when no `storage` is given.
pub const DEFAULT_SQLITE: &str = "yardmaster.db";

/// Reload behaviour.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReloadConfig {
    /// Run `*.tests.yaml` beside the policy before a reload takes effect.
    #[serde(default = "yes")]
    pub require_tests: bool,
    /// Quiet time before a burst of file events is loaded.
    #[serde(default = "default_debounce", deserialize_with = "duration_ms")]
    pub debounce: u64,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        ReloadConfig { require_tests: true, debounce: default_debounce() }
    }
}

fn yes() -> bool {
    true
}

fn default_debounce() -> u64 {
    200
}

/// The request log.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Keep prompt text in the request log.
    #[serde(default)]
    pub prompts: bool,
    /// Where to append the request log (JSONL).
    #[serde(default)]
    pub requests: Option<PathBuf>,
    /// The server log's format: `text` (default) or `json` (`serve --log-format` overrides it).
    #[serde(default)]
    pub format: Option<String>,
    /// The headers whose values the request log may keep (of those a policy reads). Without it,
    /// every header a policy reads is kept except credentials (cookies, keys, tokens...).
    #[serde(default)]
    pub headers: Option<Vec<String>>,
    /// One line per request in the server log at info level (never the prompt); `false` turns
    /// it off.
    #[serde(default = "yes")]
    pub access: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { prompts: false, requests: None, format: None, headers: None, access: true }
    }
}

/// Server limits.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerLimits {
    /// Largest request body, in bytes.
    #[serde(default = "default_body", deserialize_with = "bytes_size")]
    pub max_body_bytes: usize,
    /// Largest whole reply an upstream may send (a larger one fails the attempt: 502).
    #[serde(default = "default_reply", deserialize_with = "bytes_size")]
    pub max_reply_bytes: usize,
    /// Largest stream event an upstream may send (a larger one ends the stream with an error).
    #[serde(default = "default_event", deserialize_with = "bytes_size")]
    pub max_event_bytes: usize,
    /// The most client connections open at once (default: half the process's file limit).
    #[serde(default)]
    pub max_connections: Option<usize>,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            max_body_bytes: default_body(),
            max_reply_bytes: default_reply(),
            max_event_bytes: default_event(),
            max_connections: None,
        }
    }
}

fn default_body() -> usize {
    10 * 1024 * 1024
}

fn default_reply() -> usize {
    32 << 20
}

fn default_event() -> usize {
    1 << 20
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SizeRepr {
    Num(usize),
    Text(String),
}

fn bytes_size<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    match SizeRepr::deserialize(d)? {
        SizeRepr::Num(n) => Ok(n),
        SizeRepr::Text(s) => crate::util::size::parse_bytes(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("`{s}` is not a size (try `32MiB` or `64KiB`)"))),
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum DurationRepr {
    Num(u64),
    Text(String),
}

fn duration_ms<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match DurationRepr::deserialize(d)? {
        DurationRepr::Num(n) => Ok(n),
        DurationRepr::Text(s) => crate::util::duration::parse_ms(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("`{s}` is not a duration (try `250ms`, `20s`, `5m`)"))),
    }
}

fn opt_duration_ms<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    duration_ms(d).map(Some)
}

/// A config with where it came from.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The parsed settings.
    pub config: Config,
    /// The file it was read from.
    pub path: PathBuf,
    /// Warnings (unset environment variables and the like).
    pub warnings: Vec<String>,
}

impl Loaded {
    /// The directory paths in the file are relative to.
    pub fn base_dir(&self) -> PathBuf {
        self.path.parent().map(Path::to_path_buf).unwrap_or_default()
    }

    /// The entry policy file, resolved against the config's directory.
    pub fn policy_path(&self) -> Option<PathBuf> {
        self.config.policy.as_ref().map(|p| self.base_dir().join(p))
    }

    /// The ledger's SQLite file, resolved against the config's directory (`None`: no ledger).
    pub fn ledger_path(&self) -> Option<PathBuf> {
        match &self.config.storage {
            Some(s) if !s.ledger => None,
            Some(StorageConfig { sqlite: Some(p), .. }) if p.as_os_str() == ":memory:" => Some(p.clone()),
            Some(StorageConfig { sqlite: Some(p), .. }) => Some(self.base_dir().join(p)),
            _ => Some(self.base_dir().join(DEFAULT_SQLITE)),
        }
    }

    /// The request log's file, resolved against the config's directory.
    pub fn request_log_path(&self) -> Option<PathBuf> {
        self.config.log.requests.as_ref().map(|p| self.base_dir().join(p))
    }

    /// The catalog that policies are checked against.
    pub fn catalog(&self) -> Catalog {
        catalog_of(&self.config)
    }
}

/// Builds the catalog of a config.
pub fn catalog_of(config: &Config) -> Catalog {
    let (families, models): (Vec<Model>, Vec<Model>) = config
        .models
        .iter()
        .map(|(name, m)| Model {
            name: name.clone(),
            provider: m.provider.clone(),
            upstream_id: m.id.clone().unwrap_or_else(|| name.clone()),
            price: m.price.map(|p| Price { input: p.input, output: p.output }),
            context: m.context,
            tags: m.tags.clone(),
            capabilities: m.capabilities.clone(),
            endpoint: m.endpoint.unwrap_or(Endpoint::Chat),
        })
        .partition(|m| is_family(&m.name));
    let aliases = config.models.iter().flat_map(|(name, m)| m.aliases.iter().map(move |a| (a.clone(), name.clone())));
    Catalog::new(models).with_families(families).with_aliases(aliases)
}

/// Whether a catalog name stands for a family (`PREFIX/*`).
pub fn is_family(name: &str) -> bool {
    name.len() > 2 && name.ends_with("/*")
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        path: path.display().to_string(),
        line: 1,
        column: 1,
        message: format!("cannot read the config: {e}"),
        others: Vec::new(),
    })?;
    parse(path, &text)
}

/// Parses and validates config text.
pub fn parse(path: &Path, text: &str) -> Result<Loaded, ConfigError> {
    let shown = path.display().to_string();
    let config: Config = if text.trim().is_empty() {
        Config { listen: default_listen(), ..Config::default() }
    } else {
        serde_yaml::from_str(text).map_err(|e| {
            let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
            ConfigError { path: shown.clone(), line, column, message: e.to_string(), others: Vec::new() }
        })?
    };
    let mut errors: Vec<ConfigError> = Vec::new();
    let mut err = |needle: &str, message: String| {
        let line = line_of(text, needle);
        errors.push(ConfigError { path: shown.clone(), line, column: 1, message, others: Vec::new() });
    };
    if let Err(why) = check_listen(&config.listen) {
        err("listen", why);
    }
    let mut warnings = Vec::new();
    check_providers(&config, &mut err, &mut warnings);
    check_models(&config, &mut err);
    check_keys(&config, &mut err, &mut warnings);
    check_log_and_admin(&config, &mut err, &mut warnings);
    if !errors.is_empty() {
        let mut first = errors.remove(0);
        first.others = errors;
        return Err(first);
    }
    Ok(Loaded { config, path: path.to_path_buf(), warnings })
}

/// `providers`: fail rates, base URLs, key variables (unset: a warning).
fn check_providers(config: &Config, err: &mut impl FnMut(&str, String), warnings: &mut Vec<String>) {
    for (name, p) in &config.providers {
        if let Some(rate) = p.fail_rate {
            if !(0.0..=1.0).contains(&rate) {
                err(name, format!("provider `{name}`: fail_rate must be between 0 and 1"));
            }
        }
        if p.kind == ProviderKind::Openai && p.base_url.is_none() {
            err(name, format!("provider `{name}`: an `openai` provider needs a `base_url`"));
        }
        if let Some(env) = &p.api_key_env {
            if std::env::var_os(env).is_none() {
                warnings.push(format!("provider `{name}`: ${env} is not set; the provider is unavailable"));
            }
        }
    }
}

/// `models`: their providers, endpoints and prices.
fn check_models(config: &Config, err: &mut impl FnMut(&str, String)) {
    for (name, m) in &config.models {
        if is_family(name) && m.id.is_some() {
            err(
                name,
                format!(
                    "model family `{name}`: a family has no `id` (the upstream id is the rest of the client's name)"
                ),
            );
        }
        if name.contains('*') && !is_family(name) {
            err(name, format!("model `{name}`: `*` is only for a family, written `PREFIX/*` (as `openai/*`)"));
        }
        if !config.providers.contains_key(&m.provider) {
            let help = crate::util::fuzzy::did_you_mean(&m.provider, config.providers.keys().map(String::as_str));
            err(
                name,
                format!(
                    "model `{name}` names provider `{}`, which is not in `providers`{}",
                    m.provider,
                    help.map(|h| format!(" (did you mean `{h}`?)")).unwrap_or_default()
                ),
            );
        }
        if m.endpoint == Some(Endpoint::Embeddings)
            && config.providers.get(&m.provider).is_some_and(|p| p.kind == ProviderKind::Anthropic)
        {
            err(name, format!("model `{name}`: Anthropic offers no embeddings endpoint"));
        }
        if let Some(p) = m.price {
            if p.input < 0.0 || p.output < 0.0 || !p.input.is_finite() || !p.output.is_finite() {
                err(name, format!("model `{name}`: prices cannot be negative"));
            }
        }
    }
    // An alias names one model, and never stands for another model's name.
    let mut aliases: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    for (name, m) in &config.models {
        for a in &m.aliases {
            if config.models.contains_key(a) {
                err(name, format!("model `{name}`: alias `{a}` is the name of a model"));
            } else if let Some(other) = aliases.insert(a, name) {
                err(name, format!("model `{name}`: alias `{a}` is also an alias of `{other}`"));
            }
        }
    }
}

/// `keys`: unique names, one secret each, allowed models, budgets.
fn check_keys(config: &Config, err: &mut impl FnMut(&str, String), warnings: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    for k in &config.keys {
        if !seen.insert(k.name.as_str()) {
            err(&k.name, format!("key `{}` is defined twice", k.name));
        }
        match (&k.key_env, &k.key_sha256) {
            (Some(_), Some(_)) | (None, None) => {
                err(&k.name, format!("key `{}` needs exactly one of `key_env` and `key_sha256`", k.name));
            }
            (Some(env), None) => {
                if std::env::var_os(env).is_none() {
                    warnings.push(format!("key `{}`: ${env} is not set; the key is disabled", k.name));
                }
            }
            (None, Some(h)) => {
                if h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()) {
                    err(&k.name, format!("key `{}`: key_sha256 must be 64 hex digits", k.name));
                }
            }
        }
        for m in k.models.iter().flatten() {
            if !config.models.contains_key(m) {
                err(&k.name, format!("key `{}` allows model `{m}`, which is not in `models`", k.name));
            }
        }
        if let Some(b) = k.budget {
            if !(b.usd >= 0.0 && b.usd.is_finite()) {
                err(&k.name, format!("key `{}`: a budget must be a non-negative amount", k.name));
            }
        }
    }
}

/// `log.format` and the admin key's variable.
fn check_log_and_admin(config: &Config, err: &mut impl FnMut(&str, String), warnings: &mut Vec<String>) {
    if let Some(f) = &config.log.format {
        if f != "text" && f != "json" {
            err("format", format!("log.format must be `text` or `json`, not `{f}`"));
        }
    }
    if let Some(admin) = &config.admin {
        if let Some(env) = &admin.key_env {
            if std::env::var_os(env).is_none() {
                warnings.push(format!("admin: ${env} is not set; /admin is disabled"));
            }
        }
    }
}

/// A `listen` value: `HOST:PORT`, the host an address or a name (`localhost`, resolved at start),
/// an IPv6 address in brackets.
fn check_listen(listen: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!("listen: `{listen}` {why} (write HOST:PORT, such as 127.0.0.1:8080 or localhost:8080)"))
    };
    let Some((host, port)) = listen.rsplit_once(':') else { return bad("has no port") };
    if port.parse::<u16>().is_err() {
        return bad("has no valid port");
    }
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let name_like = !host.is_empty()
        && host.split('.').all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    if host.parse::<std::net::IpAddr>().is_err() && !name_like {
        return bad("has no valid host");
    }
    Ok(())
}

/// The first line on which `needle` appears as a word (1 when it does not).
fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| {
            l.match_indices(needle).any(|(i, _)| {
                let before = l.get(..i).and_then(|s| s.chars().last());
                let after = l.get(i + needle.len()..).and_then(|s| s.chars().next());
                !before.is_some_and(|c| c.is_alphanumeric() || c == '-')
                    && !after.is_some_and(|c| c.is_alphanumeric() || c == '-')
            })
        })
        .map_or(1, |i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SKETCH: &str = r#"
listen: 127.0.0.1:8080
policy: rules/main.route
providers:
  openai:    { kind: openai,    base_url: https://api.openai.com/v1, api_key_env: OPENAI_API_KEY }
  anthropic: { kind: anthropic, base_url: https://api.anthropic.com, api_key_env: ANTHROPIC_API_KEY }
  local:     { kind: openai,    base_url: http://127.0.0.1:11434/v1 }          # Ollama, vLLM, ...
  demo:      { kind: mock, latency: 30ms, fail_rate: 0.0, tokens_per_second: 200 }  # built in
models:                      # name used in policies -> provider + upstream id
  gpt-4o-mini:   { provider: openai, id: gpt-4o-mini, price: { input: 0.15, output: 0.60 }, context: 128000, tags: [cheap], capabilities: [tools, images] }
  claude-sonnet: { provider: anthropic, id: claude-sonnet-4-5, price: { input: 3, output: 15 }, context: 200000, capabilities: [tools, images] }
  embed-small:   { provider: openai, id: text-embedding-3-small, endpoint: embeddings, price: { input: 0.02 }, context: 8191 }
keys:
  - { name: team-a, key_env: TEAM_A_KEY, tier: premium, budget: { usd: 100, per: month }, limits: { rpm: 600, tpm: 200000 } }
  - { name: batch, key_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08, tier: free, models: [gpt-4o-mini, embed-small] }   # may only name these
admin: { key_env: YARDMASTER_ADMIN_KEY }    # guards /admin/*
storage: { sqlite: yardmaster.db }          # later also: { redis: redis://127.0.0.1:6379 }
"#;

    #[test]
    fn the_spec_sketch_loads() {
        let l = parse(Path::new("x/yardmaster.yaml"), SKETCH).unwrap();
        assert_eq!(l.config.providers["demo"].latency, Some(30));
        assert_eq!(l.config.models.len(), 3);
        let cat = l.catalog();
        assert_eq!(cat.by_name("embed-small").unwrap().endpoint, Endpoint::Embeddings);
        assert_eq!(cat.by_name("claude-sonnet").unwrap().upstream_id, "claude-sonnet-4-5");
        assert_eq!(l.policy_path().unwrap(), Path::new("x/rules/main.route"));
        assert_eq!(l.config.keys[0].budget.unwrap().per, Period::Month);
    }

    #[test]
    fn every_mistake_is_reported_with_its_line() {
        let text = "listen: 127.0.0.1\nproviders:\n  p: { kind: mock, fail_rate: 3 }\nmodels:\n  a: { provider: q }\n";
        let e = parse(Path::new("y.yaml"), text).unwrap_err();
        let all: Vec<(usize, &str)> =
            std::iter::once(&e).chain(&e.others).map(|e| (e.line, e.message.as_str())).collect();
        assert_eq!(all.iter().map(|a| a.0).collect::<Vec<_>>(), [1, 3, 5], "{e}");
        assert!(all[0].1.contains("has no port"), "{e}");
        // All three are in the message a user sees.
        assert_eq!(e.to_string().lines().count(), 3, "{e}");
        assert!(e.to_string().lines().all(|l| l.starts_with("y.yaml:")), "{e}");
    }

    #[test]
    fn listen_takes_names_and_addresses() {
        for ok in ["localhost:8090", "127.0.0.1:0", "[::1]:8080", "gateway.internal:80", "0.0.0.0:443"] {
            assert!(check_listen(ok).is_ok(), "{ok}");
        }
        for bad in ["8080", "localhost", "localhost:http", "127.0.0.1:99999", ":80", "a b:80", "host..x:80"] {
            assert!(check_listen(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_fields_name_their_line() {
        let e = parse(Path::new("y.yaml"), "listen: 1.2.3.4:1\nmodels:\n  a: { provider: p, prize: 3 }\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("prize"), "{}", e.message);
    }

    #[test]
    fn unknown_provider_names_the_model_line() {
        let e = parse(Path::new("y.yaml"), "providers:\n  openai: { kind: mock }\nmodels:\n  a: { provider: opena }\n")
            .unwrap_err();
        assert_eq!(e.line, 4);
        assert!(e.message.contains("did you mean `openai`"), "{}", e.message);
    }
}
