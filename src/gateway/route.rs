//! Routing: an [`Admitted`] request -> its [`Routing`] (the rule that matched, its options and
//! its plan), or the policy's refusal: `deny` (403 or its status), `requested` outside the
//! catalog (404). The facts from outside the body come in as values: the key's tier and budget
//! standing, the models' health, the time. The request-log line's facts are taken here, as the
//! policy saw them.

use std::cell::RefCell;

use chrono::{Datelike, Timelike};

use super::admit::Admitted;
use super::error::ApiError;
use super::settle::Settle;
use super::AppState;
use crate::accounting::requestlog::Facts;
use crate::accounting::usage;
use crate::dispatch::HealthView;
use crate::policy::eval::{Budget, Context, RequestFacts, Routing, Scratch};
use crate::reload::{Key, Snapshot};
use crate::state::{Standing, StateStore};

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Budget facts: `spent` is settled spend; `remaining` also leaves out what requests in flight
/// have reserved.
pub fn budget_facts(limit_usd: Option<f64>, standing: Standing) -> Budget {
    let mut b = Budget::from_limit(limit_usd, usage::usd(standing.spent));
    if let (Some(limit), Some(_)) = (limit_usd, b.remaining_usd) {
        let left = (limit - usage::usd(standing.spent + standing.reserved)).max(0.0);
        b.remaining_usd = Some(left);
        b.remaining_fraction = Some(if limit > 0.0 { left / limit } else { 0.0 });
    }
    b
}

/// The key's budget standing (loaded from the ledger the first time the key is seen).
pub async fn standing(st: &AppState, key: Option<&Key>) -> Result<Standing, ApiError> {
    match key.and_then(|k| k.budget.map(|b| (k, b))) {
        Some((k, b)) => {
            st.state.standing(&k.account, b.per).await.map_err(|e| ApiError::state_unavailable(&e.to_string()))
        }
        None => Ok(Standing::default()),
    }
}

/// The facts from outside the request body.
pub fn context<'a>(key: Option<&'a Key>, health: &'a HealthView<'a>, standing: Standing) -> Context<'a> {
    let now = chrono::Utc::now();
    Context {
        tier: key.and_then(|k| k.tier.as_deref()),
        key_name: key.map(|k| k.name.as_str()),
        budget: budget_facts(key.and_then(|k| k.budget.map(|b| b.usd)), standing),
        health,
        hour: u8::try_from(now.hour()).unwrap_or(0),
        weekday: u8::try_from(now.weekday().num_days_from_monday()).unwrap_or(0),
    }
}

/// Routes an admitted request; `settle`'s record learns the rule (and the request log's facts).
/// A large prompt's tokens are counted first, on a blocking thread, so that neither a rule that
/// reads `prompt.tokens` nor a context check counts them on the request threads.
pub async fn route<'s>(
    st: &AppState,
    snap: &'s Snapshot,
    admitted: &mut Admitted,
    settle: &mut Settle,
) -> Result<Routing<'s>, ApiError> {
    // The standing is a round trip to a shared store: read only when a rule or the request log
    // needs it (402s and `/v1/key` read their own).
    let standing = if snap.program.info.reads_budget || settle.record.log.is_some() {
        standing(st, admitted.key.as_deref()).await?
    } else {
        Standing::default()
    };
    let facts = &mut admitted.inbound.facts;
    if facts.known_tokens.is_none() && facts.prompt.len() >= crate::util::tokens::OFF_THREAD_BYTES {
        facts.known_tokens = Some(crate::util::tokens::count_off_thread(facts.prompt.as_str().into()).await);
    }
    let facts = &admitted.inbound.facts;
    let (routing, ctx_facts) = {
        // The context borrows the (non-Send) health view: keep it out of the await above.
        let view = HealthView { state: &st.state, latency: &st.latency, catalog: snap.program.catalog() };
        let ctx = context(admitted.key.as_deref(), &view, standing);
        let routing = SCRATCH.with(|s| snap.program.route(facts, &ctx, &mut s.borrow_mut()));
        (routing, (ctx.budget.spent_usd, ctx.hour, ctx.weekday))
    };
    settle.record.rule = Some(routing.rule.to_string());
    if st.accounting.request_log {
        let keep = st.accounting.log_headers.as_deref();
        let mut f = log_facts(facts, &snap.program.info.headers, keep, st.accounting.log_prompts);
        f.prompt_tokens = routing.tokens;
        f.tier = admitted.key.as_deref().and_then(|k| k.tier.clone());
        f.budget_usd = admitted.key.as_deref().and_then(|k| k.budget.map(|b| b.usd));
        (f.budget_spent_usd, f.hour, f.weekday) = ctx_facts;
        settle.record.log = Some(f);
    }
    if let Some((status, message)) = routing.deny() {
        return Err(ApiError::denied(status, message));
    }
    if let Some(name) = &routing.unknown_requested {
        // A name outside the catalog may still be a family's (`openai/*`): dispatch reaches it.
        let catalog = snap.program.catalog();
        if catalog.family_of(name).is_none() {
            return Err(ApiError::model_not_found(name, crate::util::fuzzy::did_you_mean(name, catalog.names())));
        }
    }
    Ok(routing)
}

/// The facts of a request as the request log keeps them. `headers` are the ones the policy reads:
/// their values are kept when `keep` lists them, or, without `keep`, when they are not
/// credentials (`authorization` never); the others are listed as redacted. `prompts` keeps the
/// text. The token count is taken later, off the request path, when no rule needed it.
fn log_facts(req: &RequestFacts, headers: &[String], keep: Option<&[String]>, prompts: bool) -> Facts {
    let kept = |name: &str| {
        name != "authorization"
            && match keep {
                Some(list) => list.iter().any(|k| k == name),
                None => !crate::accounting::requestlog::is_credential(name),
            }
    };
    let present = req.headers.iter().filter(|(k, _)| headers.contains(k));
    Facts {
        endpoint: req.endpoint,
        api: req.api,
        model: req.model.clone(),
        stream: req.stream,
        tools: req.tools,
        images: req.images,
        max_tokens: req.max_tokens,
        messages: req.messages,
        prompt_chars: req.prompt.chars().count() as u64,
        prompt_bytes: req.prompt.len() as u64,
        prompt_tokens: None,
        uncounted: (!prompts).then(|| req.prompt.clone()),
        user_id: req.user_id.clone(),
        headers: present.clone().filter(|(k, _)| kept(k)).map(|(k, v)| (k.clone(), v.clone())).collect(),
        headers_redacted: present.filter(|(k, _)| !kept(k)).map(|(k, _)| k.clone()).collect(),
        headers_read: headers.iter().filter(|h| *h != "authorization").cloned().collect(),
        metadata: req.metadata.iter().cloned().collect(),
        prompt: prompts.then(|| req.prompt.clone()),
        prompt_last: prompts.then(|| req.prompt_last().to_string()),
        prompt_system: prompts.then(|| req.prompt_system().to_string()),
        ..Facts::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> RequestFacts {
        let body = serde_json::json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}]});
        RequestFacts::from_chat(&body).unwrap().with_headers([
            ("Cookie", "session=abc123"),
            ("X-Api-Key", "k-123"),
            ("X-Team", "search"),
            ("Authorization", "Bearer sk-x"),
        ])
    }

    /// The request log keeps the headers a policy reads, but not credentials (cookies and
    /// `x-api-key` values were once kept), unless the config lists them.
    #[test]
    fn the_request_log_keeps_no_credential_unless_listed() {
        let read: Vec<String> = ["cookie", "x-api-key", "x-team", "authorization"].map(String::from).into();
        let f = log_facts(&request(), &read, None, false);
        assert_eq!(f.headers.into_iter().collect::<Vec<_>>(), [("x-team".to_string(), "search".to_string())]);
        assert_eq!(f.headers_redacted, ["cookie", "x-api-key", "authorization"]);
        let keep = ["x-api-key".to_string()];
        let f = log_facts(&request(), &read, Some(&keep), false);
        assert_eq!(f.headers.keys().collect::<Vec<_>>(), ["x-api-key"]);
        assert_eq!(f.headers_redacted, ["cookie", "x-team", "authorization"]);
    }
}
