//! Helpers shared by the integration tests.
#![allow(dead_code, reason = "each test binary uses a different subset")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

use std::path::Path;

use yardmaster::catalog::Catalog;
use yardmaster::policy::compile::Program;
use yardmaster::policy::eval::Scratch;
use yardmaster::policy::eval::{Budget, Context, RequestFacts, StaticHealth};
use yardmaster::policy::{build_from, load};

/// The quickstart catalog.
pub fn quickstart() -> Catalog {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/quickstart.yaml");
    yardmaster::config::load(&path).unwrap().catalog()
}

/// Compiles policy text against the quickstart catalog, panicking with the diagnostics.
pub fn program(text: &str) -> Program {
    program_named("test.route", text)
}

/// Compiles policy text, named `name`, against the quickstart catalog, panicking with the
/// diagnostics.
pub fn program_named(name: &str, text: &str) -> Program {
    let cat = quickstart();
    let (p, diags, sources) = build_from(load::load_text(Path::new(name), text), Some(&cat));
    match p {
        Some(p) => p,
        None => panic!(
            "{name} does not compile:\n{}",
            diags.iter().map(|d| d.one_line(&sources)).collect::<Vec<_>>().join("\n")
        ),
    }
}

/// The facts around a request.
#[derive(Default, Clone)]
pub struct Setup {
    pub tier: Option<&'static str>,
    pub key: Option<&'static str>,
    pub budget: Budget,
    pub down: Vec<&'static str>,
    pub latency: Vec<(&'static str, f64)>,
    pub hour: u8,
    pub weekday: u8,
    pub headers: Vec<(&'static str, &'static str)>,
}

/// A chat request with one user message.
pub fn chat(text: &str) -> serde_json::Value {
    serde_json::json!({"model": "auto", "messages": [{"role": "user", "content": text}]})
}

/// Routes a request: the matched rule's name and the first model taken (or `deny N`).
pub fn route(p: &Program, body: &serde_json::Value, s: &Setup) -> (String, String) {
    let req =
        if body.get("input").is_some() { RequestFacts::from_embeddings(body) } else { RequestFacts::from_chat(body) };
    let req = req.unwrap().with_headers(s.headers.iter().copied());
    let cat = p.catalog();
    let health = StaticHealth {
        down: s.down.iter().map(|m| cat.id(m).unwrap()).collect(),
        latency: s.latency.iter().map(|(m, l)| (cat.id(m).unwrap(), *l)).collect(),
    };
    let ctx =
        Context { tier: s.tier, key_name: s.key, budget: s.budget, health: &health, hour: s.hour, weekday: s.weekday };
    let mut scratch = Scratch::default();
    let routing = p.route(&req, &ctx, &mut scratch);
    let rule = routing.rule.to_string();
    let first = routing
        .steps
        .iter()
        .find(|s| s.taken)
        .map(|s| match s.deny {
            Some((st, _)) => format!("deny {st}"),
            None => s.name.clone(),
        })
        .unwrap_or_else(|| "none".into());
    (rule, first)
}
