//! Dispatch: a routed request's targets -> one upstream reply, or why there is none. It builds
//! the targets and their worst-case reservations from the policy's plan ([`targets`]), then tries
//! them in order, with retries (exponential backoff and jitter), `Retry-After` honoured up to a
//! cap, the breakers of the state store, latency averages ([`health`]) and the first-byte
//! timeout. A stream is committed only after its first event, so that every failure before that
//! can still fall through. Every attempt's [`Outcome`] is typed.
//!
//! What a request holds is never lost on the way: the budget reservation of the attempt in
//! flight lives in the caller's [`Holds`] (released here when the attempt fails, and by the
//! caller's settle guard otherwise, even when the request is cancelled), and a half-open probe
//! is given back when its attempt ends without a verdict, cancellation included ([`Claim`]).

pub mod health;
pub mod outgoing;
pub mod targets;

use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use rand::Rng;
use serde_json::Value;

use crate::catalog::Endpoint;
use crate::providers::{Call, Limits, Provider, Reply, UpstreamError};
use crate::state::{Admission, Budget, Holds, StateError, StateStore, Store};
use crate::util::trace::TraceContext;
pub use health::{HealthView, Latencies};
pub use outgoing::outgoing_body;
pub use targets::{targets, Target, Targets};

/// Longest `Retry-After` that is waited for; a longer one falls through.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(10);
/// Default time to the first byte.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How to try targets.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Retries per target.
    pub retries: u32,
    /// Time to the first byte, per attempt.
    pub timeout: Duration,
    /// Longest `Retry-After` honoured.
    pub retry_after_cap: Duration,
    /// First backoff.
    pub backoff: Duration,
    /// What a reply may take: the read timeout and the size limits.
    pub limits: Limits,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            retries: 0,
            timeout: DEFAULT_TIMEOUT,
            retry_after_cap: RETRY_AFTER_CAP,
            backoff: Duration::from_millis(100),
            limits: Limits::default(),
        }
    }
}

/// What dispatch reads and writes besides the request: the state store (breakers, budgets) and
/// this instance's latencies.
#[derive(Clone, Copy)]
pub struct Dispatcher<'a> {
    /// Breakers and budgets.
    pub state: &'a Store,
    /// Latency averages.
    pub latency: &'a Latencies,
}

/// The request as dispatch sends it.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    /// The client's body, in OpenAI's shape.
    pub body: &'a Value,
    /// Whether to stream.
    pub stream: bool,
    /// Chat or embeddings.
    pub endpoint: Endpoint,
    /// Retries and timeouts.
    pub opts: Options,
    /// The key and its budget, when it has one: each attempt reserves its worst case first.
    pub budget: Option<(&'a str, Budget)>,
    /// The trace the request belongs to, and whether each attempt is a span of its own (traces
    /// on: a new span id per attempt in its `traceparent`) or the client's `traceparent` is only
    /// passed on.
    pub trace: Option<(TraceContext, bool)>,
}

/// What happened to one target (or one try of it).
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// It answered.
    Answered,
    /// Skipped: its breaker is open.
    BreakerOpen,
    /// Skipped: its provider cannot be used (why).
    Unavailable(String),
    /// Skipped: its worst-case cost (micro-USD) does not fit the key's remaining budget.
    OverBudget(u64),
    /// Called, and it failed.
    Failed(UpstreamError),
}

impl Outcome {
    /// Whether an upstream call was made.
    pub fn called(&self) -> bool {
        matches!(self, Outcome::Answered | Outcome::Failed(_))
    }

    /// As error messages and logs say it (never a URL or a key).
    pub fn describe(&self) -> String {
        match self {
            Outcome::Answered => "ok".into(),
            Outcome::BreakerOpen => "skipped: breaker open".into(),
            Outcome::Unavailable(why) => format!("skipped: provider unavailable ({why})"),
            Outcome::OverBudget(_) => "skipped: its worst-case cost does not fit the remaining budget".into(),
            Outcome::Failed(e) => e.describe(),
        }
    }
}

/// One upstream call, or a target skipped at dispatch time.
#[derive(Clone, Debug, PartialEq)]
pub struct Attempt {
    /// Catalog name.
    pub model: String,
    /// Provider name.
    pub provider: String,
    /// What happened.
    pub outcome: Outcome,
    /// When a call was made: when, how long it took, its span.
    pub timing: Option<Timing>,
}

/// When an upstream call was made and how long it took (to the first event, for a stream).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timing {
    /// When it was sent.
    pub start: SystemTime,
    /// Until the reply (a stream: its first event) or the failure.
    pub took: Duration,
    /// The span id its `traceparent` named (zero without a trace of its own).
    pub span: [u8; 8],
}

impl Attempt {
    fn new(t: &Target<'_>, outcome: Outcome) -> Attempt {
        Attempt { model: t.model.into(), provider: t.provider_name.into(), outcome, timing: None }
    }

    fn called(t: &Target<'_>, outcome: Outcome, timing: Timing) -> Attempt {
        Attempt { timing: Some(timing), ..Attempt::new(t, outcome) }
    }
}

/// A reply that came back.
#[derive(Debug)]
pub struct Success {
    /// The reply (a stream starts with its first event already received).
    pub reply: Reply,
    /// Catalog name of the model that answered.
    pub model: String,
    /// Its upstream id.
    pub upstream_id: String,
    /// Its provider.
    pub provider: String,
    /// Every attempt, the successful one last.
    pub attempts: Vec<Attempt>,
    /// Time to first byte of the successful attempt.
    pub ttfb: Duration,
}

/// Why no reply came back.
#[derive(Debug)]
pub enum Failure {
    /// The upstream refused the request itself (SPEC §9's client errors): goes back to the client.
    Client {
        /// Upstream status.
        status: u16,
        /// Upstream body.
        body: String,
        /// Attempts so far, the refusal last.
        attempts: Vec<Attempt>,
    },
    /// Every target was tried and failed (502).
    AllFailed(Vec<Attempt>),
    /// No target could even be tried (503, or 402 when the budget excluded every one).
    NoneTried(Vec<Attempt>),
    /// The state store could not be reached (503).
    State(StateError, Vec<Attempt>),
}

impl Failure {
    /// The attempts made.
    pub fn attempts(&self) -> &[Attempt] {
        match self {
            Failure::Client { attempts, .. }
            | Failure::AllFailed(attempts)
            | Failure::NoneTried(attempts)
            | Failure::State(_, attempts) => attempts,
        }
    }

    /// When the budget excluded every target (and nothing else did): the smallest worst-case
    /// cost among them, micro-USD.
    pub fn over_budget(&self) -> Option<u64> {
        let a = self.attempts();
        if !matches!(self, Failure::NoneTried(_)) {
            return None;
        }
        a.iter()
            .map(|a| match a.outcome {
                Outcome::OverBudget(micros) => Some(micros),
                _ => None,
            })
            .try_fold(None, |min: Option<u64>, m| m.map(|m| Some(min.map_or(m, |x| x.min(m)))))?
    }
}

/// A claim on a model's breaker for one attempt: closed, or the half-open breaker's one probe.
/// It ends in a verdict ([`Claim::success`], [`Claim::failure`]) or gives the probe back
/// ([`Claim::release`], and on drop, so that a cancelled request cannot wedge a breaker).
struct Claim<'a> {
    state: &'a Store,
    model: &'a str,
    probe: bool,
}

impl<'a> Claim<'a> {
    fn take(state: &'a Store, model: &'a str) -> Option<Claim<'a>> {
        match state.admit(model) {
            Admission::Yes => Some(Claim { state, model, probe: false }),
            Admission::Probe => Some(Claim { state, model, probe: true }),
            Admission::No => None,
        }
    }

    fn success(mut self) {
        self.state.success(self.model);
        self.probe = false;
    }

    fn failure(mut self) {
        self.state.failure(self.model);
        self.probe = false;
    }

    fn release(self) {}
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if self.probe {
            self.state.release(self.model);
        }
    }
}

fn backoff(base: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(6)).min(Duration::from_secs(2));
    let jitter: f64 = rand::rng().random_range(0.5..1.5);
    exp.mul_f64(jitter)
}

/// Tries the targets in order. The attempt in flight's budget reservation is left in
/// `holds.budget` when it answers, for the caller to settle with the real cost.
pub async fn run(
    d: Dispatcher<'_>,
    targets: &[Target<'_>],
    req: Request<'_>,
    holds: &mut Holds,
) -> Result<Success, Failure> {
    let mut attempts: Vec<Attempt> = Vec::new();
    for t in targets {
        if let Some((reply, ttfb)) = try_target(d, t, req, holds, &mut attempts).await? {
            return Ok(Success {
                reply,
                model: t.model.into(),
                upstream_id: t.upstream_id.into(),
                provider: t.provider_name.into(),
                attempts,
                ttfb,
            });
        }
    }
    if attempts.iter().any(|a| a.outcome.called()) {
        Err(Failure::AllFailed(attempts))
    } else {
        Err(Failure::NoneTried(attempts))
    }
}

/// One target, with its retries: the reply and its time to first byte, `None` to fall through
/// to the next target, or a failure that ends the request.
async fn try_target(
    d: Dispatcher<'_>,
    t: &Target<'_>,
    req: Request<'_>,
    holds: &mut Holds,
    attempts: &mut Vec<Attempt>,
) -> Result<Option<(Reply, Duration)>, Failure> {
    for attempt in 0..=req.opts.retries {
        let Some(claim) = Claim::take(d.state, t.model) else {
            attempts.push(Attempt::new(t, Outcome::BreakerOpen));
            return Ok(None);
        };
        if let Provider::Unavailable(why) = t.provider {
            attempts.push(Attempt::new(t, Outcome::Unavailable(why.clone())));
            return Ok(None);
        }
        if let Some((key, budget)) = req.budget {
            match d.state.reserve(key, budget, t.reserve_micros).await {
                Ok(Some(r)) => holds.budget = Some(r),
                Ok(None) => {
                    attempts.push(Attempt::new(t, Outcome::OverBudget(t.reserve_micros)));
                    return Ok(None);
                }
                Err(e) => return Err(Failure::State(e, std::mem::take(attempts))),
            }
        }
        let (wall, started) = (SystemTime::now(), Instant::now());
        let (span, traceparent) = match req.trace {
            Some((ctx, true)) => {
                let span = crate::util::trace::span_id();
                (span, Some(ctx.header(span)))
            }
            Some((ctx, false)) => ([0; 8], ctx.parent.map(|p| ctx.header(p))),
            None => ([0; 8], None),
        };
        holds.in_flight = Some(t.reserve_micros);
        let result = call(t, req, traceparent).await;
        holds.in_flight = None;
        let ttfb = started.elapsed();
        let timing = Timing { start: wall, took: ttfb, span };
        let e = match result {
            Ok(reply) => {
                claim.success();
                d.latency.record(t.model, ttfb);
                attempts.push(Attempt::called(t, Outcome::Answered, timing));
                return Ok(Some((reply, ttfb)));
            }
            Err(e) => e,
        };
        if let Some(r) = holds.budget.take() {
            d.state.settle(r, 0);
        }
        attempts.push(Attempt::called(t, Outcome::Failed(e.clone()), timing));
        if let (true, UpstreamError::Status { status, body, .. }) = (e.is_client_error(), &e) {
            claim.release();
            return Err(Failure::Client { status: *status, body: body.clone(), attempts: std::mem::take(attempts) });
        }
        if e.is_breaker_failure() {
            claim.failure();
        } else {
            claim.release();
        }
        let wait = match &e {
            UpstreamError::Status { status: 429, retry_after: Some(ra), .. } if *ra > req.opts.retry_after_cap => break,
            UpstreamError::Status { status: 429, retry_after: Some(ra), .. } => *ra,
            _ => backoff(req.opts.backoff, attempt),
        };
        if attempt < req.opts.retries {
            tokio::time::sleep(wait).await;
        }
    }
    Ok(None)
}

/// One upstream call. A stream counts as answered only once its first event has come (within
/// the first-byte timeout), and a first event that is an error counts as that error.
async fn call(t: &Target<'_>, req: Request<'_>, traceparent: Option<String>) -> Result<Reply, UpstreamError> {
    let started = Instant::now();
    let call = Call {
        traceparent,
        body: outgoing_body(req.body, t.upstream_id, t.with, req.stream && t.provider.reports_stream_usage()),
        stream: req.stream,
        endpoint: req.endpoint,
        first_byte_timeout: req.opts.timeout,
        limits: req.opts.limits,
    };
    match t.provider.call(call).await? {
        Reply::Stream(mut s) => {
            let left = req.opts.timeout.saturating_sub(started.elapsed());
            match tokio::time::timeout(left, s.next()).await {
                Err(_) => Err(UpstreamError::Timeout),
                Ok(None) => Err(UpstreamError::Malformed("the stream ended before its first event".into())),
                Ok(Some(Err(e))) => Err(e),
                Ok(Some(Ok(first))) => match stream_error_status(&first) {
                    Some(status) => Err(UpstreamError::Status { status, body: first, retry_after: None }),
                    None => Ok(Reply::Stream(Box::pin(futures_util::stream::once(async move { Ok(first) }).chain(s)))),
                },
            }
        }
        other => Ok(other),
    }
}

/// Some upstreams answer 200 and then send an error as the first event.
fn stream_error_status(first: &str) -> Option<u16> {
    let v: Value = serde_json::from_str(first).ok()?;
    let err = v.get("error")?;
    let code = err.get("code").and_then(Value::as_u64).and_then(|c| u16::try_from(c).ok());
    Some(code.filter(|c| (400..600).contains(c)).unwrap_or(502))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Period, ProviderConfig};
    use crate::state::Standing;

    fn mock(yaml: &str) -> Provider {
        let cfg: ProviderConfig = serde_yaml::from_str(yaml).unwrap();
        Provider::Mock(crate::providers::mock::Mock::new("p", &cfg))
    }

    fn target<'a>(model: &'a str, provider: &'a Provider, reserve_micros: u64) -> Target<'a> {
        Target { model, upstream_id: model, provider_name: "p", provider, with: &[], reserve_micros }
    }

    fn request<'a>(body: &'a Value, budget: Option<(&'a str, Budget)>) -> Request<'a> {
        Request { body, stream: false, endpoint: Endpoint::Chat, opts: Options::default(), budget, trace: None }
    }

    fn body() -> Value {
        serde_json::json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
    }

    /// Dispatches `targets` for key `k` with `budget`.
    async fn dispatch(
        state: &Store,
        latency: &Latencies,
        targets: &[Target<'_>],
        budget: Budget,
        holds: &mut Holds,
    ) -> Result<Success, Failure> {
        let body = body();
        run(Dispatcher { state, latency }, targets, request(&body, Some(("k", budget))), holds).await
    }

    #[tokio::test]
    async fn a_failed_target_falls_through_and_gives_its_reservation_back() {
        let state = Store::local(None, Duration::from_secs(30));
        let latency = Latencies::default();
        let (failing, healthy) = (mock("{kind: mock, fail_rate: 1.0}"), mock("{kind: mock}"));
        let targets = [target("a", &failing, 300), target("b", &healthy, 200)];
        let budget = Budget { limit: 1_000, per: Period::Month };
        let mut holds = Holds::default();
        let ok = dispatch(&state, &latency, &targets, budget, &mut holds).await.unwrap();
        assert_eq!(ok.model, "b");
        let outcomes: Vec<(&str, bool)> = ok.attempts.iter().map(|a| (a.model.as_str(), a.outcome.called())).collect();
        assert_eq!(outcomes, [("a", true), ("b", true)]);
        assert!(matches!(ok.attempts[0].outcome, Outcome::Failed(UpstreamError::Status { status: 500, .. })));
        assert_eq!(ok.attempts[1].outcome, Outcome::Answered);
        // Only the answering attempt's reservation is still held, for the caller to settle.
        assert_eq!(holds.budget.as_ref().map(|r| r.micros), Some(200));
        assert_eq!(state.standing("k", Period::Month).await.unwrap(), Standing { spent: 0, reserved: 200 });
        assert!(latency.ms("b").is_some() && latency.ms("a").is_none());
    }

    #[tokio::test]
    async fn a_budget_that_excludes_every_target_is_told_apart() {
        let state = Store::local(None, Duration::from_secs(30));
        let latency = Latencies::default();
        let p = mock("{kind: mock}");
        let targets = [target("a", &p, 600), target("b", &p, 700)];
        let budget = Budget { limit: 500, per: Period::Day };
        let mut holds = Holds::default();
        let f = dispatch(&state, &latency, &targets, budget, &mut holds).await.unwrap_err();
        assert!(f.over_budget().is_some(), "{f:?}");
        assert!(f.attempts().iter().all(|a| matches!(a.outcome, Outcome::OverBudget(_)) && !a.outcome.called()));
        assert!(holds.budget.is_none());
        // A breaker that is open is another reason: no longer "over budget" alone.
        for _ in 0..5 {
            state.failure("a");
        }
        let f = dispatch(&state, &latency, &targets, budget, &mut holds).await.unwrap_err();
        assert_eq!(f.attempts()[0].outcome, Outcome::BreakerOpen);
        assert!(f.over_budget().is_none());
    }

    /// A half-open breaker's probe that is cancelled (the client went away mid-call) is given back,
    /// so the next request may probe; it used to stay claimed, and the model "open", for good.
    #[tokio::test]
    async fn a_cancelled_probe_is_given_back() {
        let state = Store::local(None, Duration::from_millis(20));
        let latency = Latencies::default();
        for _ in 0..5 {
            state.failure("slow");
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        let p = mock("{kind: mock, latency: 5s}");
        let targets = [target("slow", &p, 0)];
        let body = body();
        let mut holds = Holds::default();
        let d = Dispatcher { state: &state, latency: &latency };
        let call = run(d, &targets, request(&body, None), &mut holds);
        assert!(tokio::time::timeout(Duration::from_millis(50), call).await.is_err(), "the call is still running");
        assert_eq!(state.admit("slow"), Admission::Probe);
    }
}
