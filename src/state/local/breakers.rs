//! Per-model circuit breakers, fed by the outcomes of real requests: closed, open after
//! [`FAILURES_TO_OPEN`] consecutive failures, half-open after the cooldown, when one probe may go
//! through. Keyed by model name, so that they survive reloads that renumber the catalog.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::state::{Admission, BreakerState};

/// Consecutive failures that open a breaker.
pub const FAILURES_TO_OPEN: u32 = 5;

#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    opened_at: Option<Instant>,
    probing: bool,
}

impl Breaker {
    fn state(&self, now: Instant, cooldown: Duration) -> BreakerState {
        match self.opened_at {
            None => BreakerState::Closed,
            Some(t) if now.duration_since(t) >= cooldown => BreakerState::HalfOpen,
            Some(_) => BreakerState::Open,
        }
    }
}

/// Every model's breaker.
#[derive(Debug)]
pub(super) struct Breakers {
    models: Mutex<HashMap<String, Breaker>>,
    cooldown: Duration,
}

impl Breakers {
    /// Breakers that wait `cooldown` before probing.
    pub(super) fn new(cooldown: Duration) -> Breakers {
        Breakers { models: Mutex::new(HashMap::new()), cooldown }
    }

    fn with<T>(&self, model: &str, f: impl FnOnce(&mut Breaker, Instant, Duration) -> T) -> T {
        let mut map = self.models.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(b) = map.get_mut(model) {
            return f(b, Instant::now(), self.cooldown);
        }
        // The name is copied only the first time the model is seen.
        let b = map.entry(model.to_string()).or_default();
        f(b, Instant::now(), self.cooldown)
    }

    pub(super) fn healthy(&self, model: &str) -> bool {
        self.with(model, |b, now, cd| match b.state(now, cd) {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen => !b.probing,
        })
    }

    pub(super) fn admit(&self, model: &str) -> Admission {
        self.with(model, |b, now, cd| match b.state(now, cd) {
            BreakerState::Closed => Admission::Yes,
            BreakerState::Open => Admission::No,
            BreakerState::HalfOpen if b.probing => Admission::No,
            BreakerState::HalfOpen => {
                b.probing = true;
                Admission::Probe
            }
        })
    }

    pub(super) fn success(&self, model: &str) {
        self.with(model, |b, _, _| *b = Breaker::default());
    }

    /// A failure: true when it opened the breaker (it was closed or half-open).
    pub(super) fn failure(&self, model: &str) -> bool {
        self.with(model, |b, now, cd| {
            b.failures += 1;
            let state = b.state(now, cd);
            let opens =
                state == BreakerState::HalfOpen || (state == BreakerState::Closed && b.failures >= FAILURES_TO_OPEN);
            if opens || state == BreakerState::Open {
                b.opened_at = Some(now);
            }
            b.probing = false;
            opens
        })
    }

    /// Opened elsewhere, for `left` more: open here until then, then half-open as usual. A breaker
    /// already open stays as it is.
    pub(super) fn open_for(&self, model: &str, left: Duration) {
        self.with(model, |b, now, cd| {
            if b.state(now, cd) != BreakerState::Open {
                let ago = cd.saturating_sub(left);
                b.opened_at = Some(now.checked_sub(ago).unwrap_or(now));
                b.probing = false;
            }
        });
    }

    pub(super) fn release(&self, model: &str) {
        self.with(model, |b, _, _| b.probing = false);
    }

    pub(super) fn states(&self) -> Vec<(String, BreakerState)> {
        let map = self.models.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        map.iter().map(|(k, b)| (k.clone(), b.state(now, self.cooldown))).collect()
    }
}
