//! Targets: the policy's plan (its taken steps) -> the targets dispatch tries, each with its
//! provider, its overrides and the worst case it reserves from the key's budget (SPEC §9: the
//! prompt's bytes as input tokens plus `max_tokens`, or `min(4096, context − prompt)`, at the
//! target's prices). Steps the key may not use are skipped here, with their reason.

use std::collections::HashMap;

use serde_json::Value;

use crate::accounting::budget::worst_case_tokens;
use crate::accounting::Rate;
use crate::catalog::{Catalog, Model};
use crate::policy::eval::plan::{max_tokens, Skip, Step};
use crate::providers::Provider;

/// One target to try.
#[derive(Debug)]
pub struct Target<'a> {
    /// Catalog name.
    pub model: &'a str,
    /// Upstream id.
    pub upstream_id: &'a str,
    /// Provider name.
    pub provider_name: &'a str,
    /// The provider.
    pub provider: &'a Provider,
    /// `with (...)` overrides.
    pub with: &'a [(String, Value)],
    /// The attempt's worst-case cost, reserved from the key's budget before the call (micro-USD).
    pub reserve_micros: u64,
}

/// The targets of a plan, and why each step that is not among them was skipped.
#[derive(Debug, Default)]
pub struct Targets<'a> {
    /// In the order they are tried.
    pub list: Vec<Target<'a>>,
    /// `model: reason` for every step left out (by the plan, or here).
    pub skipped: Vec<String>,
    /// The kinds of skips (the key's allowlist counts as [`Skip::Outside`]).
    pub skips: Vec<Skip>,
}

impl Targets<'_> {
    /// With no target: whether trying again later could help (a breaker closes by itself; a
    /// context, a capability, an allowlist never change).
    pub fn retryable(&self) -> bool {
        self.skips.iter().any(|s| s.transient())
    }

    /// With no target: whether every model was too small for the prompt and `max_tokens`.
    pub fn too_long(&self) -> bool {
        !self.skips.is_empty() && self.skips.iter().all(|s| *s == Skip::Context)
    }
}

/// What the request brings to the reservations.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    /// The prompt's length in bytes (an upper bound of its tokens).
    pub prompt_bytes: u64,
    /// The client's `max_tokens`.
    pub max_tokens: Option<u64>,
}

/// The targets of `steps`. `allowed` is the key's model allowlist.
pub fn targets<'a>(
    steps: &'a [Step<'a>],
    catalog: &'a Catalog,
    providers: &'a HashMap<String, Provider>,
    allowed: Option<&[String]>,
    sizes: Sizes,
) -> Targets<'a> {
    let mut out = Targets {
        skipped: steps.iter().filter(|s| !s.taken).map(|s| format!("{}: {}", s.name, s.reason)).collect(),
        skips: steps.iter().filter_map(|s| s.skip).filter(|s| *s != Skip::Repeated).collect(),
        ..Targets::default()
    };
    for step in steps.iter().filter(|s| s.taken) {
        let Some(model) = step.model.and_then(|m| catalog.get(m)) else { continue };
        if allowed.is_some_and(|l| !l.contains(&model.name)) {
            out.skipped.push(format!("{}: skipped: not allowed for this key", model.name));
            out.skips.push(Skip::Outside);
            continue;
        }
        let Some(provider) = providers.get(&model.provider) else { continue };
        out.list.push(target(model, provider, step.with, sizes));
    }
    out
}

/// `model` as a target by itself, with no overrides (the semantic cache's embedding call): none
/// when its provider is not configured.
pub fn one<'a>(model: &'a Model, providers: &'a HashMap<String, Provider>, prompt_bytes: u64) -> Option<Target<'a>> {
    let provider = providers.get(&model.provider)?;
    Some(target(model, provider, &[], Sizes { prompt_bytes, max_tokens: None }))
}

fn target<'a>(model: &'a Model, provider: &'a Provider, with: &'a [(String, Value)], sizes: Sizes) -> Target<'a> {
    let (input, output) = worst_case_tokens(sizes.prompt_bytes, max_tokens(sizes.max_tokens, with), model.context);
    Target {
        model: &model.name,
        upstream_id: &model.upstream_id,
        provider_name: &model.provider,
        provider,
        with,
        reserve_micros: Rate::of(model.price).cost_micros(input, output),
    }
}
