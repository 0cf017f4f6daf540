//! The names the language knows: facts, functions, rule options and request fields.

use crate::policy::ir::Fact;

/// Every fact path, for "did you mean".
pub const FACTS: &[&str] = &[
    "prompt",
    "prompt.last",
    "prompt.system",
    "prompt.tokens",
    "prompt.chars",
    "prompt.messages",
    "request.model",
    "request.stream",
    "request.tools",
    "request.images",
    "request.max_tokens",
    "request.endpoint",
    "request.api",
    "user.tier",
    "user.name",
    "user.id",
    "budget.remaining",
    "budget.spent",
    "time.hour",
    "time.weekday",
];

/// The roots of fact paths.
pub const ROOTS: &[&str] = &["prompt", "request", "user", "budget", "time", "metadata"];

/// Built-in functions.
pub const FUNCTIONS: &[&str] = &["header", "healthy", "latency", "tagged"];

/// Rule options.
pub const OPTIONS: &[&str] = &["retries", "timeout", "cache", "tag", "only"];

/// Weekdays as `time.weekday` gives them.
pub const WEEKDAYS: &[&str] = &["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// The type of a request field that `with (...)` may set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    /// A non-negative integer.
    Count,
    /// A number.
    Number,
    /// A string.
    Str,
    /// A string or a list of strings.
    StrOrList,
    /// A boolean.
    Bool,
    /// `"text"`, `"json_object"` (becomes `{"type": ...}`).
    ResponseFormat,
}

/// OpenAI chat request fields that `with (...)` may set, with their types.
pub const FIELDS: &[(&str, FieldType)] = &[
    ("max_tokens", FieldType::Count),
    ("max_completion_tokens", FieldType::Count),
    ("temperature", FieldType::Number),
    ("top_p", FieldType::Number),
    ("stop", FieldType::StrOrList),
    ("reasoning_effort", FieldType::Str),
    ("response_format", FieldType::ResponseFormat),
    ("seed", FieldType::Count),
    ("presence_penalty", FieldType::Number),
    ("frequency_penalty", FieldType::Number),
    ("n", FieldType::Count),
    ("parallel_tool_calls", FieldType::Bool),
    ("service_tier", FieldType::Str),
    ("logprobs", FieldType::Bool),
    ("top_logprobs", FieldType::Count),
    ("verbosity", FieldType::Str),
    ("user", FieldType::Str),
];

/// The fact a path names (`metadata.NAME` included).
pub fn fact(path: &str) -> Option<Fact> {
    Some(match path {
        "prompt" => Fact::Prompt,
        "prompt.last" => Fact::PromptLast,
        "prompt.system" => Fact::PromptSystem,
        "prompt.tokens" => Fact::PromptTokens,
        "prompt.chars" => Fact::PromptChars,
        "prompt.messages" => Fact::PromptMessages,
        "request.model" => Fact::RequestModel,
        "request.stream" => Fact::RequestStream,
        "request.tools" => Fact::RequestTools,
        "request.images" => Fact::RequestImages,
        "request.max_tokens" => Fact::RequestMaxTokens,
        "request.endpoint" => Fact::RequestEndpoint,
        "request.api" => Fact::RequestApi,
        "user.tier" => Fact::UserTier,
        "user.name" => Fact::UserName,
        "user.id" => Fact::UserId,
        "time.hour" => Fact::TimeHour,
        "time.weekday" => Fact::TimeWeekday,
        _ => {
            let name = path.strip_prefix("metadata.")?;
            if name.is_empty() {
                return None;
            }
            Fact::Metadata(name.to_string())
        }
    })
}

/// How a fact is written.
pub fn fact_name(f: &Fact, catalog: &crate::catalog::Catalog) -> String {
    let model = |m: &u32| catalog.get(*m).map_or_else(|| format!("#{m}"), |m| m.name.clone());
    match f {
        Fact::Prompt => "prompt".into(),
        Fact::PromptLast => "prompt.last".into(),
        Fact::PromptSystem => "prompt.system".into(),
        Fact::PromptTokens => "prompt.tokens".into(),
        Fact::PromptChars => "prompt.chars".into(),
        Fact::PromptMessages => "prompt.messages".into(),
        Fact::RequestModel => "request.model".into(),
        Fact::RequestStream => "request.stream".into(),
        Fact::RequestTools => "request.tools".into(),
        Fact::RequestImages => "request.images".into(),
        Fact::RequestMaxTokens => "request.max_tokens".into(),
        Fact::RequestEndpoint => "request.endpoint".into(),
        Fact::RequestApi => "request.api".into(),
        Fact::UserTier => "user.tier".into(),
        Fact::UserName => "user.name".into(),
        Fact::UserId => "user.id".into(),
        Fact::Header(h) => format!("header(\"{h}\")"),
        Fact::Metadata(m) => format!("metadata.{m}"),
        Fact::BudgetRemainingFraction | Fact::BudgetRemainingUsd => "budget.remaining".into(),
        Fact::BudgetSpentUsd | Fact::BudgetSpentFraction => "budget.spent".into(),
        Fact::Healthy(m) => format!("healthy({})", model(m)),
        Fact::Latency(m) => format!("latency({})", model(m)),
        Fact::TimeHour => "time.hour".into(),
        Fact::TimeWeekday => "time.weekday".into(),
    }
}
