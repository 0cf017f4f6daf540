//! Latency moving averages per model (time to first byte, per instance), and [`HealthView`]: the
//! breakers of the state store and these averages seen through a catalog, as the policy's
//! evaluator reads them (`healthy(m)`, `latency(m)`, `fastest`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::catalog::{Catalog, ModelId};
use crate::state::{StateStore, Store};

/// Weight of a new sample in the moving averages.
const ALPHA: f64 = 0.2;

/// Every model's moving average of time to first byte, in ms. Keyed by model name, so that it
/// survives reloads that renumber the catalog.
#[derive(Debug, Default)]
pub struct Latencies {
    ttfb_ms: Mutex<HashMap<String, f64>>,
}

impl Latencies {
    /// Adds a sample.
    pub fn record(&self, model: &str, ttfb: Duration) {
        let new = ttfb.as_secs_f64() * 1e3;
        let mut m = self.ttfb_ms.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match m.get_mut(model) {
            Some(avg) => *avg += ALPHA * (new - *avg),
            // The name is copied only the first time the model is seen.
            None => {
                m.insert(model.to_string(), new);
            }
        }
    }

    /// The moving average, in ms; `None` without samples.
    pub fn ms(&self, model: &str) -> Option<f64> {
        self.ttfb_ms.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(model).copied()
    }
}

/// Breakers and latencies seen through a catalog, as the evaluator wants them.
pub struct HealthView<'a> {
    /// The state store (breakers).
    pub state: &'a Store,
    /// The latencies.
    pub latency: &'a Latencies,
    /// The catalog that numbers the models.
    pub catalog: &'a Catalog,
}

impl crate::policy::eval::Health for HealthView<'_> {
    fn healthy(&self, m: ModelId) -> bool {
        self.catalog.get(m).is_none_or(|m| self.state.healthy(&m.name))
    }
    fn latency_ms(&self, m: ModelId) -> Option<f64> {
        self.catalog.get(m).and_then(|m| self.latency.ms(&m.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_is_a_moving_average() {
        let l = Latencies::default();
        assert_eq!(l.ms("m"), None);
        l.record("m", Duration::from_millis(10));
        assert_eq!(l.ms("m"), Some(10.0));
        l.record("m", Duration::from_millis(20));
        assert_eq!(l.ms("m"), Some(12.0));
    }
}
