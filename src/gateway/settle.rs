//! Settlement: the one place where a request ends. A [`Settle`] guard owns the request's
//! [`Record`] and what it holds in the state store (the budget reservation of the attempt in
//! flight, the `tpm` admission). Ending it replaces the reservations with the real cost, hands the
//! ledger row and the request-log line to the writer, and counts the request in `/metrics`, all
//! from the record. If the request is dropped before it ends (the client went away before the
//! answer, or in the middle of a stream), `Drop` settles it as 499 with what was used so far, so
//! that no reservation is held for ever and no ledger row is forgotten.

use std::sync::Arc;

use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::record::Record;
use super::AppState;
use crate::accounting::{Rate, Usage};
use crate::state::{Holds, StateStore};

/// A request that has not ended yet.
pub struct Settle {
    st: Arc<AppState>,
    /// The request's record.
    pub record: Record,
    /// What it holds in the state store.
    pub holds: Holds,
    /// The prices of the model that answered (set when one has).
    pub rate: Rate,
    /// The context window of the model that answered: no usage above it is believed.
    pub context: Option<u64>,
    /// The most the reply may be charged for (`accounting::budget::charge_cap`: what its
    /// reservation allowed), once a model answered: reported usage above it is cut to it,
    /// logged and counted.
    pub cap: Option<Usage>,
    done: bool,
}

impl Settle {
    /// A guard for a request with this record.
    pub fn new(st: Arc<AppState>, record: Record) -> Settle {
        Settle { st, record, holds: Holds::default(), rate: Rate::default(), context: None, cap: None, done: false }
    }

    /// What `usage` costs at the answering model's prices, bounded by its context (as settling
    /// would charge it).
    pub fn cost_of(&self, usage: Usage) -> u64 {
        let u = self.capped(usage);
        let u = u.bounded(self.context).unwrap_or(u);
        self.rate.cost_micros(u.input, u.output)
    }

    /// `usage` within the reply's cap.
    fn capped(&self, usage: Usage) -> Usage {
        match self.cap {
            Some(c) => Usage { input: usage.input.min(c.input), output: usage.output.min(c.output), ..usage },
            None => usage,
        }
    }

    /// Ends the request with `status` and `usage` (once: later calls change nothing); returns
    /// its cost in micro-USD. The record stays readable, for the response's headers.
    pub fn finish(&mut self, status: u16, usage: Usage) -> u64 {
        self.end(status, usage, None)
    }

    /// Ends the request; `charge` (micro-USD), when given, is what it costs instead of `usage`
    /// at the model's prices.
    fn end(&mut self, status: u16, usage: Usage, charge: Option<u64>) -> u64 {
        if self.done {
            return self.record.cost_micros.unwrap_or(0);
        }
        self.done = true;
        let capped = self.capped(usage);
        if capped != usage {
            tracing::warn!(
                request_id = %self.record.id, input = usage.input, output = usage.output,
                charged_input = capped.input, charged_output = capped.output,
                "the upstream reported more tokens than the request's reservation allowed; charged for what it allowed"
            );
            self.st.metrics.usage_capped();
        }
        let usage = match capped.bounded(self.context) {
            Some(bounded) => {
                tracing::warn!(
                    request_id = %self.record.id, input = capped.input, output = capped.output,
                    "the upstream reported more tokens than the model's context holds; charged for the context"
                );
                bounded
            }
            None => capped,
        };
        let answer = charge.unwrap_or_else(|| self.rate.cost_micros(usage.input, usage.output));
        let state = &self.st.state;
        if let Some(r) = self.holds.budget.take() {
            state.settle(r, answer);
        }
        // The semantic cache's embedding call was settled when it came back.
        let cost = answer.saturating_add(self.record.embed_micros);
        if let Some(t) = self.holds.tokens.take() {
            state.settle_tpm(t, usage.total());
        }
        let r = &mut self.record;
        r.status = status;
        r.usage = usage;
        r.cost_micros = Some(cost);
        if r.ledgered {
            let now = chrono::Utc::now();
            let line = if self.st.accounting.request_log {
                r.log_entry(now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)).map(Box::new)
            } else {
                None
            };
            if let Some(l) = &self.st.accounting.ledger {
                l.record(r.row(now.timestamp_millis()), line);
            }
        }
        r.count(&self.st.metrics);
        if self.st.accounting.access_log {
            // The access log: one line a request, never its prompt.
            tracing::info!(
                target: "yardmaster::access",
                request_id = %r.id, key = %r.key.as_deref().unwrap_or("-"), door = %r.door,
                rule = %r.rule.as_deref().unwrap_or("-"), model = %r.model.as_deref().unwrap_or("-"),
                status = r.status, tokens_in = r.usage.input, tokens_out = r.usage.output,
                cost_usd = %format_args!("{:.6}", crate::accounting::usage::usd(cost)),
                latency_ms = r.started.elapsed().as_millis() as u64, cache = %r.cache.unwrap_or("-"),
                "request"
            );
        }
        if let Some(t) = &self.st.telemetry {
            let snap = self.st.reloader.snapshot();
            let providers = &snap.config.config.providers;
            if let Some(spans) = r.spans(|p| providers.get(p).map_or("unknown", |c| c.kind.otel_name())) {
                t.submit(spans);
            }
        }
        cost
    }

    /// Answers an error: the request ends with its status and nothing used, and the response
    /// carries the record's headers.
    pub fn refuse(mut self, e: ApiError) -> Response {
        let status = e.status.as_u16();
        if e.status.is_server_error() {
            tracing::warn!(request_id = %self.record.id, status, error = %e.message, "request failed");
        } else {
            tracing::debug!(request_id = %self.record.id, status, error = %e.message, "request refused");
        }
        self.record.refusal = e.refusal;
        self.finish(status, Usage::default());
        let mut resp = e.into_response();
        self.record.headers(resp.headers_mut());
        resp
    }
}

impl Drop for Settle {
    fn drop(&mut self) {
        // The client went away before the answer. Nothing came back to it, but a call in flight
        // is billed by its provider all the same, and what it used is never learnt: it is charged
        // its worst case (its reservation's amount). Before any call, nothing is charged. (A
        // stream's relay settles with what it knows before this runs.)
        let charge = self.holds.in_flight.take();
        if charge.is_some() {
            tracing::info!(request_id = %self.record.id, "the client went away during an upstream call: charged the call's worst case");
        }
        self.end(499, Usage::default(), charge);
    }
}

/// Answers a request that holds nothing (models, key, admin, health): counted in `/metrics` from
/// its record, with the record's headers.
pub fn answer(st: &AppState, mut record: Record, result: Result<Response, ApiError>) -> Response {
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(request_id = %record.id, status = e.status.as_u16(), error = %e.message, "request refused");
            record.refusal = e.refusal;
            e.into_response()
        }
    };
    record.status = resp.status().as_u16();
    record.headers(resp.headers_mut());
    record.count(&st.metrics);
    resp.into_response()
}
