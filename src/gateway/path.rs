//! The chat and embeddings path, stage by stage: a front door's body is admitted
//! ([`super::admit`]), routed ([`super::route`]), dispatched ([`crate::dispatch`], which builds the
//! targets and their reservations from the plan) and answered ([`super::reply`]). One settle guard
//! goes along from the start and ends the request in every case ([`super::settle`]).

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;

use super::admit::{admit, Admitted};
use super::cache as replies;
use super::door::Door;
use super::error::ApiError;
use super::record::Record;
use super::reply::{reply, Dispatched};
use super::route::route;
use super::settle::Settle;
use super::AppState;
use crate::accounting::Rate;
use crate::cache::{self, Lookup};
use crate::dispatch::{self, targets::Sizes, Dispatcher, Failure};
use crate::policy::eval::Routing;
use crate::providers::Limits;
use crate::reload::Snapshot;
use crate::state::Budget;

/// `POST /v1/chat/completions`.
pub async fn chat(State(st): State<Arc<AppState>>, req: axum::extract::Request) -> Response {
    complete(st, Door::Chat, req).await
}

/// `POST /v1/messages`: Anthropic's Messages API, on the chat path, answered in its shapes.
pub async fn messages(State(st): State<Arc<AppState>>, req: axum::extract::Request) -> Response {
    super::messages::answer(complete(st, Door::Messages, req).await).await
}

/// `POST /v1/messages/count_tokens`: the input tokens of a Messages body (counted with the
/// gateway's tokenizer, the one its budgets and rules use), in Anthropic's shape.
pub async fn count_tokens(State(st): State<Arc<AppState>>, req: axum::extract::Request) -> Response {
    let snap = st.reloader.snapshot();
    let record = Record::new(snap.version());
    let (parts, body) = req.into_parts();
    let counted = async {
        let key = super::admit::authenticate(&st, &snap, &parts.headers)?;
        let bytes = super::admit::read_body(&st, &snap, body).await?;
        if let Some(k) = &key {
            // Before any counting; the worst case is the body's length in tokens (as admission
            // reserves).
            super::admit::within_limits(&st.state, k, bytes.len() as u64).await?;
        }
        let mut v: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
        if let Some(o) = v.as_object_mut() {
            // count_tokens takes no `max_tokens`.
            o.entry("max_tokens").or_insert(serde_json::json!(1));
        }
        let chat = super::messages::to_chat(v)?;
        let facts = crate::policy::eval::RequestFacts::from_chat(&chat)
            .map_err(|e| ApiError::bad_request(e.to_string()).param("messages"))?;
        let tools = chat.get("tools").map_or(0, |t| crate::util::tokens::count(&t.to_string()));
        let n = crate::util::tokens::count(&facts.prompt) + tools;
        Ok::<_, ApiError>(axum::response::IntoResponse::into_response(axum::Json(
            serde_json::json!({"input_tokens": n}),
        )))
    };
    let resp = super::settle::answer(&st, record, counted.await);
    if resp.status().is_success() {
        return resp;
    }
    super::messages::answer(resp).await
}

/// `POST /v1/responses`: OpenAI's Responses API, on the chat path, answered as a Response object
/// or its event sequence.
pub async fn responses(State(st): State<Arc<AppState>>, req: axum::extract::Request) -> Response {
    let snap = st.reloader.snapshot();
    let (parts, body) = req.into_parts();
    // The key first, as on every door: an unauthenticated body is never read.
    if let Err(e) = super::admit::authenticate(&st, &snap, &parts.headers) {
        return super::settle::answer(&st, Record::new(snap.version()), Err(e));
    }
    // The body is read here once, for the settings a Response object echoes, and handed on.
    let bytes = match super::admit::read_body(&st, &snap, body).await {
        Ok(b) => b,
        Err(e) => return super::settle::answer(&st, Record::new(snap.version()), Err(e)),
    };
    let echo = super::responses::Echo::of(&serde_json::from_slice(&bytes).unwrap_or_default());
    let req = axum::extract::Request::from_parts(parts, axum::body::Body::from(bytes));
    super::responses::answer(complete(st, Door::Responses, req).await, echo).await
}

/// `GET /v1/responses/{id}`: 404, as nothing is stored.
pub async fn stored_response(State(st): State<Arc<AppState>>) -> Response {
    let e = ApiError::response_not_stored();
    super::settle::answer(&st, Record::new(st.reloader.snapshot().version()), Err(e))
}

/// `POST /v1/moderations`.
pub async fn moderations(State(st): State<Arc<AppState>>, req: axum::extract::Request) -> Response {
    complete(st, Door::Moderations, req).await
}

/// `POST /v1/embeddings`.
pub async fn embeddings(State(st): State<Arc<AppState>>, req: axum::extract::Request) -> Response {
    complete(st, Door::Embeddings, req).await
}

async fn complete(st: Arc<AppState>, door: Door, req: axum::extract::Request) -> Response {
    if let Some(b) = &st.busy {
        b.touch();
    }
    let snap = st.reloader.snapshot();
    let mut settle = Settle::new(st.clone(), Record::new(snap.version()));
    settle.record.door = door.as_str();
    // The request's own headers, not a copy of them (as axum's `HeaderMap` extractor makes).
    let (parts, body) = req.into_parts();
    trace(&st, &parts.headers, &mut settle.record);
    let dispatched = async {
        let mut admitted = admit(&st, &snap, door, &parts.headers, body, &mut settle).await?;
        settle.record.admitted(&admitted.inbound, st.accounting.log_prompts);
        let routed = std::time::Instant::now();
        let routing = route(&st, &snap, &mut admitted, &mut settle).await;
        settle.record.policy_time = Some(routed.elapsed());
        let routing = routing?;
        let ticket = match look_up(&st, &snap, &admitted, &routing, &parts.headers, &mut settle).await {
            Ok(ticket) => ticket,
            Err(e) => return Ok(Next::Hit(e, admitted.inbound.stream, admitted.inbound.wants_usage)),
        };
        forward(&st, &snap, admitted, &routing, ticket, &mut settle).await.map(|d| Next::Dispatched(Box::new(d)))
    };
    match dispatched.await {
        Ok(Next::Dispatched(d)) => reply(&st, *d, settle),
        Ok(Next::Hit(hit, stream, wants_usage)) => replies::answer(&hit, stream, wants_usage, settle),
        Err(e) => settle.refuse(e),
    }
}

/// The request's trace: the client's `traceparent` continued (passed on upstream even with
/// traces off), or a new trace when traces are on. A span of its own only with traces on and a
/// trace the client did not mark unsampled.
fn trace(st: &AppState, headers: &axum::http::HeaderMap, record: &mut Record) {
    use crate::util::trace::{span_id, TraceContext};
    let incoming = headers.get("traceparent").and_then(|v| v.to_str().ok()).and_then(TraceContext::parse);
    if st.telemetry.is_none() {
        record.trace = incoming;
        return;
    }
    let trace = incoming.unwrap_or_else(TraceContext::new_root);
    record.trace = Some(trace);
    record.span_id = trace.sampled().then(span_id);
}

/// The cache stage: an entry that answers the request (`Err`), or the ticket with which the reply
/// stage stores dispatch's answer (`None` when the rule does not cache or the caller bypasses it).
/// The request's digest is computed here once, for the key and for the request log. A `similar`
/// rule's request that misses the exact key has its last user message embedded and looked up in
/// its context's index.
async fn look_up(
    st: &AppState,
    snap: &Snapshot,
    admitted: &Admitted,
    routing: &Routing<'_>,
    headers: &axum::http::HeaderMap,
    settle: &mut Settle,
) -> Result<Option<cache::Ticket>, cache::Hit> {
    let inbound = &admitted.inbound;
    if routing.cache.is_none() && settle.record.log.is_none() {
        return Ok(None);
    }
    let digest = cache::digest(&inbound.body);
    if let Some(log) = &mut settle.record.log {
        // What `simulate` needs to replay a cache: the request's digest, never its text.
        log.request_sha256 = Some(hex::encode(digest));
    }
    let caller = cache::Caller {
        key: admitted.key.as_deref().map(|k| k.account.as_str()),
        tier: admitted.key.as_deref().and_then(|k| k.tier.as_deref()),
        uses_cache: admitted.key.as_deref().is_none_or(|k| k.cache),
    };
    let query = cache::Query {
        rule_cache: routing.cache,
        rule: routing.rule,
        caller,
        endpoint: inbound.endpoint,
        digest: &digest,
    };
    let control = headers.get(axum::http::header::CACHE_CONTROL).and_then(|v| v.to_str().ok()).unwrap_or("");
    let wait = routing.timeout_ms.map_or(dispatch::DEFAULT_TIMEOUT, std::time::Duration::from_millis);
    // A shared entry may have been answered by a model this key may not use: never served to it.
    let allowed = |hit: &cache::Hit| admitted.key.as_deref().is_none_or(|k| k.may_use(&hit.entry.model));
    let mut ticket = match cache::lookup(&st.cache, query, control, wait).await {
        Lookup::Hit(hit) if allowed(&hit) => return Err(hit),
        Lookup::Hit(_) => return Ok(None),
        Lookup::Miss(t) => t,
        Lookup::Bypass => {
            settle.record.cache = Some("bypass");
            return Ok(None);
        }
        Lookup::Off => return Ok(None),
    };
    settle.record.cache = Some("miss");
    if st.state.shares_cache() && !ticket.no_lookup {
        // Another instance may have stored it.
        match st.state.cache_get(&ticket.hex_key()).await {
            Ok(Some((bytes, ttl))) => {
                if let Some(entry) = cache::adopt(&st.cache, ticket, &bytes, ttl) {
                    let similarity = routing.cache.and_then(|c| c.similar.as_ref()).map(|_| 1.0);
                    let hit = cache::Hit { entry, similarity };
                    if allowed(&hit) {
                        return Err(hit);
                    }
                }
                return Ok(None);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(request_id = %settle.record.id, error = %e, "the shared cache cannot be read: a miss")
            }
        }
    }
    let (Some(c), Some(similar)) = (routing.cache, routing.cache.and_then(|c| c.similar.as_ref())) else {
        return Ok(Some(ticket));
    };
    let catalog = snap.program.catalog();
    let model = catalog.get(similar.model).map_or("", |m| m.name.as_str());
    let scope = cache::scope_of(c, caller.key, caller.tier);
    let Some(context) = cache::similar::context(&scope, routing.rule, inbound.endpoint, model, &inbound.body) else {
        return Ok(Some(ticket));
    };
    if let Some(v) =
        replies::embed(st, snap, similar.model, &context.text, admitted.key.as_deref().and_then(budget_of), settle)
            .await
    {
        if !ticket.no_lookup {
            if let Some(hit) = cache::nearest(&st.cache, &context.key, &v, similar.threshold).filter(allowed) {
                return Err(hit);
            }
        }
        ticket.remember(context.key, v);
    }
    Ok(Some(ticket))
}

/// Whether a chat body asks for logprobs.
fn asks_logprobs(body: &serde_json::Value) -> bool {
    body.get("logprobs").and_then(serde_json::Value::as_bool) == Some(true)
        || body.get("top_logprobs").is_some_and(|t| !t.is_null())
}

/// The image parts of a chat body's messages.
fn images(body: &serde_json::Value) -> u64 {
    let Some(messages) = body.get("messages").and_then(serde_json::Value::as_array) else { return 0 };
    let parts = messages.iter().filter_map(|m| m.get("content")?.as_array()).flatten();
    parts.filter(|p| p.get("type").and_then(serde_json::Value::as_str).is_some_and(|t| t.contains("image"))).count()
        as u64
}

/// The calling key and its budget, when it has one.
fn budget_of(k: &crate::reload::Key) -> Option<(&str, Budget)> {
    let b = k.budget?;
    Some((k.account.as_str(), Budget { limit: crate::accounting::usage::micros(b.usd), per: b.per }))
}

/// What comes after routing: an answer from the cache, or dispatch's.
enum Next {
    Dispatched(Box<Dispatched>),
    Hit(cache::Hit, bool, bool),
}

/// Dispatches a routed request: its targets and reservations come from the plan; the record
/// learns the attempts and the model that answered (or the last one called).
async fn forward(
    st: &AppState,
    snap: &Snapshot,
    admitted: Admitted,
    routing: &Routing<'_>,
    ticket: Option<cache::Ticket>,
    settle: &mut Settle,
) -> Result<Dispatched, ApiError> {
    let Admitted { key, inbound } = admitted;
    let budget = key.as_deref().and_then(budget_of);
    let catalog = snap.program.catalog();
    let sizes = Sizes { prompt_bytes: inbound.facts.prompt.len() as u64, max_tokens: inbound.facts.max_tokens };
    let allowed = key.as_deref().and_then(|k| k.models.as_deref());
    // A client's name under a family (`openai/gpt-4.1` under `openai/*`) is one target of its own.
    let family = routing.unknown_requested.as_deref().and_then(|n| catalog.family_of(n));
    let targets = match &family {
        Some(m) => dispatch::targets::Targets {
            list: dispatch::targets::one(m, &snap.providers, sizes.prompt_bytes).into_iter().collect(),
            skipped: vec![format!("{}: its family's provider `{}` is not configured", m.name, m.provider)],
            ..Default::default()
        },
        None => dispatch::targets(&routing.steps, catalog, &snap.providers, allowed, sizes),
    };
    if targets.list.is_empty() {
        let why =
            if targets.skipped.is_empty() { "the rule has no target".to_string() } else { targets.skipped.join("; ") };
        // A prompt that no model can hold, or a request that no target can take, is permanent.
        return Err(match (targets.too_long(), targets.retryable()) {
            (true, _) => ApiError::context_length_exceeded(&why),
            (false, false) => ApiError::no_capable_target(&why),
            (false, true) => ApiError::no_target(&why),
        });
    }
    let request = dispatch::Request {
        body: &inbound.body,
        stream: inbound.stream,
        endpoint: inbound.endpoint,
        opts: dispatch::Options {
            retries: routing.retries,
            timeout: routing.timeout_ms.map_or(dispatch::DEFAULT_TIMEOUT, std::time::Duration::from_millis),
            limits: Limits {
                read_timeout: st.timeouts.stream_idle,
                max_reply_bytes: snap.config.config.limits.max_reply_bytes,
                max_event_bytes: snap.config.config.limits.max_event_bytes,
            },
            ..dispatch::Options::default()
        },
        budget,
        trace: settle.record.trace.map(|t| (t, settle.record.span_id.is_some())),
    };
    let d = Dispatcher { state: &st.state, latency: &st.latency };
    let max_tokens = inbound.facts.max_tokens;
    match dispatch::run(d, &targets.list, request, &mut settle.holds).await {
        Ok(mut success) => {
            settle.record.attempted(std::mem::take(&mut success.attempts));
            settle.record.upstream = Some(success.upstream_id.clone());
            settle.record.ttfb = Some(success.ttfb);
            let model = catalog.by_name(&success.model).or(family.as_ref());
            settle.rate = Rate::of(model.and_then(|m| m.price));
            settle.context = model.and_then(|m| m.context);
            let with = targets.list.iter().find(|t| t.model == success.model).map_or(&[][..], |t| t.with);
            settle.cap = Some(crate::accounting::budget::charge_cap(
                inbound.body_bytes,
                sizes.prompt_bytes,
                (images(&inbound.body), inbound.body.get("tools").is_some_and(|t| !t.is_null())),
                crate::policy::eval::plan::max_tokens(inbound.facts.max_tokens, with),
                settle.context,
            ));
            let prompt_tokens = routing.tokens.or(inbound.facts.known_tokens);
            let base64 = inbound.endpoint == crate::catalog::Endpoint::Embeddings
                && inbound.body.get("encoding_format").and_then(serde_json::Value::as_str) == Some("base64");
            // A stream is stored as the text it carried: one that asked for logprobs would lose
            // them, so it is not stored (the non-streamed answer keeps them, and is).
            let ticket = ticket.filter(|_| !(inbound.stream && asks_logprobs(&inbound.body)));
            Ok(Dispatched {
                success,
                prompt: inbound.facts.prompt,
                prompt_tokens,
                wants_usage: inbound.wants_usage,
                base64,
                ticket,
            })
        }
        Err(f) => {
            let refused = match (f.over_budget(), budget) {
                (Some(worst), Some((key, b))) => Some(over_budget(st, key, b, worst, max_tokens).await),
                _ => None,
            };
            Err(refused.unwrap_or_else(|| failure(f, settle)))
        }
    }
}

/// The 402 for a budget that excluded every target, saying what the cheapest target would have
/// reserved, what remains, and (without `max_tokens`) how to reserve less.
async fn over_budget(st: &AppState, key: &str, budget: Budget, worst: u64, max_tokens: Option<u64>) -> ApiError {
    use crate::accounting::usage::usd;
    use crate::state::StateStore;
    let per = match budget.per {
        crate::config::Period::Day => "today",
        crate::config::Period::Month => "this month",
        crate::config::Period::Total => "in all",
    };
    let mut why = format!("this request needs ${:.6} reserved (its cheapest target's worst-case cost)", usd(worst));
    if let Ok(s) = st.state.standing(key, budget.per).await {
        let left = budget.limit.saturating_sub(s.spent).saturating_sub(s.reserved);
        why.push_str(&format!(
            ", and ${:.6} of the key's ${:.2} budget remains {per} (${:.6} spent, ${:.6} reserved by requests in flight)",
            usd(left),
            usd(budget.limit),
            usd(s.spent),
            usd(s.reserved)
        ));
    }
    if max_tokens.is_none() {
        why.push_str(
            "; without `max_tokens` the reservation assumes the longest answer the model can give: \
             setting `max_tokens` lowers it",
        );
    }
    ApiError::budget_exceeded(&why)
}

/// Why no reply came back, as the client's error.
fn failure(f: Failure, settle: &mut Settle) -> ApiError {
    let over_budget = f.over_budget().is_some();
    let list = f
        .attempts()
        .iter()
        .map(|a| format!("{} via {}: {}", a.model, a.provider, a.outcome.describe()))
        .collect::<Vec<_>>();
    let e = match &f {
        _ if over_budget => ApiError::budget_exceeded("no target's worst-case cost fits what remains"),
        Failure::Client { status, body, .. } => ApiError::upstream_refused(*status, body.clone()),
        Failure::AllFailed(_) => ApiError::upstream_failed(&list.join("; ")),
        Failure::NoneTried(_) => ApiError::no_target(&list.join("; ")),
        Failure::State(e, _) => ApiError::state_unavailable(&e.to_string()),
    };
    let attempts = match f {
        Failure::Client { attempts, .. } | Failure::AllFailed(attempts) | Failure::NoneTried(attempts) => attempts,
        Failure::State(_, attempts) => attempts,
    };
    settle.record.attempted(attempts);
    e
}
