//! `yardmaster simulate`: replays a request log through one or two policies and tallies, side by
//! side with what was recorded, the requests per rule and per model and the estimated cost.
//!
//! Each request is evaluated from the facts its log line kept (see `accounting::requestlog`).
//! Every model is taken as healthy and without latency samples. The estimated cost prices the
//! tokens the request really used at the rates of the model the policy would pick first. A
//! request is *not evaluable* under a policy when a rule that had to be evaluated to reach its
//! decision (the matched rule and every rule before it) reads prompt text that the log does not
//! keep, or a header that was not recorded; such requests are counted apart, never guessed.

use std::io::BufRead;

use indexmap::IndexMap;

use crate::accounting::requestlog::{Entry, Facts};
use crate::accounting::usage::{self, Rate};
use crate::policy::eval::request::SystemText;
use crate::policy::eval::Scratch;
use crate::policy::eval::{Budget, Context, RequestFacts, StaticHealth};
use crate::policy::ir::Fact;
use crate::policy::Program;

/// One column of the report.
#[derive(Clone, Debug, Default, serde::Serialize, PartialEq)]
pub struct Column {
    /// `recorded`, or the policy's file.
    pub label: String,
    /// Requests tallied.
    pub requests: u64,
    /// Requests that could not be evaluated (not in the counts below).
    pub not_evaluable: u64,
    /// Requests per rule.
    pub rules: IndexMap<String, u64>,
    /// Requests per model (the first target taken; `(refused NNN)` for a `deny` or a refusal).
    pub models: IndexMap<String, u64>,
    /// Estimated cost, micro-USD (cache hits cost nothing).
    pub cost_micros: u64,
    /// Requests the policy's caches would have answered (exact key only).
    pub cache_hits: u64,
    /// What those hits would have saved, micro-USD.
    pub cache_saved_micros: u64,
}

impl Column {
    fn count(&mut self, rule: &str, model: &str, cost: u64) {
        *self.rules.entry(rule.to_string()).or_default() += 1;
        *self.models.entry(model.to_string()).or_default() += 1;
        self.cost_micros += cost;
    }
}

/// A log, read.
#[derive(Debug, Default)]
pub struct Traffic {
    /// The requests.
    pub entries: Vec<Entry>,
    /// Lines that are not log entries (a line cut short by a crash, say), by line number.
    pub skipped: Vec<usize>,
}

/// Reads a JSONL request log, calling `progress` with the bytes read so far.
pub fn read(reader: impl BufRead, mut progress: impl FnMut(u64)) -> std::io::Result<Traffic> {
    let mut t = Traffic::default();
    let mut bytes = 0u64;
    for (i, line) in reader.lines().enumerate() {
        let line = line?;
        bytes += line.len() as u64 + 1;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Entry>(&line) {
            Ok(e) => t.entries.push(e),
            Err(_) => t.skipped.push(i + 1),
        }
        if i % 1024 == 0 {
            progress(bytes);
        }
    }
    progress(bytes);
    Ok(t)
}

/// What was recorded: the rules, models and costs in the log itself.
pub fn recorded(entries: &[Entry]) -> Column {
    let mut c = Column { label: "recorded".into(), ..Column::default() };
    for e in entries {
        c.requests += 1;
        let model = e.model.clone().unwrap_or_else(|| format!("(refused {})", e.status));
        c.count(e.rule.as_deref().unwrap_or("(none)"), &model, usage::micros(e.cost_usd));
    }
    c
}

/// Replays `entries` through `program`, calling `progress` after each request.
pub fn replay(label: &str, program: &Program, entries: &[Entry], mut progress: impl FnMut()) -> Column {
    let mut c = Column { label: label.to_string(), ..Column::default() };
    let health = StaticHealth::default();
    let mut scratch = Scratch::default();
    let catalog = program.catalog();
    // Exact cache entries replayed: key -> when it expires (ms).
    let mut cached: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    for e in entries {
        c.requests += 1;
        progress();
        let f = &e.facts;
        let req = request_of(f);
        let ctx = Context {
            tier: f.tier.as_deref(),
            key_name: e.key.as_deref(),
            budget: Budget::from_limit(f.budget_usd, f.budget_spent_usd),
            health: &health,
            hour: f.hour,
            weekday: f.weekday,
        };
        let routing = program.route(&req, &ctx, &mut scratch);
        let unknown = |fact: &Fact| match fact {
            Fact::Prompt | Fact::PromptLast | Fact::PromptSystem => !f.has_text(),
            Fact::Header(h) => !f.headers_read.contains(h) || f.headers_redacted.contains(h),
            _ => false,
        };
        let blind = program.checked.rules.iter().take(routing.index + 1).any(|r| r.cond.reads_any(&unknown));
        if blind {
            c.not_evaluable += 1;
            continue;
        }
        let rule = routing.rule;
        let (model, cost) = match routing.steps.iter().find(|s| s.taken) {
            Some(s) if s.deny.is_some() => (format!("(refused {})", s.deny.map_or(403, |(st, _)| st)), 0),
            Some(s) => match s.model.and_then(|m| catalog.get(m)) {
                Some(m) => (m.name.clone(), Rate::of(m.price).cost_micros(e.tokens_in, e.tokens_out)),
                None => (s.name.to_string(), 0),
            },
            None => ("(no target)".to_string(), 0),
        };
        if let (Some(cache), Some(digest), 200) = (routing.cache, &f.request_sha256, e.status) {
            let at = chrono::DateTime::parse_from_rfc3339(&e.time).map_or(0, |t| t.timestamp_millis());
            let scope = crate::cache::scope_of(cache, e.key.as_deref(), f.tier.as_deref());
            let k = format!("{scope}\0{rule}\0{}\0{digest}", f.endpoint.as_str());
            if cached.get(&k).is_some_and(|until| *until > at) {
                c.cache_hits += 1;
                c.cache_saved_micros += cost;
                c.count(rule, &model, 0);
                continue;
            }
            cached.insert(k, at.saturating_add(i64::try_from(cache.ttl_ms).unwrap_or(i64::MAX)));
        }
        c.count(rule, &model, cost);
    }
    c
}

/// The side-by-side report.
/// The request's facts again, for a policy to evaluate. Without the text, the counts stand in
/// for it.
fn request_of(f: &Facts) -> RequestFacts {
    let mut r = RequestFacts {
        messages: f.messages,
        model: f.model.clone(),
        stream: f.stream,
        tools: f.tools,
        images: f.images,
        max_tokens: f.max_tokens,
        endpoint: f.endpoint,
        api: f.api,
        user_id: f.user_id.clone(),
        headers: f.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        metadata: f.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        known_tokens: f.prompt_tokens,
        known_chars: Some(f.prompt_chars),
        ..RequestFacts::default()
    };
    if let Some(p) = &f.prompt {
        r.prompt.clone_from(p);
        let last = f.prompt_last.as_deref().unwrap_or("");
        if let Some(at) = p.rfind(last) {
            r.last = at..at + last.len();
        }
        r.system = SystemText::Own(f.prompt_system.clone().unwrap_or_default());
    }
    r
}

pub fn render(columns: &[Column], skipped: usize) -> String {
    use std::fmt::Write as _;
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let cell = |n: u64| n.to_string();
    rows.push(("requests".into(), columns.iter().map(|c| cell(c.requests)).collect()));
    rows.push(("not evaluable".into(), columns.iter().map(|c| cell(c.not_evaluable)).collect()));
    let mut section = |title: &str, pick: &dyn Fn(&Column) -> &IndexMap<String, u64>| {
        rows.push((title.to_string(), vec![String::new(); columns.len()]));
        let mut names: Vec<&String> = Vec::new();
        for c in columns {
            for n in pick(c).keys() {
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
        for n in names {
            rows.push((format!("  {n}"), columns.iter().map(|c| cell(pick(c).get(n).copied().unwrap_or(0))).collect()));
        }
    };
    section("by rule", &|c| &c.rules);
    section("by model", &|c| &c.models);
    rows.push((
        "estimated cost (USD)".into(),
        columns.iter().map(|c| format!("{:.6}", usage::usd(c.cost_micros))).collect(),
    ));
    if columns.iter().any(|c| c.cache_hits > 0) {
        rows.push(("cache hits (exact)".into(), columns.iter().map(|c| cell(c.cache_hits)).collect()));
        rows.push((
            "saved by the cache (USD)".into(),
            columns.iter().map(|c| format!("{:.6}", usage::usd(c.cache_saved_micros))).collect(),
        ));
    }
    let first = rows.iter().map(|(l, _)| l.chars().count()).max().unwrap_or(0).max(8);
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            rows.iter().map(|(_, v)| v.get(i).map_or(0, String::len)).max().unwrap_or(0).max(c.label.chars().count())
        })
        .collect();
    let mut out = String::new();
    let _ = write!(out, "{:first$}", "");
    for (c, w) in columns.iter().zip(&widths) {
        let _ = write!(out, "  {:>w$}", c.label);
    }
    out.push('\n');
    for (label, vals) in &rows {
        let _ = write!(out, "{label:first$}");
        for (v, w) in vals.iter().zip(&widths) {
            let _ = write!(out, "  {v:>w$}");
        }
        out.push('\n');
    }
    if columns.iter().any(|c| c.not_evaluable > 0) {
        out.push_str(
            "\n`not evaluable`: a rule the decision depends on reads prompt text or a header that the log did not keep \
             (set `log: { prompts: true }` to keep prompt text).\n",
        );
    }
    if skipped > 0 {
        let _ = writeln!(out, "\n{skipped} line(s) of the log are not request entries and were skipped.");
    }
    out
}
