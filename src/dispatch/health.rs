//! Per-model circuit breakers and latency moving averages, fed by the outcomes of real requests.
//! Keyed by model name, so that they survive reloads that renumber the catalog. The policy reads
//! them through [`HealthView`], which implements the evaluator's `Health`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::catalog::{Catalog, ModelId};

/// Consecutive failures that open a breaker.
pub const FAILURES_TO_OPEN: u32 = 5;
/// How long an open breaker waits before letting one probe through.
pub const COOLDOWN: Duration = Duration::from_secs(30);
/// Weight of a new sample in the moving averages.
const ALPHA: f64 = 0.2;

/// A breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests flow.
    Closed,
    /// Requests are refused until the cooldown ends.
    Open,
    /// One probe may go through.
    HalfOpen,
}

#[derive(Debug)]
struct ModelHealth {
    failures: u32,
    opened_at: Option<Instant>,
    probing: bool,
    ttfb_ms: Option<f64>,
}

impl ModelHealth {
    fn new() -> ModelHealth {
        ModelHealth { failures: 0, opened_at: None, probing: false, ttfb_ms: None }
    }

    fn state(&self, now: Instant, cooldown: Duration) -> BreakerState {
        match self.opened_at {
            None => BreakerState::Closed,
            Some(t) if now.duration_since(t) >= cooldown => BreakerState::HalfOpen,
            Some(_) => BreakerState::Open,
        }
    }
}

/// Health of every model.
#[derive(Debug)]
pub struct Registry {
    models: Mutex<HashMap<String, ModelHealth>>,
    cooldown: Duration,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new(COOLDOWN)
    }
}

impl Registry {
    /// A registry whose breakers wait `cooldown` before probing.
    pub fn new(cooldown: Duration) -> Registry {
        Registry { models: Mutex::new(HashMap::new()), cooldown }
    }

    fn with<T>(&self, model: &str, f: impl FnOnce(&mut ModelHealth, Instant, Duration) -> T) -> T {
        let mut map = self.models.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(h) = map.get_mut(model) {
            return f(h, Instant::now(), self.cooldown);
        }
        // The name is copied only the first time the model is seen.
        let h = map.entry(model.to_string()).or_insert_with(ModelHealth::new);
        f(h, Instant::now(), self.cooldown)
    }

    /// The breaker's state.
    pub fn state(&self, model: &str) -> BreakerState {
        self.with(model, |h, now, cd| h.state(now, cd))
    }

    /// Whether a request may go to the model now. A half-open breaker counts as healthy for its
    /// one probe.
    pub fn healthy(&self, model: &str) -> bool {
        self.with(model, |h, now, cd| match h.state(now, cd) {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen => !h.probing,
        })
    }

    /// Claims the right to call the model: always when closed, once when half-open.
    pub fn admit(&self, model: &str) -> bool {
        self.with(model, |h, now, cd| match h.state(now, cd) {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen => {
                if h.probing {
                    false
                } else {
                    h.probing = true;
                    true
                }
            }
        })
    }

    /// Records a success with its time to first byte.
    pub fn success(&self, model: &str, ttfb: Duration) {
        self.with(model, |h, _, _| {
            h.failures = 0;
            h.opened_at = None;
            h.probing = false;
            let new = ttfb.as_secs_f64() * 1e3;
            h.ttfb_ms = Some(h.ttfb_ms.map_or(new, |o| o + ALPHA * (new - o)));
        });
    }

    /// Records a failure that counts against the breaker.
    pub fn failure(&self, model: &str) {
        self.with(model, |h, now, cd| {
            h.failures += 1;
            let half_open = h.state(now, cd) == BreakerState::HalfOpen;
            if half_open || h.failures >= FAILURES_TO_OPEN {
                h.opened_at = Some(now);
            }
            h.probing = false;
        });
    }

    /// Releases a half-open probe that ended without a verdict (a client error or disconnect).
    pub fn release(&self, model: &str) {
        self.with(model, |h, _, _| h.probing = false);
    }

    /// Moving average of time to first byte, in ms.
    pub fn latency_ms(&self, model: &str) -> Option<f64> {
        self.with(model, |h, _, _| h.ttfb_ms)
    }

    /// Every model's breaker state (for metrics).
    pub fn states(&self) -> Vec<(String, BreakerState)> {
        let map = self.models.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        map.iter().map(|(k, h)| (k.clone(), h.state(now, self.cooldown))).collect()
    }
}

/// The registry seen through a catalog, as the evaluator wants it.
pub struct HealthView<'a> {
    /// The registry.
    pub registry: &'a Registry,
    /// The catalog that numbers the models.
    pub catalog: &'a Catalog,
}

impl crate::policy::eval::Health for HealthView<'_> {
    fn healthy(&self, m: ModelId) -> bool {
        self.catalog.get(m).is_none_or(|m| self.registry.healthy(&m.name))
    }
    fn latency_ms(&self, m: ModelId) -> Option<f64> {
        self.catalog.get(m).and_then(|m| self.registry.latency_ms(&m.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_five_failures_and_probes_once() {
        let r = Registry::new(Duration::from_millis(30));
        for _ in 0..4 {
            r.failure("m");
        }
        assert!(r.healthy("m"));
        r.failure("m");
        assert_eq!(r.state("m"), BreakerState::Open);
        assert!(!r.healthy("m") && !r.admit("m"));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(r.state("m"), BreakerState::HalfOpen);
        assert!(r.admit("m"));
        assert!(!r.admit("m"), "only one probe");
        r.failure("m");
        assert_eq!(r.state("m"), BreakerState::Open, "a failed probe opens again");
        std::thread::sleep(Duration::from_millis(40));
        assert!(r.admit("m"));
        r.success("m", Duration::from_millis(10));
        assert_eq!(r.state("m"), BreakerState::Closed);
        assert_eq!(r.latency_ms("m"), Some(10.0));
        r.success("m", Duration::from_millis(20));
        assert_eq!(r.latency_ms("m"), Some(12.0));
    }
}
